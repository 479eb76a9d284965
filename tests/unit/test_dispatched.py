"""Dispatched steps: attempts go through the TaskQueue port and produce the inline log shape."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pyworkflow import (
    EventType,
    RunStatus,
    get_workflow_events,
    get_workflow_result,
    sleep,
    step,
    workflow,
)
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.leases import STEP_EXECUTORS
from pyworkflow.engine.options import EngineOptions
from pyworkflow.storage.memory import InMemoryStorageBackend
from tests.conftest import Env, ManualClock

attempts: dict[str, int] = {}


@step(max_retries=2, retry_delay="10s")
async def remote_flaky(x: int) -> int:
    attempts["flaky"] = attempts.get("flaky", 0) + 1
    if attempts["flaky"] == 1:
        raise ConnectionError("worker lost the network")
    return x + 1


@step(force_local=True)
async def local_only(x: int) -> int:
    return x * 3


@workflow()
async def mixed(x: int) -> list[int]:
    a = await remote_flaky(x)
    b, c = await asyncio.gather(local_only(a), remote_flaky(a))
    await sleep(5)
    return [a, b, c]


def shape(events: list) -> list[tuple[str, str | None, object]]:
    return [(e.type.value, e.data.get("command_id"), e.data.get("attempt")) for e in events]


async def run_mixed(env: Env) -> list:
    attempts.clear()
    run_id = await env.start(mixed, 1)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == [2, 6, 3]
    return await get_workflow_events(run_id, storage=env.storage)


async def test_dispatched_steps_complete_through_the_queue(dispatched_env: Env) -> None:
    events = await run_mixed(dispatched_env)
    started = [e for e in events if e.type is EventType.STEP_STARTED]
    dispatched = {
        (e.data["command_id"], e.data["attempt"]): e.data.get("dispatched") for e in started
    }
    assert dispatched == {
        ("step:remote_flaky:1", 1): True,
        ("step:remote_flaky:1", 2): True,
        ("step:local_only:2", 1): None,
        ("step:remote_flaky:3", 1): True,
    }
    assert attempts["flaky"] == 3  # one failure, then the two calls


async def test_dispatched_and_inline_logs_have_the_same_events_per_command(
    dispatched_env: Env, env: Env
) -> None:
    dispatched = await run_mixed(dispatched_env)
    inline = await run_mixed(env)

    def per_command(events: list) -> dict[str | None, list[tuple[str, object]]]:
        out: dict[str | None, list[tuple[str, object]]] = {}
        for e in events:
            out.setdefault(e.data.get("command_id"), []).append(
                (e.type.value, e.data.get("attempt"))
            )
        return out

    assert per_command(dispatched) == per_command(inline)
    assert sorted(shape(dispatched), key=str) == sorted(shape(inline), key=str)


async def test_duplicate_step_delivery_records_one_completion(dispatched_env: Env) -> None:
    @workflow(name="dup_delivery")
    async def one_step() -> int:
        return await local_only_dispatchable(2)

    run_id = await dispatched_env.start(one_step)
    await dispatched_env.settle()
    engine = dispatched_env.engine
    # deliver the same attempt again, twice, after it completed
    await engine.execute_step(run_id, "step:local_only_dispatchable:1", 1)
    await engine.execute_step(run_id, "step:local_only_dispatchable:1", 1)
    await dispatched_env.settle()
    events = await get_workflow_events(run_id, storage=dispatched_env.storage)
    assert [e.type.value for e in events].count("step.completed") == 1
    assert events[-1].type is EventType.WORKFLOW_COMPLETED
    assert executions["n"] == 1


executions = {"n": 0}


@step()
async def local_only_dispatchable(x: int) -> int:
    executions["n"] += 1
    return x


@step()
async def remote_double(x: int) -> int:
    return x * 2


@workflow(max_recovery_attempts=1)
async def five_remote_steps(x: int) -> int:
    for _ in range(5):
        x = await remote_double(x)
    return x


async def test_recovery_budget_counts_losses_in_a_row_not_over_the_whole_run(
    dispatched_env: Env,
) -> None:
    """The first message of every step is lost: five lease expiries against a budget of one.

    Each recovery republishes the step and its result is progress, so the run finishes; a run
    that made no progress between two losses would still fail (tested in the simulator zoo).
    """
    env = dispatched_env
    engine = env.engine
    queue = engine.queue
    lost: set[str] = set()
    enqueue_step = queue.enqueue_step

    async def lose_first_message(run_id: str, step_id: str, attempt: int) -> None:
        if step_id not in lost:
            lost.add(step_id)
            return
        await enqueue_step(run_id, step_id, attempt)

    queue.enqueue_step = lose_first_message  # type: ignore[method-assign]
    run_id = await env.start(five_remote_steps, 1)
    for _ in range(20):
        await env.settle()
        run = await env.storage.get_run(run_id)
        if run.status.is_terminal:
            break
        env.clock.advance(engine.options.lease_ttl.total_seconds() + 1)
        await engine.recover_expired()
    assert run.status is RunStatus.COMPLETED, run.error
    assert await get_workflow_result(run_id, storage=env.storage) == 32
    events = await get_workflow_events(run_id, storage=env.storage)
    interruptions = [e for e in events if e.type is EventType.WORKFLOW_INTERRUPTED]
    assert len(interruptions) == 5
    assert {e.data["recovery_attempt"] for e in interruptions} == {1}
    assert run.recovery_attempts == 0


class HeldQueue:
    """A broker whose workers are all busy: messages wait until the test hands them out."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, int]] = []
        self.activations: list[str] = []

    async def enqueue_activation(self, run_id: str) -> None:
        self.activations.append(run_id)

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        self.steps.append((run_id, step_id, attempt))


@step()
async def queued_step(x: int) -> int:
    return x


@workflow()
async def two_queued(x: int) -> list[int]:
    return list(await asyncio.gather(queued_step(x), queued_step(x + 1)))


def _engine(clock: ManualClock, queue: HeldQueue, dispatch_ttl: timedelta | None) -> Engine:
    options = EngineOptions(
        owner="worker-1",
        dispatch_steps=True,
        lease_ttl=timedelta(seconds=30),
        dispatch_lease_ttl=dispatch_ttl,
    )
    return Engine(InMemoryStorageBackend(), clock, queue, options=options)


async def test_steps_waiting_in_a_busy_queue_are_not_swept_before_the_dispatch_lease_ends(
    clock: ManualClock,
) -> None:
    queue = HeldQueue()
    engine = _engine(clock, queue, timedelta(hours=1))
    run, _ = await engine.start_run(workflow_definition_of(two_queued), (1,), {})
    await engine.advance(run.run_id)
    assert len(queue.steps) == 2  # both dispatched, both waiting for a worker
    clock.advance(120)  # four lease terms in the queue: nobody lost anything
    assert await engine.recover_expired() == []

    # A worker takes the first; its renewals keep the lease only lease_ttl ahead.
    run_id, step_id, attempt = queue.steps[0]
    await engine.execute_step(run_id, step_id, attempt)
    await engine.storage.renew_leases([run_id], STEP_EXECUTORS, clock.now() + timedelta(seconds=30))
    engine.evict()  # the continuation runs on a worker that never saw this run
    await engine.advance(run_id)  # the second step is still queued
    record = await engine.storage.get_run(run_id)
    assert record.lease_owner == STEP_EXECUTORS
    # Long again: the continuation commits (it clears the wake-up the step's result set) and
    # hands the run back to the executors of the step still queued.
    assert record.lease_expires_at == clock.now() + timedelta(hours=1)
    clock.advance(600)
    assert await engine.recover_expired() == []

    # A message the broker lost for good is recovered once the dispatch lease runs out.
    clock.advance(3600)
    assert await engine.recover_expired() == [run_id]


async def test_without_a_dispatch_lease_the_sweeper_takes_runs_back_after_lease_ttl(
    clock: ManualClock,
) -> None:
    queue = HeldQueue()
    engine = _engine(clock, queue, None)
    run, _ = await engine.start_run(workflow_definition_of(two_queued), (1,), {})
    await engine.advance(run.run_id)
    clock.advance(31)
    assert await engine.recover_expired() == [run.run_id]


async def test_the_sweeper_recovers_every_expired_run_not_one_batch_a_tick(
    clock: ManualClock,
) -> None:
    # A whole fleet restarted: 250 runs were created and never activated (their creator's lease
    # ran out). One batch takes `limit` of them; a sweep takes them all.
    queue = HeldQueue()
    engine = _engine(clock, queue, None)
    run_ids = {
        (await engine.start_run(workflow_definition_of(two_queued), (i,), {}))[0].run_id
        for i in range(250)
    }
    clock.advance(31)
    first = await engine.recover_expired(limit=100)
    assert len(first) == 100
    rest = await engine.recover_expired(limit=100, until_done=True)
    assert set(first) | set(rest) == run_ids and len(rest) == 150
    assert sorted(queue.activations) == sorted(run_ids)
    assert await engine.recover_expired(limit=100, until_done=True) == []


flaky_calls: list[int] = []


@step(max_retries=2, retry_delay="10s")
async def fails_first(x: int) -> int:
    flaky_calls.append(x)
    if len(flaky_calls) == 1:
        raise ConnectionError("the first attempt fails")
    return x


@workflow()
async def after_a_lost_start(x: int) -> int:
    return await fails_first(x)


async def _start_after_a_lost_start(clock: ManualClock) -> tuple[Engine, HeldQueue, str]:
    flaky_calls.clear()
    queue = HeldQueue()
    engine = _engine(clock, queue, None)
    run, _ = await engine.start_run(workflow_definition_of(after_a_lost_start), (7,), {})
    clock.advance(31)  # the first activation was lost: the sweeper takes the run back
    assert await engine.recover_expired() == [run.run_id]
    await engine.advance(run.run_id)
    return engine, queue, run.run_id


async def _retry_published_once_then_done(
    clock: ManualClock, engine: Engine, queue: HeldQueue, run_id: str
) -> None:
    """The failed attempt's retry, 10 s later: published once, and the run completes."""
    clock.advance(10)
    await engine.advance(run_id)
    assert [attempt for *_, attempt in queue.steps] == [2]
    await engine.execute_step(*queue.steps.pop())
    await engine.advance(run_id)
    record = await engine.storage.get_run(run_id)
    assert record is not None and record.status is RunStatus.COMPLETED
    assert flaky_calls == [7, 7]


async def test_a_retry_after_a_recovery_is_published_once_by_a_worker_replaying_the_log(
    clock: ManualClock,
) -> None:
    # The run's first activation was lost (workflow.interrupted comes before any step.started).
    # A worker replaying that log from scratch sees the step as started already when it reads
    # the interruption (its code issued it from the recorded start); the attempt that was in
    # flight then must not stay "lost" once it is known to have ended, or the retry is
    # published twice (as new and as lost), and runs twice.
    engine, queue, run_id = await _start_after_a_lost_start(clock)
    assert [attempt for *_, attempt in queue.steps] == [1]
    await engine.execute_step(*queue.steps.pop())  # fails: a retry in 10 s
    engine.evict()  # the next activation replays the whole log
    await _retry_published_once_then_done(clock, engine, queue, run_id)
    events = await engine.storage.get_events(run_id)
    types = [e.type for e in events]
    assert types.index(EventType.WORKFLOW_INTERRUPTED) < types.index(EventType.STEP_STARTED)


async def test_a_start_after_a_recovery_is_not_published_again_by_a_later_replay(
    clock: ManualClock,
) -> None:
    # The recovery came before the step's first start: replaying, that start clears the loss.
    engine, queue, run_id = await _start_after_a_lost_start(clock)
    engine.evict()
    await engine.advance(run_id)  # a duplicate activation message, replayed from scratch
    assert [attempt for *_, attempt in queue.steps] == [1]


async def test_a_lost_attempt_is_started_again_once_and_its_retry_published_once(
    clock: ManualClock,
) -> None:
    engine, queue, run_id = await _start_after_a_lost_start(clock)
    clock.advance(31)  # the worker that took attempt 1 died: nobody renews the lease
    assert await engine.recover_expired() == [run_id]
    for _ in range(3):  # the recovery, then two activations on workers that never ran the run
        await engine.advance(run_id)
        engine.evict()
    assert [attempt for *_, attempt in queue.steps] == [1, 1]  # started again once, recorded
    events = await engine.storage.get_events(run_id)
    starts = [e.data["attempt"] for e in events if e.type is EventType.STEP_STARTED]
    assert starts == [1, 1]
    await engine.execute_step(*queue.steps.pop())  # fails: a retry in 10 s
    queue.steps.clear()
    await _retry_published_once_then_done(clock, engine, queue, run_id)
