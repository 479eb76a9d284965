"""Storage configuration: a backend from a config dict or URL, and the dict back from a backend.

This is the one place that picks a storage implementation by name. A config is a dict with a
``type`` (``memory``, ``file``, ``sqlite``, ``postgres`` or ``redis``) and that backend's settings
(``base_path``/``path``, ``db_path``/``path``, ``dsn`` or ``host``/``port``/``user``/``password``/
``database``, ``url``; Redis also takes a key ``prefix``), or just a ``url``:

    memory://                          in-process memory
    file://pyworkflow_data             JSON files under a directory (``file:///abs/dir``)
    sqlite:///relative/path.db         SQLite; four slashes for an absolute path
    postgresql://user:pw@host/db       PostgreSQL (needs the ``postgres`` extra)
    redis://host:6379/0                Redis (needs the ``redis`` extra)
    sentinel://h1:26379,h2:26379/mymaster/0
                                       Redis, the master Redis Sentinel names (``redis`` extra;
                                       the form: ``pyworkflow.utils.sentinel``)

The PostgreSQL and Redis backends are imported only when asked for, so their client libraries
stay optional. Errors are ``ConfigurationError`` and never show a password.
This module must never import the engine or a runtime, or connect to anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from pyworkflow.utils.sentinel import parse_sentinel_url
from pyworkflow.utils.urls import shown_url

DEFAULT_FILE_PATH = "./pyworkflow_data"
DEFAULT_SQLITE_PATH = "./pyworkflow_data/pyworkflow.db"

_TYPE_ALIASES = {
    "memory": "memory",
    "file": "file",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "redis": "redis",
}
_URL_SCHEMES = {
    "memory": "memory",
    "file": "file",
    "sqlite": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
}
_POSTGRES_SETTINGS = (
    "host",
    "port",
    "user",
    "password",
    "database",
    "schema",
    "pgbouncer",
    "min_size",
    "max_size",
)


# The settings each kind takes besides ``type`` and ``url`` (anything else is an error: a setting
# silently ignored would send data where the user did not mean it to go).
_KNOWN_SETTINGS: dict[str, frozenset[str]] = {
    "memory": frozenset(),
    "file": frozenset({"base_path", "path"}),
    "sqlite": frozenset({"db_path", "path", "base_path"}),
    "postgres": frozenset({*_POSTGRES_SETTINGS, "dsn"}),
    "redis": frozenset({"prefix", "redis_url", "host", "port", "password", "db", "database"}),
}


def config_to_storage(config: dict[str, Any]) -> StorageBackend:
    """Build the backend a config dict describes (see the module docstring)."""
    settings = dict(config)
    url = settings.pop("url", None)
    kind = settings.pop("type", None)
    if kind is not None:
        kind = _TYPE_ALIASES.get(str(kind).lower())
        if kind is None:
            raise ConfigurationError(
                f"unknown storage type {config['type']!r}; expected one of"
                " memory, file, sqlite, postgres, redis"
            )
    if url is not None:
        url_kind, from_url = _parse_url(str(url))
        if kind is not None and kind != url_kind:
            raise ConfigurationError(
                f"storage type {config['type']!r} does not match the URL {shown_url(str(url))}"
            )
        kind, settings = url_kind, {**from_url, **settings}
    if kind is None:
        raise ConfigurationError("a storage config needs a 'type' or a 'url'")
    unknown = sorted(set(settings) - _KNOWN_SETTINGS[kind])
    if unknown:
        known = ", ".join(sorted(_KNOWN_SETTINGS[kind])) or "none"
        raise ConfigurationError(
            f"unknown {kind} storage setting(s) {', '.join(map(repr, unknown))}"
            f" (known: {known}, type, url)"
        )
    return _BUILDERS[kind](settings)


def storage_to_config(backend: StorageBackend) -> dict[str, Any]:
    """The config dict that ``config_to_storage`` turns back into an equivalent backend."""
    return dict(backend.to_config())


# -- builders -----------------------------------------------------------------------------------


def _memory(_settings: dict[str, Any]) -> StorageBackend:
    return InMemoryStorageBackend()


def _file(settings: dict[str, Any]) -> StorageBackend:
    return FileStorageBackend(
        settings.get("base_path") or settings.get("path") or DEFAULT_FILE_PATH
    )


def _sqlite(settings: dict[str, Any]) -> StorageBackend:
    path = settings.get("db_path") or settings.get("path")
    if not path and settings.get("base_path"):  # pyworkflow-engine 0.4's key: a folder
        base = str(settings["base_path"])
        path = base if base.endswith(_SQLITE_SUFFIXES) else f"{base.rstrip('/')}/pyworkflow.db"
    return SQLiteStorageBackend(path or DEFAULT_SQLITE_PATH)


_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _postgres(settings: dict[str, Any]) -> StorageBackend:
    backend = _optional_backend(
        "pyworkflow.storage.postgres",
        "PostgresStorageBackend",
        "PostgreSQL storage needs the 'postgres' extra: pip install 'pyworkflow-engine[postgres]'",
    )
    options = {name: settings[name] for name in _POSTGRES_SETTINGS if name in settings}
    if "port" in options:
        options["port"] = _port(options["port"])
    for name in ("min_size", "max_size"):
        if name in options:
            options[name] = _integer(name, options[name])
    if "pgbouncer" in options:
        options["pgbouncer"] = str(options["pgbouncer"]).lower() in ("1", "true", "yes", "on")
    if settings.get("dsn"):
        options["dsn"] = settings["dsn"]
    return backend(**options)


def _redis(settings: dict[str, Any]) -> StorageBackend:
    backend = _optional_backend(
        "pyworkflow.storage.redis",
        "RedisStorageBackend",
        "Redis storage needs the 'redis' extra: pip install 'pyworkflow-engine[redis]'",
    )
    options = {"prefix": str(settings["prefix"])} if settings.get("prefix") else {}
    if "redis_url" in settings:
        return backend(url=settings["redis_url"], **options)
    if "host" not in settings:
        return backend(**options)
    password = f":{settings['password']}@" if settings.get("password") else ""
    port = _port(settings.get("port", 6379))
    database = settings.get("db", settings.get("database", 0))
    return backend(url=f"redis://{password}{settings['host']}:{port}/{database}", **options)


_BUILDERS = {
    "memory": _memory,
    "file": _file,
    "sqlite": _sqlite,
    "postgres": _postgres,
    "redis": _redis,
}


def _optional_backend(module: str, name: str, missing: str) -> Callable[..., StorageBackend]:
    try:
        backend: Callable[..., StorageBackend] = getattr(importlib.import_module(module), name)
        return backend
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{missing} ({exc})") from None


def _port(value: Any) -> int:
    return _integer("port", value)


def _integer(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"storage {name} must be a number, got {value!r}") from None


# -- URLs ---------------------------------------------------------------------------------------


def _parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """The backend type and settings a storage URL names."""
    scheme, separator, rest = url.partition("://")
    kind = _URL_SCHEMES.get(scheme.lower()) if separator else None
    if kind is None:
        raise ConfigurationError(
            f"malformed storage URL {shown_url(url)}: expected memory://, file://, sqlite:///,"
            " postgresql://, redis:// or sentinel://"
        )
    if kind == "memory":
        return kind, {}
    if kind == "file":
        return kind, {"base_path": rest or DEFAULT_FILE_PATH}
    if kind == "sqlite":
        if rest and not rest.startswith("/"):
            raise ConfigurationError(
                f"malformed SQLite URL {shown_url(url)}: use sqlite:///relative/path.db"
                " or sqlite:////absolute/path.db"
            )
        return kind, {"db_path": rest[1:] or ":memory:"}
    if scheme.lower() == "sentinel":
        parse_sentinel_url(url)  # (several hosts: urlsplit cannot check this one)
        return kind, {"redis_url": url}
    parts = _split(url)
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise ConfigurationError(f"malformed storage URL {shown_url(url)}: bad port") from None
    if kind == "postgres":
        return kind, {"dsn": url}
    return kind, {"redis_url": url}


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:
        raise ConfigurationError(f"malformed storage URL {shown_url(url)}") from None


__all__ = ["DEFAULT_FILE_PATH", "DEFAULT_SQLITE_PATH", "config_to_storage", "storage_to_config"]
