"""Resolutions apply in logical time: a timer due before a result fires before it.

A dispatched step's worker appends its outcome when it has it; a timer's firing is appended by
the activation the timer wakes, which can come late (its message lost, its worker gone). These
tests make that activation late on purpose and check that the workflow sees what it would have
seen on time, live and on replay (``WorkflowInstance.fires_first``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pyworkflow import EventType, RunStatus, sleep, step, workflow
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


@pytest.mark.parametrize("cold", [False, True], ids=["cached", "replayed"])
async def test_a_timer_due_before_a_dispatched_result_wins_though_its_activation_came_late(
    clock: ManualClock, cold: bool
) -> None:
    queue = HeldQueue()
    engine = _engine(clock, queue)
    run, _ = await engine.start_run(workflow_definition_of(bounded_lookup), (4,), {})
    await engine.advance(run.run_id)
    assert len(queue.steps) == 1  # on its way to a worker; the 20 s timer is set
    clock.advance(30)  # the timer came due at 20 s, and its activation never came
    await engine.execute_step(*queue.steps[0])  # the result lands at 30 s
    if cold:
        engine.evict()  # a worker that never saw the run
    await engine.advance(run.run_id)

    value, events = await _outcome(engine, run.run_id)
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
    queue = HeldQueue()
    engine = _engine(clock, queue)
    run, _ = await engine.start_run(workflow_definition_of(bounded_lookup), (4,), {})
    await engine.advance(run.run_id)
    clock.advance(15)
    await engine.execute_step(*queue.steps[0])
    engine.evict()
    await engine.advance(run.run_id)
    value, events = await _outcome(engine, run.run_id)
    assert value == 40
    assert await replay_history(bounded_lookup, events) == 40


@pytest.mark.parametrize("logical", [True, False], ids=["this release", "an earlier release"])
async def test_a_replay_fires_the_timer_first_only_for_runs_started_under_the_rule(
    clock: ManualClock, logical: bool
) -> None:
    # The log as the late activation found it: the result in, the timer's firing not yet. A run
    # an earlier release started gave the code the result then, and must replay as it ran.
    queue = HeldQueue()
    engine = _engine(clock, queue)
    run, _ = await engine.start_run(workflow_definition_of(bounded_lookup), (4,), {})
    await engine.advance(run.run_id)
    clock.advance(30)
    await engine.execute_step(*queue.steps[0])
    found = await engine.storage.get_events(run.run_id)
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
