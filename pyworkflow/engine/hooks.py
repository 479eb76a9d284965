"""Hooks from outside the workflow: tokens, hook rows, payload validation, receipts.

A token is ``<run_id>:<hook_id>:<secret>``: the run and hook say where the payload goes, the
secret makes it unguessable. The secret is ``HMAC-SHA256(hook key, "<run_id>:<hook_id>")``
(``hook_secret``): storage keeps only the token's SHA-256 digest (``token_digest``), compared in
constant time, so whoever reads storage cannot answer a hook, and a process that holds the key can
still tell a hook's token again (``on_created`` is at least once: after a crash the replaying
activation re-announces the same token). The key is the deployment's (``configure(hook_key=...)``
or ``PYWORKFLOW_HOOK_KEY``), else one the storage keeps (``StorageBackend.keep_secret``, created
once). Rows written before tokens were hashed hold the token itself and keep working.

Payloads are validated against the hook's pydantic schema before anything is recorded. Payload
schemas are found by import path, or in this process's registry of schemas seen by hook calls (for
classes that cannot be imported by path). ``HookDelivery`` hands a new hook's token to
``on_created`` (at least once: ``_announce``) and records a payload (exactly one per hook:
``receive_hook``); it never runs workflow code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import os
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loguru import logger
from pydantic import BaseModel, ValidationError

from pyworkflow.engine.instance import Command, WorkflowInstance
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.ports import Clock, IdSource, TaskQueue
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    ConfigurationError,
    DuplicateCompletionError,
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    HookPayloadError,
    InvalidTokenError,
    RunFinishedError,
)
from pyworkflow.model.schemas import (
    TOKEN_HASH_PREFIX,
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    _Unset,
)
from pyworkflow.observability.logging import lifecycle
from pyworkflow.primitives.hooks import call_on_created
from pyworkflow.serialization import dumps
from pyworkflow.storage.base import SECRETS_RUN, StorageBackend

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


# The name under which a storage keeps the hook key of deployments that configure none.
HOOK_KEY_NAME = "hook-key"


def hook_secret(key: bytes, run_id: str, hook_id: str) -> str:
    """The secret part of the token of hook ``hook_id`` of run ``run_id`` (192 bits)."""
    mac = hmac.new(key, f"{run_id}:{hook_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode()


def make_token(key: bytes, run_id: str, hook_id: str) -> str:
    return f"{run_id}:{hook_id}:{hook_secret(key, run_id, hook_id)}"


def token_digest(token: str) -> str:
    """What storage keeps of a token (its secret carries 192 bits: no salt needed)."""
    return TOKEN_HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def token_matches(hook: Hook, token: str) -> bool:
    """Whether ``token`` is ``hook``'s, compared in constant time."""
    stored = hook.token_hash
    if stored.startswith(TOKEN_HASH_PREFIX):
        return hmac.compare_digest(stored.encode(), token_digest(token).encode())
    return hmac.compare_digest(stored.encode(), token.encode())  # a row from before hashing


def new_hook_key() -> str:
    return secrets.token_urlsafe(32)


MIN_HOOK_KEY_LENGTH = 16


def checked_hook_key(value: str | bytes, where: str) -> bytes:
    """A configured hook key as bytes (surrounding whitespace, a newline read from a secret
    file, dropped); ``ConfigurationError`` when it is too short to be a key."""
    key = (value.encode() if isinstance(value, str) else bytes(value)).strip()
    if len(key) < MIN_HOOK_KEY_LENGTH:
        raise ConfigurationError(
            f"{where} must be at least {MIN_HOOK_KEY_LENGTH} characters (a random one:"
            " python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def env_hook_key() -> bytes | None:
    """``PYWORKFLOW_HOOK_KEY``, checked; None when unset."""
    value = os.environ.get("PYWORKFLOW_HOOK_KEY")
    return checked_hook_key(value, "PYWORKFLOW_HOOK_KEY") if value else None


def build_hook(run_id: str, cmd: Command, created: Event, key: bytes) -> tuple[Hook, str]:
    """The storage row of a hook created by ``cmd`` (recorded by ``created``), and its token."""
    assert cmd.hook_id is not None
    schema = cmd.payload_schema
    token = make_token(key, run_id, cmd.hook_id)
    hook = Hook(
        hook_id=cmd.hook_id,
        run_id=run_id,
        name=cmd.name,
        token_hash=token_digest(token),
        command_id=cmd.command_id,
        created_at=created.timestamp,
        expires_at=cmd.wake_at,
        schema_path=schema_path(schema) if schema is not None else None,
    )
    return hook, token


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


class HookDelivery:
    """The hook part of ``Engine`` (a mixin: the engine provides the attributes): handing a new
    hook's token out (``on_created``, at least once) and taking its payload in (exactly once)."""

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue
    ids: IdSource
    options: EngineOptions
    hook_listener: Callable[[str, str, str], None] | None
    _hook_key: bytes | None

    async def hook_key(self, *, create: bool = True) -> bytes | None:
        """The key hook secrets derive from: the configured one (``EngineOptions.hook_key``,
        else ``PYWORKFLOW_HOOK_KEY``), else the one the storage keeps, made by the first hook
        of the deployment (``create``; a reader passes False and gets None when there is
        none: telling a token never writes)."""
        key = self._hook_key
        if key is None:
            key = self.options.hook_key or env_hook_key()
            if key is None:
                stored = (
                    await self.storage.keep_secret(HOOK_KEY_NAME, new_hook_key())
                    if create
                    else await self.storage.get_checkpoint(SECRETS_RUN, HOOK_KEY_NAME)
                )
                if stored is None:
                    return None
                key = stored.encode()
            self._hook_key = key
        return key

    async def token_of(self, hook: Hook) -> str | None:
        """``hook``'s token, or None when this process's hook key does not make it (a key
        configured differently from the one that created the hook). Never writes."""
        if hook.token is not None:
            return hook.token
        key = await self.hook_key(create=False)
        if key is None:
            return None
        token = make_token(key, hook.run_id, hook.hook_id)
        return token if token_matches(hook, token) else None

    if TYPE_CHECKING:

        def _emit(
            self, inst: WorkflowInstance, event_type: EventType, data: dict[str, Any]
        ) -> None: ...

    def _lets_go_unannounced(
        self,
        inst: WorkflowInstance,
        status: RunStatus | None,
        lease: tuple[str, datetime] | None | _Unset,
        completed: bool,
    ) -> bool:
        """Whether a commit lets go of the run while a hook still waits for its ``on_created``
        call (see ``_announce``). A commit that keeps the run leased to this activation needs
        no guard: its lease brings the run back."""
        if completed or not inst.unannounced():
            return False
        if status is None:
            return False  # the commit takes the run, or keeps it (see _commit)
        owner = inst.lease_owner if isinstance(lease, _Unset) else lease and lease[0]
        return status is not RunStatus.RUNNING or owner != self.options.owner

    async def _announce(self, inst: WorkflowInstance) -> int:
        """Call ``on_created(token)`` of the hooks waiting for it; buffer ``hook.announced``.

        Called after a commit that made the hook durable. Until ``hook.announced`` is committed,
        either this activation's lease or a timer due within ``lease_ttl`` (see ``_commit``)
        brings the run back should the process die, and the activation that replays it calls
        ``on_created`` again: at least once, always with the same token (made again from the
        hook key and checked against the stored digest). A callback that raises is logged and
        not called again (the token stays available: ``get_hook_token``).

        Returns how many hooks it could not announce (this process's hook key did not make
        them: logged, left for a process whose key does).
        """
        stuck = 0
        for cmd in inst.unannounced():
            assert cmd.hook_id is not None
            token = inst.hook_tokens.get(cmd.position)
            if token is None:  # created by an earlier activation
                hook = await self.storage.get_hook(inst.run_id, cmd.hook_id)
                if hook is None or hook.status is not HookStatus.PENDING:
                    continue  # resolved meanwhile: the next replay resolves it
                known = await self.token_of(hook)
                if known is None:
                    # Never hand out a token that would not be accepted; a process whose key
                    # makes it announces it (this run's next activation, on such a process).
                    logger.bind(run_id=inst.run_id).error(
                        "cannot tell the token of hook {} again: this process's hook key is not"
                        " the one that created it (configure the same hook_key everywhere)",
                        cmd.name,
                    )
                    stuck += 1
                    continue
                token = known
            if self.hook_listener is not None:
                self.hook_listener(inst.run_id, cmd.hook_id, token)
            try:
                await call_on_created(cmd.on_created, token)
            except Exception:  # noqa: BLE001 - a callback must not break the run
                logger.bind(run_id=inst.run_id).exception("on_created of hook {} failed", cmd.name)
            self._emit(
                inst,
                EventType.HOOK_ANNOUNCED,
                {"command_id": cmd.command_id, "hook_id": cmd.hook_id},
            )
        return stuck

    async def _hooks_created(
        self, inst: WorkflowInstance, created: list[Event]
    ) -> list[tuple[Hook, str, Command]]:
        """The rows (and tokens) of the hooks that ``hook.created`` events ``created`` record."""
        key = await self.hook_key()
        assert key is not None  # (create=True always gives one)
        hooks = []
        for event in created:
            cmd = inst.command(event.data["command_id"])
            hook, token = build_hook(inst.run_id, cmd, event, key)
            hooks.append((hook, token, cmd))
        return hooks

    async def receive_hook(self, token: str, payload: Any) -> tuple[str, str]:
        """Record a hook's payload (validated first) and ask for an activation.

        Returns ``(run_id, hook_id)``. Raises ``InvalidTokenError``, ``HookNotFoundError``,
        ``HookAlreadyReceivedError``, ``HookExpiredError`` or ``HookPayloadError``; on any error
        nothing was recorded.
        """
        run_id, hook_id = parse_token(token)
        hook = await self.storage.get_hook(run_id, hook_id)
        if hook is None:
            raise HookNotFoundError(f"no hook {hook_id!r} in run {run_id!r}")
        if not token_matches(hook, token):
            raise InvalidTokenError("the hook token does not match (wrong or tampered secret)")
        now = self.clock.now()
        _check_hook_open(hook, now)
        payload_json = validate_payload(hook, payload)
        event = Event(
            run_id=run_id,
            type=EventType.HOOK_RECEIVED,
            data={"command_id": hook.command_id, "hook_id": hook_id, "payload": payload_json},
            timestamp=now,
        )
        try:
            await self.storage.commit(
                Commit(
                    run_id=run_id,
                    events=[event],
                    now=now,
                    # The payload is stored once, in hook.received; the row says "received".
                    hook_received=(hook_id, None),
                    timer=now,  # wakes the run even if the enqueue below is lost
                )
            )
        except RunFinishedError:
            # A concurrent receipt may have won and its activation finished the run first.
            fresh = await self.storage.get_hook(run_id, hook_id)
            if fresh is not None and fresh.status is HookStatus.RECEIVED:
                raise HookAlreadyReceivedError(
                    f"hook {hook.name!r} already has its payload"
                ) from None
            raise HookNotFoundError(f"run {run_id} has already finished") from None
        except DuplicateCompletionError:
            fresh = await self.storage.get_hook(run_id, hook_id)
            _check_hook_open(fresh or hook, now)
            raise HookAlreadyReceivedError(f"hook {hook.name!r} already has its payload") from None
        lifecycle("hook {} ({!r}) received", hook_id, hook.name, run_id=run_id)
        await self.queue.enqueue_activation(run_id)
        return run_id, hook_id


async def fill_payloads(storage: StorageBackend, hooks: list[Hook]) -> list[Hook]:
    """Set ``payload`` of the received ``hooks`` from their ``hook.received`` events: a payload
    is stored once, in the log (rows written before hold a copy)."""
    for hook in hooks:
        if hook.status is HookStatus.RECEIVED and hook.payload is None:
            for event in await storage.get_events(hook.run_id, command_id=hook.command_id):
                if event.type is EventType.HOOK_RECEIVED and event.data.get("hook_id") == (
                    hook.hook_id
                ):
                    hook.payload = event.data.get("payload")
    return hooks


def _check_hook_open(hook: Hook, now: datetime) -> None:
    if hook.status is HookStatus.DISPOSED:
        raise HookNotFoundError(f"hook {hook.name!r} is disposed: its run has ended")
    if hook.status is HookStatus.RECEIVED:
        raise HookAlreadyReceivedError(f"hook {hook.name!r} already has its payload")
    if hook.status is HookStatus.EXPIRED or (
        hook.expires_at is not None and now >= hook.expires_at
    ):
        raise HookExpiredError(f"hook {hook.name!r} expired at {hook.expires_at}")
    if hook.status is not HookStatus.PENDING:
        raise HookNotFoundError(f"hook {hook.name!r} is {hook.status.value}")


__all__ = [
    "HOOK_KEY_NAME",
    "HookDelivery",
    "build_hook",
    "fill_payloads",
    "hook_secret",
    "make_token",
    "parse_token",
    "schema_path",
    "token_digest",
    "token_matches",
    "validate_payload",
]
