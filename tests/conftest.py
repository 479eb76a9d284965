"""Shared fixtures: a fresh configuration per test, and a runtime on a hand-driven clock."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pyworkflow import api
from pyworkflow.config import reset_config
from pyworkflow.model.schemas import RunStatus
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests import servers


class ManualClock:
    """A clock tests move by hand; starts at a fixed, aware UTC instant."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class Env:
    """A local runtime on a manual clock and in-memory storage, with helpers to drive time."""

    runtime: LocalRuntime
    storage: Any
    clock: ManualClock

    @property
    def engine(self) -> Any:
        return self.runtime.engine_for(self.storage)

    async def start(self, wf: Any, *args: Any, **kwargs: Any) -> str:
        return await api.start(wf, *args, runtime=self.runtime, storage=self.storage, **kwargs)

    async def settle(self) -> None:
        """Let queued activations and step tasks finish."""
        await self.runtime.drain(self.storage)

    async def jump_once(self, run_id: str) -> Any:
        """Let queued work finish, then jump the clock to the run's next timer and fire it.

        Returns the run as it was before the jump (terminal runs are returned untouched).
        """
        await self.settle()
        run = await self.storage.get_run(run_id)
        if run.status.is_terminal:
            return run
        timer = await self.storage.get_timer(run_id)
        if timer is None:
            if run.status is RunStatus.RUNNING:
                await self.runtime.resume(run_id, storage=self.storage)
            return run
        if timer.fire_at > self.clock.now():
            self.clock.current = timer.fire_at
        await self.engine.fire_due_timers()
        return run

    async def run_until_done(self, run_id: str, max_jumps: int = 1000) -> Any:
        """Jump the clock to each next timer and fire it until the run finishes."""
        for _ in range(max_jumps):
            run = await self.jump_once(run_id)
            if run.status.is_terminal:
                return run
        raise AssertionError(f"run {run_id} did not finish after {max_jumps} timer jumps")


@pytest.fixture(autouse=True)
def _fresh_config() -> Iterator[None]:
    reset_config()
    api._runtimes.clear()
    yield
    reset_config()
    api._runtimes.clear()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


# The storage under ``env`` and ``dispatched_env``: memory by default; ``scripts/test`` runs the
# engine's tests again with PYWORKFLOW_TEST_STORAGE=file|sqlite|postgres|redis (real servers).
TEST_STORAGE = os.environ.get("PYWORKFLOW_TEST_STORAGE", "memory")


def namespace_for(path: Path) -> str:
    """A short name unique to one test's ``tmp_path``: a PostgreSQL schema or a Redis prefix."""
    return "t_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]


def make_test_storage(kind: str, request: pytest.FixtureRequest, path: Path) -> StorageBackend:
    if kind == "memory":
        return InMemoryStorageBackend()
    if kind == "sqlite":
        return SQLiteStorageBackend(path / "pyworkflow.db")
    if kind == "file":
        from pyworkflow.storage.file import FileStorageBackend

        return FileStorageBackend(path / "files")
    if kind == "postgres":
        from pyworkflow.storage.postgres import PostgresStorageBackend

        server = request.getfixturevalue("postgres_server")
        return PostgresStorageBackend(server.dsn, schema=namespace_for(path))
    if kind == "redis":
        from pyworkflow.storage.redis import RedisStorageBackend

        server = request.getfixturevalue("redis_server")
        return RedisStorageBackend(server.url, prefix=namespace_for(path))
    raise ValueError(
        f"PYWORKFLOW_TEST_STORAGE={kind!r}: use memory, file, sqlite, postgres or redis"
    )


class HandDrivenRuntime(LocalRuntime):
    """A local runtime without its background timer service: tests fire timers themselves.

    On a manual clock the service only races the test: with real I/O (SQLite, a server) it may
    be mid-tick when the test moves the clock, and claim the timer the test meant to fire.
    """

    async def ensure_running(self, storage: StorageBackend) -> None:
        pass


async def _env(
    request: pytest.FixtureRequest, path: Path, clock: ManualClock, dispatch: bool
) -> AsyncIterator[Env]:
    runtime = HandDrivenRuntime(clock=clock, poll_interval=3600, dispatch_steps=dispatch)
    storage = make_test_storage(TEST_STORAGE, request, path)
    api.set_runtime("local", runtime)
    yield Env(runtime, storage, clock)
    await runtime.shutdown()
    await storage.close()


@pytest.fixture
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Env]:
    async for value in _env(request, tmp_path / "env", clock, dispatch=False):
        yield value


@pytest.fixture
async def dispatched_env(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Env]:
    async for value in _env(request, tmp_path / "dispatched_env", clock, dispatch=True):
        yield value


def event_types(events: list[Any]) -> list[str]:
    return [e.type.value for e in events]


# -- real servers (started once per session, only when a test asks for them) -------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[servers.RedisServer]:
    with servers.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[servers.PostgresServer]:
    with servers.postgres_server() as server:
        yield server
