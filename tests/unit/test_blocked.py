"""Blocked runs: an activation that fails for a reason code must fix says so on the run, the
waiting caller hears it at once, and the run goes on once the code is fixed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pyworkflow import (
    Blocked,
    BlockedKind,
    NonDeterminismError,
    RunStatus,
    WorkflowNotFoundError,
    get_workflow_result,
    hook,
    resume,
    sleep,
    step,
    workflow,
)
from pyworkflow.core.registry import _workflows
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.blocking import blocked_error, blocked_kind, blocked_of
from pyworkflow.engine.leases import STEP_EXECUTORS
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.ports import SystemClock
from pyworkflow.model.exceptions import (
    CorruptHistoryError,
    SequenceConflictError,
    StorageBusyError,
)
from pyworkflow.model.schemas import Commit
from tests.conftest import Env, HandDrivenRuntime

version = {"v": 1}


@step()
async def pay() -> str:
    return "paid"


@step()
async def pack() -> str:
    return "packed"


@workflow()
async def order() -> list[str]:
    # version 2: a deploy reordered the steps under a running run
    out = [await pay(), await pack()] if version["v"] == 1 else [await pack(), await pay()]
    await sleep("1d")
    return out


@pytest.fixture(autouse=True)
def _v1() -> None:
    version["v"] = 1


async def diverged(env: Env) -> str:
    run_id = await env.start(order)
    env.engine.evict()
    version["v"] = 2
    env.clock.advance(86400)
    with pytest.raises(NonDeterminismError):
        await resume(run_id, storage=env.storage)
    return run_id


async def test_a_diverging_run_is_blocked_with_the_diff_on_its_record(env: Env) -> None:
    run_id = await diverged(env)
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.SUSPENDED
    blocked = run.blocked
    assert blocked is not None and blocked.kind is BlockedKind.NON_DETERMINISM
    assert blocked.error_type == "NonDeterminismError"
    assert blocked.detail["position"] == 1
    assert blocked.detail["expected"] == "step 'pay' (step:pay:1)"
    assert blocked.detail["actual"] == "step 'pack' (step:pack:1)"
    assert "test_blocked.py" in str(blocked.detail["location"])
    # released, not leased: the sweeper must not count it as a lost worker (and fail it)
    assert run.lease_owner is None
    assert await env.engine.recover_expired() == []
    # tried again later, so workers with fixed code continue it on their own
    timer = await env.storage.get_timer(run_id)
    assert timer is not None and timer.fire_at == env.clock.now() + timedelta(minutes=5)


async def test_get_workflow_result_raises_the_divergence_at_once(env: Env) -> None:
    run_id = await diverged(env)
    with pytest.raises(NonDeterminismError) as info:
        # (without the block this would wait out the hour, then time out)
        await get_workflow_result(run_id, timeout=3600, storage=env.storage)
    assert info.value.position == 1 and info.value.actual == "step 'pack' (step:pack:1)"
    assert "blocked (non_determinism)" in str(info.value)


async def test_the_fixed_code_continues_the_run_and_clears_the_block(env: Env) -> None:
    run_id = await diverged(env)
    version["v"] = 1
    assert await resume(run_id, storage=env.storage) == ["paid", "packed"]
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.COMPLETED
    assert run.error is None and run.blocked is None


async def test_the_first_commit_that_gets_through_clears_the_block(env: Env) -> None:
    run_id = await diverged(env)
    version["v"] = 1
    env.clock.current = env.clock.now() - timedelta(hours=1)  # the sleep is not due yet
    await resume(run_id, storage=env.storage)
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.SUSPENDED and run.blocked is None and run.error is None


async def test_a_timer_fired_activation_blocks_the_run_too(env: Env) -> None:
    run_id = await env.start(order)
    env.engine.evict()
    version["v"] = 2
    await env.jump_once(run_id)  # the background activation fails; nothing is raised here
    await env.settle()
    run = await env.storage.get_run(run_id)
    assert run.blocked is not None and run.blocked.kind is BlockedKind.NON_DETERMINISM
    with pytest.raises(NonDeterminismError):
        await get_workflow_result(run_id, timeout=3600, storage=env.storage)


async def test_a_completion_clears_a_block_its_activation_never_read(env: Env) -> None:
    run_id = await env.start(order)  # cached in this engine
    run = await env.storage.get_run(run_id)
    elsewhere = Blocked(BlockedKind.ENGINE_ERROR, "TypeError", "boom", env.clock.now(), "w-2")
    await env.storage.commit(Commit(run_id=run_id, now=env.clock.now(), error=elsewhere.to_text()))
    assert (await env.storage.get_run(run_id)).blocked == elsewhere
    done = await env.run_until_done(run_id)
    assert done.status is RunStatus.COMPLETED and done.error is None
    assert run.last_sequence > 0


async def test_an_unregistered_workflow_blocks_the_run_on_a_worker(env: Env) -> None:
    run_id = await env.start(order)
    env.engine.evict()
    # A worker process that lacks the workflow (the Celery runtime's engines block such runs).
    worker = Engine(env.storage, env.clock, env.runtime.queue_for(env.storage))
    saved = _workflows.pop("order")
    try:
        env.clock.advance(86400)
        with pytest.raises(WorkflowNotFoundError):
            await worker.advance(run_id)
        blocked = (await env.storage.get_run(run_id)).blocked
        assert blocked is not None and blocked.kind is BlockedKind.WORKFLOW_NOT_FOUND
        assert "import the module" in blocked.message
        with pytest.raises(WorkflowNotFoundError, match="is blocked"):
            await get_workflow_result(run_id, timeout=3600, storage=env.storage)
    finally:
        _workflows["order"] = saved
    # this process has it: its own waiting is not cut short, and it runs the run on
    assert await resume(run_id, storage=env.storage) == ["paid", "packed"]
    assert (await env.storage.get_run(run_id)).error is None


async def test_a_local_process_lacking_the_workflow_blocks_only_runs_nobody_took(
    env: Env,
) -> None:
    run_id = await env.start(order)
    env.engine.evict()
    queue = env.runtime.queue_for(env.storage)
    saved = _workflows.pop("order")
    try:
        env.clock.advance(86400)
        await queue._activate(run_id)  # first time: handed back for a process that has it
        assert (await env.storage.get_run(run_id)).blocked is None
        await queue._activate(run_id)  # it came back: nobody else runs it
        blocked = (await env.storage.get_run(run_id)).blocked
        assert blocked is not None and blocked.kind is BlockedKind.WORKFLOW_NOT_FOUND
    finally:
        _workflows["order"] = saved


def test_only_errors_code_must_fix_block() -> None:
    assert blocked_kind(NonDeterminismError("x")) is BlockedKind.NON_DETERMINISM
    assert blocked_kind(TypeError("engine bug")) is BlockedKind.ENGINE_ERROR
    assert blocked_kind(AssertionError()) is BlockedKind.ENGINE_ERROR
    for transient in (
        StorageBusyError("busy"),
        SequenceConflictError("race"),
        OSError("connection refused"),
        ConnectionResetError(),
        TimeoutError(),
        RuntimeError("driver"),
    ):
        assert blocked_kind(transient) is None, transient
    # a run that does not exist is not blocked (there is nothing to record it on)
    assert blocked_kind(WorkflowNotFoundError("no workflow run with id 'x'")) is None


def test_a_blocked_record_round_trips_and_rebuilds_its_error() -> None:
    now = SystemClock().now()
    record = Blocked(
        BlockedKind.NON_DETERMINISM,
        "NonDeterminismError",
        "command 2 differs",
        now,
        "w-1",
        {"position": 2, "expected": "a", "actual": "b", "location": "f.py:3 in wf"},
    )
    assert Blocked.from_text(record.to_text()) == record
    assert Blocked.from_text("plain error text") is None
    assert Blocked.from_text('{"not": "a block"}') is None
    error = blocked_error("r1", record)
    assert isinstance(error, NonDeterminismError)
    assert (error.position, error.expected, error.actual) == (2, "a", "b")
    engine_error = blocked_error("r1", Blocked(BlockedKind.ENGINE_ERROR, "TypeError", "x", now))
    assert "TypeError" in str(engine_error) and "r1 is blocked" in str(engine_error)


async def test_the_simulator_leaves_blocked_runs_for_the_oracles(env: Env) -> None:
    assert EngineOptions().blocked_retry == timedelta(minutes=5)
    from pyworkflow_testing import Simulation

    sim = Simulation(seed=0, workers=1)
    try:
        for engine in sim.world.engines:
            assert engine.options.blocked_retry is None
    finally:
        sim.close()


# -- what a second reviewer found ---------------------------------------------------------------


@workflow(name="blocked_then_hook")
async def then_hook() -> str:
    await (pay() if version["v"] == 1 else pack())
    return await hook("approve")


@workflow(name="blocked_two_sleeps")
async def two_sleeps() -> list[str]:
    out = [await pay()] if version["v"] == 1 else [await pack()]
    await sleep("1h")
    out.append(await pack())
    await sleep("1d")
    return out


async def test_fixed_code_clears_the_block_even_when_nothing_else_changes(env: Env) -> None:
    env.engine.options.blocked_retry = None  # (no retry timer: the block changes no timer)
    run_id = await env.start(then_hook)
    env.engine.evict()
    version["v"] = 2
    with pytest.raises(NonDeterminismError):
        await resume(run_id, storage=env.storage)
    assert (await env.storage.get_run(run_id)).blocked is not None
    version["v"] = 1
    await resume(run_id, storage=env.storage)  # replays fine, still waits on the hook
    assert (await env.storage.get_run(run_id)).blocked is None


async def test_a_block_recorded_elsewhere_does_not_outlive_progress_here(env: Env) -> None:
    run_id = await env.start(two_sleeps)  # cached in this engine
    other = HandDrivenRuntime(clock=env.clock, poll_interval=3600)
    try:
        version["v"] = 2  # another process runs other code
        with pytest.raises(NonDeterminismError):
            await other.engine_for(env.storage).advance(run_id)
        assert (await env.storage.get_run(run_id)).blocked is not None
    finally:
        version["v"] = 1
        await other.shutdown()
    env.clock.advance(3600)
    await env.engine.advance(run_id)  # this process moves it on, from its cache
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.SUSPENDED and run.blocked is None


async def test_an_activation_that_committed_before_failing_records_no_block(env: Env) -> None:
    run_id = await env.start(order)
    run = await env.storage.get_run(run_id)
    # the failing activation had loaded an older head: someone moved the run on since
    recorded = await env.engine.record_block(
        run_id, NonDeterminismError("late"), seen=run.last_sequence - 1
    )
    assert recorded is None and (await env.storage.get_run(run_id)).blocked is None


@step(name="blocked_dispatched")
async def far_away() -> str:
    return "x"


@workflow(name="blocked_on_workers")
async def on_workers() -> str:
    return await far_away()


async def test_a_run_waiting_on_its_step_executors_keeps_their_lease(dispatched_env: Env) -> None:
    env = dispatched_env
    run_id = await env.start(on_workers)  # its step is queued for a worker
    saved = _workflows.pop("blocked_on_workers")
    try:
        blocked = await env.engine.record_block(
            run_id, WorkflowNotFoundError("not here"), retry=False
        )
    finally:
        _workflows["blocked_on_workers"] = saved
    assert blocked is not None and blocked.kind is BlockedKind.WORKFLOW_NOT_FOUND
    run = await env.storage.get_run(run_id)
    assert (run.status, run.lease_owner) == (RunStatus.RUNNING, STEP_EXECUTORS)
    env.clock.advance(7 * 86400)  # the step's executors are lost: the sweeper still recovers it
    assert await env.engine.recover_expired() == [run_id]


async def test_an_operator_fails_only_a_run_that_is_still_blocked_as_checked(env: Env) -> None:
    run_id = await diverged(env)
    checked = await env.storage.get_run(run_id)
    version["v"] = 1
    await resume(run_id, storage=env.storage)  # fixed meanwhile: it got through
    refused = await env.engine.impose_failure(
        run_id, RuntimeError("x"), expected_sequence=checked.last_sequence, require_blocked=True
    )
    assert refused is False
    assert (await env.storage.get_run(run_id)).status is RunStatus.COMPLETED  # not failed


def test_a_corrupt_history_block_rebuilds_the_real_error() -> None:
    error = CorruptHistoryError("r1", 3, "step.completed", "result", "not JSON")
    kind = blocked_kind(error)
    assert kind is BlockedKind.CORRUPT_HISTORY
    record = Blocked.from_text(blocked_of(error, kind, SystemClock(), "w").to_text())
    assert record is not None
    rebuilt = blocked_error("r1", record)
    assert type(rebuilt) is CorruptHistoryError
    assert (rebuilt.run_id, rebuilt.sequence, rebuilt.event_type, rebuilt.field) == (
        "r1",
        3,
        "step.completed",
        "result",
    )
    assert str(rebuilt) == str(error)
