"""Hook tokens at rest: storage keeps a digest, never the token; the deployment's hook key makes
the same token again (for ``on_created`` after a crash, for operators), and a process with
another key never hands out a token that would not be accepted."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pyworkflow import (
    ConfigurationError,
    HookNotFoundError,
    InvalidTokenError,
    RunStatus,
    configure,
    get_hook_token,
    get_workflow_result,
    hook,
    resume_hook,
    workflow,
)
from pyworkflow.config import configured_hook_key
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.activation import HOOK_KEY_RETRY, Engine
from pyworkflow.engine.hooks import HOOK_KEY_NAME, make_token, token_digest
from pyworkflow.engine.options import EngineOptions
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.schemas import Commit, Hook
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import Env, ManualClock

announced: list[str] = []
KEY = "k" * 32


@workflow(name="token_flow")
async def token_flow() -> object:
    return await hook("approval", on_created=announced.append)


@pytest.fixture(autouse=True)
def _clear() -> None:
    announced.clear()


async def test_storage_keeps_the_digest_and_the_token_still_answers(env: Env) -> None:
    run_id = await env.start(token_flow)
    await env.settle()
    [token] = announced
    [stored] = await env.storage.list_hooks(run_id)
    assert stored.token is None  # storage does not give the token back: it does not hold it
    assert stored.token_hash == token_digest(token) and token not in stored.token_hash
    run_part, hook_id, secret = token.split(":")
    assert (run_part, hook_id) == (run_id, stored.hook_id) and len(secret) == 32
    # Whoever read the row cannot answer with what it holds.
    with pytest.raises(InvalidTokenError):
        digest = stored.token_hash.removeprefix("sha256:")
        await resume_hook(f"{run_id}:{hook_id}:{digest}", 1, storage=env.storage)
    tampered = secret[:-1] + ("y" if secret.endswith("x") else "x")  # one character changed
    with pytest.raises(InvalidTokenError):
        await resume_hook(f"{run_id}:{hook_id}:{tampered}", 1, storage=env.storage)
    assert await get_hook_token(run_id, hook_id, storage=env.storage) == token
    await resume_hook(token, {"ok": True}, storage=env.storage)
    await env.settle()
    assert await get_workflow_result(run_id, storage=env.storage) == {"ok": True}


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_no_token_is_written_to_disk(kind: str, tmp_path: Path) -> None:
    """The files of the embedded backends hold the digest only (nor the key, when configured)."""
    configure(hook_key=KEY)
    storage = (
        FileStorageBackend(tmp_path / "data")
        if kind == "file"
        else SQLiteStorageBackend(tmp_path / "data" / "pyworkflow.db")
    )
    run_id = await _start_and_settle(storage)
    [token] = announced
    secret = token.rsplit(":", 1)[1]
    await storage.close()
    written = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert token_digest(token).encode() in written
    assert secret.encode() not in written and KEY.encode() not in written
    assert run_id.encode() in written  # (the scan does read what was stored)


async def _start_and_settle(storage: object) -> str:
    from pyworkflow.api import start
    from pyworkflow.runtime.local import LocalRuntime

    runtime = LocalRuntime()
    run_id = await start(token_flow, runtime=runtime, storage=storage)  # type: ignore[arg-type]
    await runtime.drain(storage)  # type: ignore[arg-type]
    await runtime.shutdown()
    return run_id


async def test_the_configured_key_makes_the_token(env: Env) -> None:
    configure(hook_key=KEY)
    env.runtime._engines.clear()  # engines read the key when they are made
    run_id = await env.start(token_flow)
    await env.settle()
    [stored] = await env.storage.list_hooks(run_id)
    assert announced == [make_token(KEY.encode(), run_id, stored.hook_id)]
    # No key of the storage's own was made: the deployment's is the only one.
    assert await env.storage.get_checkpoint("pyworkflow:secrets", HOOK_KEY_NAME) is None


async def test_without_a_configured_key_every_engine_uses_the_one_the_storage_keeps(
    env: Env,
) -> None:
    run_id = await env.start(token_flow)
    await env.settle()
    kept = await env.storage.get_checkpoint("pyworkflow:secrets", HOOK_KEY_NAME)
    assert kept is not None and len(kept) >= 32
    [stored] = await env.storage.list_hooks(run_id)
    other = Engine(env.storage, env.clock, env.engine.queue)  # another process, same storage
    assert await other.token_of(stored) == announced[0]
    assert make_token(kept.encode(), run_id, stored.hook_id) == announced[0]


async def test_a_process_with_another_key_never_announces_a_token_that_would_be_refused(
    env: Env,
) -> None:
    """A crash between recording the hook and on_created; the run comes back to a process
    configured with a different key: it logs the mismatch instead of announcing a token the
    hook would refuse, and a process with the right key announces the right one."""
    from loguru import logger

    clock = ManualClock()
    first = Engine(env.storage, clock, _Queue(), options=EngineOptions(hook_key=b"a" * 32))
    crash = {"on": True}

    def die_once(token: str) -> None:
        if crash["on"]:
            crash["on"] = False
            raise SystemExit("worker died inside on_created")
        announced.append(token)

    @workflow(name="token_flow_crash")
    async def crashing() -> object:
        return await hook("approval", on_created=die_once)

    run, _ = await first.start_run(workflow_definition_of(crashing), (), {})
    with pytest.raises(SystemExit):
        await first.advance(run.run_id)
    assert (await env.storage.get_run(run.run_id)).status is RunStatus.SUSPENDED
    clock.advance(first.options.lease_ttl.total_seconds() + 1)

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="ERROR")
    logger.enable("pyworkflow")
    try:
        stranger = Engine(env.storage, clock, _Queue(), options=EngineOptions(hook_key=b"b" * 32))
        await stranger.advance(run.run_id)
    finally:
        logger.remove(sink)
        logger.disable("pyworkflow")
    assert announced == [] and any("hook key" in line for line in lines)
    [stored] = await env.storage.list_hooks(run.run_id)
    assert await stranger.token_of(stored) is None

    # It is asked again in five minutes, not every lease_ttl (and not never).
    timer = await env.storage.get_timer(run.run_id)
    assert timer is not None and timer.fire_at == clock.now() + HOOK_KEY_RETRY
    right = Engine(env.storage, clock, _Queue(), options=EngineOptions(hook_key=b"a" * 32))
    await right.advance(run.run_id)
    assert announced == [make_token(b"a" * 32, run.run_id, stored.hook_id)]
    assert stored.token_hash == token_digest(announced[0])


class _Queue:
    async def enqueue_activation(self, run_id: str) -> None:
        del run_id

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        del run_id, step_id, attempt


async def test_get_hook_token_errors(env: Env) -> None:
    run_id = await env.start(token_flow)
    await env.settle()
    [stored] = await env.storage.list_hooks(run_id)
    with pytest.raises(HookNotFoundError):
        await get_hook_token(run_id, "hook-99", storage=env.storage)
    configure(hook_key=KEY)  # not the key the storage kept, which made this hook
    env.runtime._engines.clear()
    with pytest.raises(InvalidTokenError, match="hook key"):
        await get_hook_token(run_id, stored.hook_id, storage=env.storage)


async def test_a_hook_stored_before_tokens_were_hashed_still_answers(env: Env) -> None:
    """Rows written by earlier versions hold the token itself: it is read back as the token
    and compared as before."""
    run_id = await env.start(token_flow)
    await env.settle()
    [current] = await env.storage.list_hooks(run_id)
    legacy = f"{run_id}:old-hook:an-old-random-secret"
    old = Hook(
        hook_id="old-hook",
        run_id=run_id,
        name="approval",
        token_hash=legacy,
        command_id=current.command_id + "-old",
        created_at=current.created_at,
    )
    now = env.clock.now()
    marker = Event(run_id, EventType.HOOK_ANNOUNCED, {"command_id": "x", "hook_id": "old-hook"})
    marker.timestamp = now
    await env.storage.commit(Commit(run_id, [marker], now=now, hooks_created=[old]))
    [read] = [h for h in await env.storage.list_hooks(run_id) if h.hook_id == "old-hook"]
    assert read.token == legacy
    assert await get_hook_token(run_id, "old-hook", storage=env.storage) == legacy
    with pytest.raises(InvalidTokenError):
        await resume_hook(legacy + "x", 1, storage=env.storage)


async def test_keep_secret_keeps_the_first_one() -> None:
    storage = InMemoryStorageBackend()
    kept = await asyncio.gather(*(storage.keep_secret("k", f"candidate-{i}") for i in range(5)))
    assert len(set(kept)) == 1
    assert await storage.keep_secret("k", "later") == kept[0]


def test_hook_key_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured_hook_key() is None
    monkeypatch.setenv("PYWORKFLOW_HOOK_KEY", "e" * 20)
    assert configured_hook_key() == b"e" * 20
    configure(hook_key=KEY)  # explicit configuration wins
    assert configured_hook_key() == KEY.encode()
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        configure(hook_key="short")
    monkeypatch.setenv("PYWORKFLOW_HOOK_KEY", "short")
    configure(hook_key=None)
    with pytest.raises(ConfigurationError, match="PYWORKFLOW_HOOK_KEY"):
        configured_hook_key()


def test_sqlite_rows_hold_digests(tmp_path: Path) -> None:
    """(What an attacker reading the database sees.)"""

    async def go() -> None:
        storage = SQLiteStorageBackend(tmp_path / "db.sqlite")
        await _start_and_settle(storage)
        await storage.close()

    asyncio.run(go())
    rows = sqlite3.connect(tmp_path / "db.sqlite").execute("SELECT token FROM hooks").fetchall()
    assert rows == [(token_digest(announced[0]),)]


async def test_telling_a_token_never_writes_a_key(env: Env) -> None:
    """A reader (get_hook_token, the CLI) in a process without the deployment's key must not
    leave a storage-kept key behind, which later processes would silently start using."""
    configure(hook_key=KEY)
    env.runtime._engines.clear()
    run_id = await env.start(token_flow)
    await env.settle()
    [stored] = await env.storage.list_hooks(run_id)
    configure(hook_key=None)
    env.runtime._engines.clear()
    with pytest.raises(InvalidTokenError, match="hook key"):
        await get_hook_token(run_id, stored.hook_id, storage=env.storage)
    assert await env.storage.get_checkpoint("pyworkflow:secrets", HOOK_KEY_NAME) is None


async def test_an_engine_without_options_takes_the_key_from_the_environment(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYWORKFLOW_HOOK_KEY", f"  {KEY}\n")  # (as read from a secret file)
    engine = Engine(env.storage, env.clock, _Queue())
    assert await engine.hook_key() == KEY.encode()
    assert await env.storage.get_checkpoint("pyworkflow:secrets", HOOK_KEY_NAME) is None


async def test_run_ids_in_the_reserved_namespace_are_refused(env: Env) -> None:
    with pytest.raises(ValueError, match="reserved"):
        await env.engine.start_run(
            workflow_definition_of(token_flow), (), {}, run_id="pyworkflow:secrets"
        )


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_two_processes_opening_one_storage_keep_one_key(kind: str, tmp_path: Path) -> None:
    """Two backend objects on one folder or database file (two processes' view): whoever comes
    first decides the key, and the other gets it too."""

    def open_one() -> FileStorageBackend | SQLiteStorageBackend:
        if kind == "file":
            return FileStorageBackend(tmp_path / "files")
        return SQLiteStorageBackend(tmp_path / "db.sqlite")

    first, second = open_one(), open_one()
    try:
        got = await asyncio.gather(
            first.keep_secret(HOOK_KEY_NAME, "from-first"),
            second.keep_secret(HOOK_KEY_NAME, "from-second"),
            second.keep_secret(HOOK_KEY_NAME, "second-again"),
            first.keep_secret(HOOK_KEY_NAME, "first-again"),
        )
        assert len(set(got)) == 1 and got[0] in ("from-first", "from-second")
    finally:
        await first.close()
        await second.close()
