"""Hook tokens, hook rows and payload validation.

A token is ``<run_id>:<hook_id>:<secret>``: the run and hook say where the payload goes, the
random secret makes it unguessable. Payloads are validated against the hook's pydantic schema
before anything is recorded. Payload schemas are found by import path, or in this process's
registry of schemas seen by hook calls (for classes that cannot be imported by path).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ValidationError

from pyworkflow.core.exceptions import HookPayloadError, InvalidTokenError
from pyworkflow.engine.events import Event
from pyworkflow.engine.instance import Command
from pyworkflow.serialization import dumps
from pyworkflow.storage.schemas import Hook

_schemas: dict[str, type[BaseModel]] = {}


def schema_path(schema: type[BaseModel]) -> str:
    path = f"{schema.__module__}:{schema.__qualname__}"
    _schemas[path] = schema
    return path


def _load_schema(path: str) -> type[BaseModel]:
    known = _schemas.get(path)
    if known is not None:
        return known
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        raise HookPayloadError(
            f"cannot load the payload schema {path!r} of this hook; import the module that"
            " defines it before resuming the hook"
        ) from None
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise HookPayloadError(f"{path!r} is not a pydantic model")
    return target


def parse_token(token: Any) -> tuple[str, str]:
    """``(run_id, hook_id)`` of a well-formed token; ``InvalidTokenError`` otherwise."""
    if not isinstance(token, str):
        raise InvalidTokenError(f"a hook token is a string, got {type(token).__name__}")
    run_id, sep1, rest = token.rpartition(":")
    run_id, sep2, hook_id = run_id.rpartition(":")
    if not (sep1 and sep2 and run_id and hook_id and rest):
        raise InvalidTokenError(f"malformed hook token {token[:40]!r}")
    return run_id, hook_id


def build_hook(run_id: str, cmd: Command, created: Event, secret: str) -> Hook:
    """The storage row of a hook created by ``cmd`` (recorded by ``created``)."""
    assert cmd.hook_id is not None
    schema = cmd.payload_schema
    return Hook(
        hook_id=cmd.hook_id,
        run_id=run_id,
        name=cmd.name,
        token=f"{run_id}:{cmd.hook_id}:{secret}",
        command_id=cmd.command_id,
        created_at=created.timestamp,
        expires_at=cmd.wake_at,
        schema_path=schema_path(schema) if schema is not None else None,
    )


def validate_payload(hook: Hook, payload: Any) -> str:
    """Validate ``payload`` against the hook's schema and serialize it (JSON text)."""
    if hook.schema_path is not None:
        schema = _load_schema(hook.schema_path)
        try:
            model = payload if isinstance(payload, schema) else schema.model_validate(payload)
        except ValidationError as exc:
            raise HookPayloadError(
                f"payload for hook {hook.name!r} does not match {schema.__name__}: {exc}"
            ) from None
        payload = model.model_dump(mode="json")
    return dumps(payload, what=f"the payload of hook {hook.name!r}")


__all__ = ["build_hook", "parse_token", "schema_path", "validate_payload"]
