"""Resolutions apply in logical time: a timer due before a result fires before it.

A dispatched step's worker appends its outcome when it has it; a timer's firing is appended by
the activation the timer wakes, which can come late (its message lost, its worker gone). These
tests make that activation late on purpose and check that the workflow sees what it would have
seen on time, live and on replay (``WorkflowInstance.fires_first``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from pyworkflow import EventType, RunStatus, hook, sleep, step, workflow
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.instance import LOGICAL_ORDER, WorkflowInstance
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.replay import _run_from, replay_history
from pyworkflow.model.events import Event
from pyworkflow.serialization import loads
from pyworkflow.storage.memory import InMemoryStorageBackend
from tests.conftest import ManualClock


class HeldQueue:
    """Messages wait here until the test delivers them (or never does)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, int]] = []

    async def enqueue_activation(self, run_id: str) -> None:
        del run_id  # the test activates the run itself, when it chooses to

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        self.steps.append((run_id, step_id, attempt))


@step()
async def lookup(x: int) -> int:
    return x * 10


@workflow()
async def bounded_lookup(x: int) -> int | str:
    try:
        return await asyncio.wait_for(lookup(x), 20)
    except TimeoutError:
        return "timed out"


@workflow()
async def two_sleepers() -> list[str]:
    order: list[str] = []

    async def after(seconds: int, name: str) -> None:
        await sleep(seconds)
        order.append(name)

    await asyncio.gather(after(25, "second"), after(10, "first"))
    return order


def _engine(clock: ManualClock, queue: HeldQueue) -> Engine:
    options = EngineOptions(owner="worker-1", dispatch_steps=True)
    return Engine(InMemoryStorageBackend(), clock, queue, options=options)


async def _outcome(engine: Engine, run_id: str) -> tuple[object, list[Event]]:
    record = await engine.storage.get_run(run_id)
    assert record is not None and record.status is RunStatus.COMPLETED
    assert record.result is not None
    return loads(record.result), await engine.storage.get_events(run_id)


def _types(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.data.get("command_id")) for e in events]


async def _result_after(
    clock: ManualClock, seconds: float, options: EngineOptions | None = None
) -> tuple[Engine, str]:
    """``bounded_lookup`` started and activated (its step dispatched, its 20 s timer set), then
    the step's result written ``seconds`` later, before any activation of the timer."""
    queue = HeldQueue()
    options = options or EngineOptions(owner="worker-1", dispatch_steps=True)
    engine = Engine(InMemoryStorageBackend(), clock, queue, options=options)
    run, _ = await engine.start_run(workflow_definition_of(bounded_lookup), (4,), {})
    await engine.advance(run.run_id)
    assert len(queue.steps) == 1  # on its way to a worker; the 20 s timer is set
    clock.advance(seconds)
    await engine.execute_step(*queue.steps[0])
    return engine, run.run_id


@pytest.mark.parametrize("cold", [False, True], ids=["cached", "replayed"])
async def test_a_timer_due_before_a_dispatched_result_wins_though_its_activation_came_late(
    clock: ManualClock, cold: bool
) -> None:
    # The timer came due at 20 s and its activation never came; the result lands at 30 s.
    engine, run_id = await _result_after(clock, 30)
    if cold:
        engine.evict()  # a worker that never saw the run
    await engine.advance(run_id)

    value, events = await _outcome(engine, run_id)
    assert value == "timed out"
    # The log holds the result first (its writer came first) and the timer's firing after it;
    # a replay meets that firing done already, and ends the same way.
    types = _types(events)
    assert types.index(("step.completed", "step:lookup:2")) < types.index(
        ("sleep.completed", "timer:1")
    )
    assert await replay_history(bounded_lookup, events) == "timed out"


async def test_a_result_that_lands_before_the_timer_is_due_is_the_answer(
    clock: ManualClock,
) -> None:
    engine, run_id = await _result_after(clock, 15)
    engine.evict()
    await engine.advance(run_id)
    value, events = await _outcome(engine, run_id)
    assert value == 40
    assert await replay_history(bounded_lookup, events) == 40


@pytest.mark.parametrize("logical", [True, False], ids=["this release", "an earlier release"])
async def test_a_replay_fires_the_timer_first_only_for_runs_started_under_the_rule(
    clock: ManualClock, logical: bool
) -> None:
    # The log as the late activation found it: the result in, the timer's firing not yet. A run
    # an earlier release started gave the code the result then, and must replay as it ran.
    engine, run_id = await _result_after(clock, 30)
    found = await engine.storage.get_events(run_id)
    assert found[0].data[LOGICAL_ORDER] is True and found[-1].type is EventType.STEP_COMPLETED
    events = [Event(e.run_id, e.type, dict(e.data), e.timestamp, e.sequence) for e in found]
    if not logical:
        del events[0].data[LOGICAL_ORDER]
    definition = workflow_definition_of(bounded_lookup)
    inst = WorkflowInstance(_run_from(events, definition.name), definition)
    try:
        inst.feed(events)
        assert inst.main.done()
        assert inst.main.result() == ("timed out" if logical else 40)
        # Under the rule the timer fired on replay, and its firing is to be recorded.
        assert _types(inst.buffer) == ([("sleep.completed", "timer:1")] if logical else [])
    finally:
        inst.teardown()


async def test_timers_that_came_due_together_fire_in_the_order_they_came_due(
    clock: ManualClock,
) -> None:
    queue = HeldQueue()
    engine = _engine(clock, queue)
    run, _ = await engine.start_run(workflow_definition_of(two_sleepers), (), {})
    await engine.advance(run.run_id)
    clock.advance(60)  # both due; one activation serves them
    await engine.advance(run.run_id)
    value, events = await _outcome(engine, run.run_id)
    assert value == ["first", "second"]
    fired = [e.data["command_id"] for e in events if e.type is EventType.SLEEP_COMPLETED]
    assert fired == ["sleep:2", "sleep:1"]
    assert await replay_history(two_sleepers, events) == ["first", "second"]


async def test_a_late_result_meets_a_timer_that_fired_in_time(clock: ManualClock) -> None:
    queue = HeldQueue()
    engine = _engine(clock, queue)
    run, _ = await engine.start_run(workflow_definition_of(bounded_lookup), (4,), {})
    await engine.advance(run.run_id)
    clock.advance(20)
    await engine.advance(run.run_id)  # the timer's activation, on time
    clock.advance(timedelta(seconds=10).total_seconds())
    await engine.execute_step(*queue.steps[0])  # the result comes after the run ended
    value, events = await _outcome(engine, run.run_id)
    assert value == "timed out"
    assert await replay_history(bounded_lookup, events) == "timed out"


@workflow()
async def expiry_or_nap() -> str:
    answer = asyncio.ensure_future(hook("nobody", timeout="40s"))
    nap = asyncio.ensure_future(sleep(45))
    done, _ = await asyncio.wait({answer, nap}, return_when=asyncio.FIRST_COMPLETED)
    return "nap" if nap in done else "expired"


@pytest.mark.parametrize("late", [False, True], ids=["on time", "one late activation"])
async def test_a_hook_expiry_due_before_a_sleep_comes_first(clock: ManualClock, late: bool) -> None:
    queue = HeldQueue()
    engine = _engine(clock, queue)
    run, _ = await engine.start_run(workflow_definition_of(expiry_or_nap), (), {})
    await engine.advance(run.run_id)
    for seconds in [60] if late else [41, 10]:
        clock.advance(seconds)
        await engine.advance(run.run_id)
    value, events = await _outcome(engine, run.run_id)
    assert value == "expired"
    assert await replay_history(expiry_or_nap, events) == "expired"


# Inline steps whose bodies move the test's clock: the first to end ends at 10 s, the other at
# 50 s, and a 20 s sleep comes due between them.
_moving: dict[str, object] = {}


@step(force_local=True)
async def ends_at_fifty() -> str:
    gate = _moving["gate"]
    assert isinstance(gate, asyncio.Event)
    await gate.wait()
    clock = _moving["clock"]
    assert isinstance(clock, ManualClock)
    clock.advance(40)
    return "late"


@step(force_local=True)
async def ends_at_ten() -> str:
    clock, gate = _moving["clock"], _moving["gate"]
    assert isinstance(clock, ManualClock) and isinstance(gate, asyncio.Event)
    clock.advance(10)
    gate.set()
    return "early"


@workflow()
async def inline_against_a_sleep() -> list[str]:
    heard: list[str] = []

    async def hear(awaitable: Any, name: str) -> None:
        await awaitable
        heard.append(name)

    await asyncio.gather(
        hear(ends_at_fifty(), "step ending at 50 s"),
        hear(ends_at_ten(), "step ending at 10 s"),
        hear(sleep(20), "sleep due at 20 s"),
    )
    return heard


async def test_inline_outcomes_and_a_sleep_are_heard_in_the_order_they_happened(
    clock: ManualClock,
) -> None:
    _moving.update(clock=clock, gate=asyncio.Event())
    engine = Engine(
        InMemoryStorageBackend(), clock, HeldQueue(), options=EngineOptions(owner="worker-1")
    )
    run, _ = await engine.start_run(workflow_definition_of(inline_against_a_sleep), (), {})
    await engine.advance(run.run_id)
    value, events = await _outcome(engine, run.run_id)
    assert value == ["step ending at 10 s", "sleep due at 20 s", "step ending at 50 s"]
    assert await replay_history(inline_against_a_sleep, events) == value


@workflow()
async def poller() -> int:
    answer = asyncio.ensure_future(lookup(1))
    polls = 0
    while not answer.done():
        await asyncio.sleep(0.5)  # a durable timer each time round
        polls += 1
    return polls


async def test_timers_fired_ahead_of_a_late_result_stop_at_the_event_limit(
    clock: ManualClock,
) -> None:
    queue = HeldQueue()
    options = EngineOptions(owner="worker-1", dispatch_steps=True, event_limit=100)
    engine = Engine(InMemoryStorageBackend(), clock, queue, options=options)
    run, _ = await engine.start_run(workflow_definition_of(poller), (), {})
    await engine.advance(run.run_id)
    clock.advance(300)  # 600 polls were due before the result: one activation hears them all
    await engine.execute_step(*queue.steps[0])
    await engine.advance(run.run_id)
    record = await engine.storage.get_run(run.run_id)
    assert record is not None and record.status is RunStatus.FAILED
    assert "recorded more than 100 events" in (record.error or "")
    assert record.last_sequence < 110  # not the 1,200 the polls would write


async def test_an_engine_in_a_rolling_upgrade_starts_runs_that_replay_in_log_order(
    clock: ManualClock,
) -> None:
    options = EngineOptions(owner="worker-1", dispatch_steps=True, logical_order=False)
    engine, run_id = await _result_after(clock, 30, options)
    await engine.advance(run_id)
    value, events = await _outcome(engine, run_id)
    assert LOGICAL_ORDER not in events[0].data
    assert value == 40  # as a worker of the release before the rule would have it
    assert await replay_history(bounded_lookup, events) == 40


def test_the_configuration_key_reaches_the_runtimes() -> None:
    import pyworkflow
    from pyworkflow.api import get_runtime
    from pyworkflow.celery.app import CelerySettings

    pyworkflow.configure(logical_order=False)
    runtime = get_runtime("local")
    assert getattr(runtime, "logical_order", None) is False
    assert CelerySettings.from_config().logical_order is False
