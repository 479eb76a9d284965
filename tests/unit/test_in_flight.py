"""Inline attempts carried over a lost commit race, and a cancellation request found meanwhile.

An activation that loses a commit race carries the inline attempts it ran or left running to its
next try (``carry_inline_work``). When that try finds a cancellation request in the log, it holds
the request back for those attempts only as a replay of the log would (``Engine._pin_carried``),
and records each attempt once, however many races it loses.
"""

from __future__ import annotations

import asyncio
import collections
from datetime import timedelta
from typing import Any

from pyworkflow import get_step_info, sleep, step, workflow
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.options import EngineOptions
from pyworkflow.model.exceptions import SequenceConflictError
from pyworkflow.primitives.cancellation import shield
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow_testing import oracles
from tests.conftest import ManualClock

ran: collections.Counter[str] = collections.Counter()
gates: dict[str, asyncio.Event] = {}


class Quiet:
    async def enqueue_activation(self, run_id: str) -> None:
        del run_id

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        del run_id, step_id, attempt


class Racing(InMemoryStorageBackend):
    """Storage whose chosen commits lose the race: a cancellation request lands first."""

    def __init__(self, lose: set[int], clock: ManualClock) -> None:
        super().__init__()
        self.lose, self.clock, self.commits = lose, clock, 0
        self.canceller: Engine | None = None

    async def commit(self, commit: Any) -> int:
        if commit.expected_sequence is not None and commit.run_id and self.canceller:
            self.commits += 1
            if self.commits in self.lose:
                await self.canceller.request_cancellation(commit.run_id, "stop")
                raise SequenceConflictError("another writer came first")
        return await super().commit(commit)


@step(name="inflight_a")
async def first() -> str:
    ran["a"] += 1
    await gates["a"].wait()
    return "A"


@step(name="inflight_b")
async def second() -> str:
    ran["b"] += 1
    await gates["b"].wait()
    return "B"


@workflow(name="inflight_pair")
async def pair() -> list[str]:
    async with shield():  # (the request lets them be: only their second run would show)
        return list(await asyncio.gather(first(), second()))


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_an_attempt_pinned_then_carried_over_a_second_lost_race_runs_once(
    clock: ManualClock,
) -> None:
    ran.clear()
    gates.update(a=asyncio.Event(), b=asyncio.Event())
    storage = Racing({1, 2}, clock)
    engine = Engine(storage, clock, Quiet(), options=EngineOptions(owner="worker-1"))
    storage.canceller = Engine(storage, clock, Quiet(), options=EngineOptions(owner="api"))
    run, _ = await engine.start_run(workflow_definition_of(pair), (), {}, activate_here=True)
    activation = asyncio.ensure_future(engine.advance(run.run_id))
    await _settle()
    gates["a"].set()
    await _settle()
    gates["b"].set()
    await activation
    for _ in range(3):
        await engine.advance(run.run_id)
    assert dict(ran) == {"a": 1, "b": 1}  # no body ran twice
    events = await storage.get_events(run.run_id)
    assert await oracles.replays_the_same("inflight_pair", events) == []


@step(name="inflight_retried", max_retries=2, retry_delay="1s")
async def retried() -> str:
    ran[f"attempt {get_step_info().attempt}"] += 1
    if get_step_info().attempt < 2:
        raise RuntimeError("the first attempt fails")
    await gates["retry"].wait()
    return "R"


@step(name="inflight_x")
async def after_step() -> str:
    return "x"


@step(name="inflight_y")
async def after_sleep() -> str:
    return "y"


@workflow(name="inflight_retry_or_nap")
async def retry_or_nap() -> str:
    work = asyncio.ensure_future(retried())
    nap = asyncio.ensure_future(sleep(100))
    done, pending = await asyncio.wait({work, nap}, return_when=asyncio.FIRST_COMPLETED)
    async with shield():
        answer = await (after_step() if work in done else after_sleep())
    for left in pending:
        left.cancel()
    await asyncio.gather(work, nap, return_exceptions=True)
    return answer


async def test_a_carried_retry_and_a_cancellation_replay_the_same(clock: ManualClock) -> None:
    # Attempt 2 runs inline when a cancellation request makes its activation lose a commit: the
    # log shows the retry pending, not the attempt, so the next try delivers the request at once,
    # as a replay does, rather than holding it back for the attempt.
    ran.clear()
    gates.update(retry=asyncio.Event())
    storage = InMemoryStorageBackend()
    engine = Engine(storage, clock, Quiet(), options=EngineOptions(owner="worker-1"))
    run, _ = await engine.start_run(
        workflow_definition_of(retry_or_nap), (), {}, activate_here=True
    )
    await engine.advance(run.run_id)  # attempt 1 fails; the retry is due in 1 s
    clock.advance(timedelta(seconds=2).total_seconds())
    activation = asyncio.ensure_future(engine.advance(run.run_id))
    await _settle()
    other = Engine(storage, clock, Quiet(), options=EngineOptions(owner="api"))
    assert await other.request_cancellation(run.run_id, "stop")
    gates["retry"].set()
    await activation
    for _ in range(3):
        await engine.advance(run.run_id)
    events = await storage.get_events(run.run_id)
    assert await oracles.replays_the_same("inflight_retry_or_nap", events) == []
