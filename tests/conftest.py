"""Shared fixtures: a fresh configuration per test, and a runtime on a hand-driven clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pyworkflow import api
from pyworkflow.config import reset_config
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.schemas import RunStatus
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


@pytest.fixture
async def env(clock: ManualClock) -> AsyncIterator[Env]:
    runtime = LocalRuntime(clock=clock, poll_interval=3600)
    storage = InMemoryStorageBackend()
    api.set_runtime("local", runtime)
    yield Env(runtime, storage, clock)
    await runtime.shutdown()


@pytest.fixture
async def dispatched_env(clock: ManualClock) -> AsyncIterator[Env]:
    runtime = LocalRuntime(clock=clock, poll_interval=3600, dispatch_steps=True)
    storage = InMemoryStorageBackend()
    api.set_runtime("local", runtime)
    yield Env(runtime, storage, clock)
    await runtime.shutdown()


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
