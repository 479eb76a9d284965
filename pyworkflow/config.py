"""Process-wide configuration: ``configure``, ``configure_from_yaml``, ``get_config``, ...

Keys keep the names of pyworkflow-engine 0.3/0.4 (``storage``, ``default_durable``,
``default_runtime``, ``module``, ``celery: {broker, result_backend, visibility_timeout}``).
Environment variables (``PYWORKFLOW_STORAGE_TYPE``, ``PYWORKFLOW_STORAGE_PATH``,
``PYWORKFLOW_STORAGE_URL``, ``PYWORKFLOW_RUNTIME``, ``PYWORKFLOW_HOOK_KEY``;
``PYWORKFLOW_CELERY_BROKER`` and ``PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT``, read by
``pyworkflow.celery``) fill what was not configured explicitly. An unknown key or a bad value
is a ``ConfigurationError`` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from pyworkflow.engine.hooks import checked_hook_key, env_hook_key
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.serialization import set_allow_pickle, set_value_limits
from pyworkflow.storage.base import StorageBackend

DEFAULT_SQLITE_PATH = "./pyworkflow_data/pyworkflow.db"


@dataclass(slots=True)
class Config:
    storage: StorageBackend | None = None
    default_durable: bool = True
    default_runtime: str = "local"
    allow_pickle: bool = False  # opt-in: whoever writes storage could run code on workers
    # One recorded value (an argument, a result, a payload) as JSON: warned about past
    # warn_value_size bytes, refused past max_value_size (None: no limit).
    warn_value_size: int | None = 512 * 1024
    max_value_size: int | None = 2 * 1024 * 1024
    event_limit: int = 50_000
    lease_ttl: float = 30.0
    timer_poll_interval: float = 1.0
    dispatch_steps: bool = False
    max_nesting_depth: int = 3  # children nest at most this deep (MaxNestingDepthError)
    # New runs hear timers before later results in logical time (``logical_order`` in their
    # workflow.started). False while workers of a release without that rule still run: they
    # replay every log in log order.
    logical_order: bool = True
    # A child awaited alone (nothing else pending in its parent) runs in its parent's
    # activation, its first write joined to the parent's. False: every child takes the queue
    # (its own message and activation, as before the inline child).
    inline_children: bool = True
    # The key hook tokens derive from (``pyworkflow.engine.hooks``), shared by every process of
    # a deployment; else ``PYWORKFLOW_HOOK_KEY``; else a key the storage keeps.
    hook_key: str | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)


_config = Config()
_explicit: set[str] = set()  # keys set by configure (they win over the environment)
_ALIASES = {"runtime": "default_runtime", "event_hard_limit": "event_limit"}
_PASSTHROUGH = {
    "celery_broker",
    "celery_result_backend",
    "celery_visibility_timeout",
    "log_level",
    "event_soft_limit",
    "module",  # the module(s) defining workflows, imported by the ``pyworkflow`` command
}


# The plain keys' types, checked (and converted: ``"30"`` is 30.0, ``"false"`` is False, as a
# YAML file or an environment variable gives them) by pydantic when they are configured.
_Positive = Annotated[float, Field(gt=0)]
_TYPES: dict[str, Any] = {
    "default_durable": bool,
    "allow_pickle": bool,
    "dispatch_steps": bool,
    "logical_order": bool,
    "inline_children": bool,
    "lease_ttl": _Positive,
    "timer_poll_interval": _Positive,
    "event_limit": Annotated[int, Field(ge=1)],
    "max_nesting_depth": Annotated[int, Field(ge=0)],
    "warn_value_size": int | None,
    "max_value_size": int | None,
}


@cache
def _adapter(key: str) -> TypeAdapter[Any]:
    return TypeAdapter(_TYPES[key])  # (built when first needed: a few ms at import otherwise)


def _checked(key: str, value: Any) -> Any:
    if key not in _TYPES:
        return value
    try:
        return _adapter(key).validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ConfigurationError(
            f"configuration key {key!r}: {reason[0].lower()}{reason[1:]} (given: {value!r})"
        ) from None


def _coerce_storage(value: Any) -> StorageBackend | None:
    if value is None or isinstance(value, StorageBackend):
        return value
    from pyworkflow.storage.config import config_to_storage

    if isinstance(value, str):
        return config_to_storage({"url": value})
    if isinstance(value, dict):
        return config_to_storage(value)
    raise ConfigurationError(
        f"storage must be a StorageBackend, a URL or a dict, got {type(value).__name__}"
    )


def configure(**kwargs: Any) -> None:
    """Set configuration keys; unknown keys raise ``ConfigurationError`` listing valid ones."""
    global _config
    known = {f.name for f in fields(Config)} - {"extra"}
    changes: dict[str, Any] = {}
    extra = dict(_config.extra)
    for key, value in kwargs.items():
        name = _ALIASES.get(key, key)
        if name in _PASSTHROUGH:
            extra[name] = value
            continue
        if name not in known:
            valid = ", ".join(sorted(known | set(_ALIASES) | _PASSTHROUGH))
            raise ConfigurationError(f"unknown configuration key {key!r} (valid keys: {valid})")
        value = _checked(name, value)
        if name == "storage":
            value = _coerce_storage(value)
        elif name == "default_runtime" and value not in ("local", "celery"):
            raise ConfigurationError(f"unknown runtime {value!r} (expected 'local' or 'celery')")
        elif name == "hook_key" and value is not None:
            if not isinstance(value, str | bytes):
                raise ConfigurationError("hook_key must be a string")
            value = checked_hook_key(value, "hook_key").decode(errors="surrogateescape")
        changes[name] = value
    _config = replace(_config, extra=extra, **changes)
    _explicit.update(changes)
    if "allow_pickle" in changes:
        set_allow_pickle(bool(changes["allow_pickle"]))
    if "warn_value_size" in changes or "max_value_size" in changes:
        try:
            set_value_limits(_config.warn_value_size, _config.max_value_size)
        except ValueError as exc:
            raise ConfigurationError(str(exc).replace("_bytes", "_value_size")) from None


def configure_from_yaml(path: str | os.PathLike[str]) -> None:
    """Load ``pyworkflow.config.yaml``-style settings (``runtime``, ``storage: {type, ...}``)."""
    import yaml

    file = Path(path)
    if not file.exists():
        raise ConfigurationError(f"configuration file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{file}: expected a mapping of settings at the top level")
    celery = data.pop("celery", None)
    if isinstance(celery, dict):
        if "broker" in celery:
            data["celery_broker"] = celery["broker"]
        if "result_backend" in celery:
            data["celery_result_backend"] = celery["result_backend"]
        if "visibility_timeout" in celery:
            data["celery_visibility_timeout"] = celery["visibility_timeout"]
    configure(**data)


def get_config() -> Config:
    return _config


def configured_hook_key() -> bytes | None:
    """The deployment's hook key: ``configure(hook_key=...)``, else ``PYWORKFLOW_HOOK_KEY``;
    None when neither is set (engines then use the one their storage keeps)."""
    if _config.hook_key is not None:
        return _config.hook_key.encode(errors="surrogateescape")
    return env_hook_key()


def reset_config() -> None:
    """Back to defaults (tests). Does not close the previously configured storage."""
    global _config
    _config = Config()
    _explicit.clear()
    set_allow_pickle(False)
    set_value_limits(_config.warn_value_size, _config.max_value_size)


def _storage_from_env() -> StorageBackend | None:
    from pyworkflow.storage.config import config_to_storage

    url = os.environ.get("PYWORKFLOW_STORAGE_URL")
    kind = os.environ.get("PYWORKFLOW_STORAGE_TYPE")
    path = os.environ.get("PYWORKFLOW_STORAGE_PATH")
    if url:
        return config_to_storage({"url": url, **({"type": kind} if kind else {})})
    if kind:
        settings: dict[str, Any] = {"type": kind}
        if path and kind.lower() in ("file", "sqlite", "sqlite3"):  # (the others have no path)
            settings["path"] = path
        return config_to_storage(settings)
    return None


def get_storage() -> StorageBackend:
    """The configured storage; by default the embedded SQLite file ``./pyworkflow_data/``."""
    global _config
    if _config.storage is None:
        from pyworkflow.storage.sqlite import SQLiteStorageBackend

        storage = _storage_from_env() or SQLiteStorageBackend(DEFAULT_SQLITE_PATH)
        _config = replace(_config, storage=storage)
    assert _config.storage is not None
    return _config.storage


def runtime_name() -> str:
    """The runtime configured explicitly (``configure``, a config file), else
    ``PYWORKFLOW_RUNTIME``, else ``local``."""
    if "default_runtime" in _explicit:
        return _config.default_runtime
    return os.environ.get("PYWORKFLOW_RUNTIME") or _config.default_runtime


__all__ = [
    "Config",
    "configure",
    "configure_from_yaml",
    "get_config",
    "get_storage",
    "reset_config",
]
