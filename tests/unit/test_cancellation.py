"""Cancellation: a durable request, delivered at the durable call the workflow waits on;
``shield()`` defers it; a step already running finishes first; the run ends ``cancelled``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pyworkflow import (
    CancellationError,
    Event,
    EventType,
    HookNotFoundError,
    HookStatus,
    RunStatus,
    StepContext,
    WorkflowNotFoundError,
    WorkflowRun,
    cancel_workflow,
    get_hook_token,
    get_step_context,
    get_step_info,
    get_workflow_events,
    get_workflow_result,
    hook,
    resume_hook,
    set_step_context,
    shield,
    sleep,
    step,
    workflow,
)
from pyworkflow.api import start
from pyworkflow.runtime.local import LocalRuntime
from tests.conftest import TEST_STORAGE, Env, make_test_storage
from tests.polling import until

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@step()
async def note(what: str) -> str:
    ran.append(what)
    return what


@workflow()
async def sleeps_a_week() -> str:
    await note("before")
    await sleep("7d")
    await note("after")  # never reached once cancelled
    return "woke"


@workflow()
async def waits_on_a_hook() -> object:
    return await hook("never")


@workflow()
async def cleans_up() -> str:
    try:
        await sleep("7d")
    except CancellationError:
        async with shield():
            await note("undo")  # durable calls inside the shield run
        raise
    return "not cancelled"


@workflow()
async def catches_and_returns() -> str:
    try:
        await sleep("1d")
    except CancellationError as exc:
        return f"stopped: {exc}"
    return "slept"


@workflow()
async def shielded_sleep() -> str:
    async with shield():
        await sleep("1h")  # the request waits for the block to end
        await note("inside")
    await note("after the shield")  # the first durable call after it raises
    return "done"


async def types(env: Env, run_id: str) -> list[str]:
    return [e.type.value for e in await get_workflow_events(run_id, storage=env.storage)]


async def test_a_sleeping_run_is_cancelled_now_not_in_a_week(env: Env) -> None:
    run_id = await env.start(sleeps_a_week)
    await env.settle()
    assert await cancel_workflow(run_id, reason="user asked", storage=env.storage)
    await env.settle()
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.CANCELLED
    assert env.clock.now() == run.created_at  # no virtual time passed: not in a week
    with pytest.raises(CancellationError, match="user asked"):
        await get_workflow_result(run_id, storage=env.storage)
    assert ran == ["before"]
    events = await types(env, run_id)
    assert events[-2:] == ["cancellation.requested", "workflow.cancelled"]
    assert await env.storage.get_timer(run_id) is None


async def test_a_run_waiting_on_a_hook_wakes_cancelled(env: Env) -> None:
    run_id = await env.start(waits_on_a_hook)
    assert await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED


async def test_cleanup_under_a_shield_runs_then_the_run_ends_cancelled(env: Env) -> None:
    run_id = await env.start(cleans_up)
    await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED
    assert ran == ["undo"]
    env.runtime.engine_for(env.storage).evict()  # a replay from scratch does not run it again
    assert await cancel_workflow(run_id, storage=env.storage) is False  # finished already
    assert ran == ["undo"]


async def test_a_workflow_that_catches_the_error_completes(env: Env) -> None:
    run_id = await env.start(catches_and_returns)
    await cancel_workflow(run_id, reason="enough", storage=env.storage)
    await env.settle()
    result = await get_workflow_result(run_id, storage=env.storage)
    assert result.startswith("stopped: ") and "enough" in result
    assert (await env.storage.get_run(run_id)).status is RunStatus.COMPLETED


async def test_a_shield_defers_the_error_to_the_first_call_after_it(env: Env) -> None:
    run_id = await env.start(shielded_sleep)
    await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED  # still sleeping
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.CANCELLED
    assert ran == ["inside"]


async def test_cancelling_twice_or_after_the_end_and_unknown_runs(env: Env) -> None:
    run_id = await env.start(sleeps_a_week)
    assert await cancel_workflow(run_id, storage=env.storage)
    assert await cancel_workflow(run_id, storage=env.storage)  # harmless
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED
    assert await cancel_workflow(run_id, storage=env.storage) is False
    with pytest.raises(WorkflowNotFoundError):
        await cancel_workflow("run_nope", storage=env.storage)


async def test_wait_returns_once_the_run_is_terminal(env: Env) -> None:
    run_id = await env.start(sleeps_a_week)
    assert await cancel_workflow(run_id, wait=True, timeout=10, storage=env.storage)
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED


@workflow()
async def one_step_then_more() -> str:
    await note("in flight")
    await note("next")  # never started: the request arrived while the first ran
    return "done"


async def test_a_step_in_flight_finishes_and_is_recorded_then_the_error_arrives(
    dispatched_env: Env,
) -> None:
    env = dispatched_env
    run_id = await env.start(one_step_then_more)  # its step is queued, not run yet
    assert await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED
    assert ran == ["in flight"]
    events = await types(env, run_id)
    assert "step.completed" in events and events[-1] == "workflow.cancelled"


async def test_a_cancelled_history_replays_to_the_same_ending(env: Env) -> None:
    from pyworkflow.engine.replay import replay_history

    run_id = await env.start(cleans_up)
    await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    history = await get_workflow_events(run_id, storage=env.storage)
    with pytest.raises(CancellationError):
        await replay_history(cleans_up, history)
    assert ran == ["undo"]  # replay runs no step body


async def test_the_0_4_import_path_cancels_too(env: Env) -> None:
    from pyworkflow.core import cancel_workflow as core_cancel_workflow

    run_id = await env.start(sleeps_a_week)
    assert await core_cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED


stop_checks: list[int] = []


class Tenant(StepContext):
    name: str = "acme"


@step()
async def long_chore(rounds: int) -> int:
    for done in range(rounds):
        get_step_context().check_cancellation()  # the context's form
        get_step_info().check_cancellation()  # the StepInfo form
        stop_checks.append(done)
        await asyncio.sleep(0.001)
    return rounds


@workflow()
async def runs_a_long_chore() -> int:
    set_step_context(Tenant())
    return await long_chore(100_000)


async def test_a_long_step_stops_early_when_its_run_is_cancelled(env: Env) -> None:
    stop_checks.clear()
    started = asyncio.ensure_future(env.start(runs_a_long_chore))

    async def chore_running() -> bool:
        return len(stop_checks) >= 3

    await until(chore_running, "the long step to be under way", 30)
    run_id = (await env.storage.list_runs())[0][0].run_id
    assert await cancel_workflow(run_id, reason="enough", storage=env.storage)
    await started
    await env.settle()
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.CANCELLED
    assert len(stop_checks) < 100_000
    types_seen = await types(env, run_id)
    assert "step.failed" in types_seen and "step.retrying" not in types_seen
    assert types_seen[-1] == "workflow.cancelled"


async def test_check_cancellation_outside_a_cancelled_run_does_nothing() -> None:
    Tenant().check_cancellation()  # not in a step: nothing to check


async def test_cancelling_a_run_whose_code_is_not_importable_here_records_it(env: Env) -> None:
    """The request needs the run, not its code: a worker that has the code delivers it."""
    run = WorkflowRun(
        run_id="elsewhere-1",
        workflow_name="a_workflow_this_process_never_imported",
        status=RunStatus.SUSPENDED,
    )
    started = Event(
        "elsewhere-1",
        EventType.WORKFLOW_STARTED,
        {"workflow_name": run.workflow_name, "args": "[]", "kwargs": "{}"},
    )
    await env.storage.create_run(run, [started])
    assert await cancel_workflow("elsewhere-1", reason="from afar", storage=env.storage)
    assert (await types(env, "elsewhere-1"))[-1] == "cancellation.requested"
    assert (await env.storage.get_timer("elsewhere-1")) is not None  # it wakes on a worker


async def test_a_cancelled_run_disposes_the_hook_it_waited_on(env: Env) -> None:
    run_id = await env.start(waits_on_a_hook)
    [waiting] = await env.storage.list_hooks(run_id)
    assert waiting.status is HookStatus.PENDING
    await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    [disposed] = await env.storage.list_hooks(run_id)
    assert disposed.status is HookStatus.DISPOSED
    with pytest.raises(HookNotFoundError, match="disposed: its run has ended"):
        await resume_hook(
            await get_hook_token(run_id, disposed.hook_id, storage=env.storage),
            {"late": True},
            storage=env.storage,
        )


@step()
async def cleanup_that_checks() -> str:
    get_step_info().check_cancellation()  # inside shield(): never stops it
    return "cleaned"


@workflow()
async def shielded_cleanup_step() -> str:
    try:
        await sleep("1h")
    except CancellationError:
        async with shield():
            return await cleanup_that_checks()
    return "slept"


async def test_check_cancellation_leaves_a_shielded_step_be(env: Env) -> None:
    run_id = await env.start(shielded_cleanup_step)
    await cancel_workflow(run_id, storage=env.storage)
    await env.settle()
    assert await get_workflow_result(run_id, storage=env.storage) == "cleaned"


async def test_an_inline_step_sees_a_request_made_by_another_process(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two runtimes on one storage stand for two processes: the first runs the long step
    inline; the second records the request; the first's lease renewal finds it in the log."""
    storage = make_test_storage(TEST_STORAGE, request, tmp_path / "shared")
    runner = LocalRuntime(poll_interval=3600, lease_ttl=0.3)  # renews every 0.1 s
    other = LocalRuntime(poll_interval=3600)
    stop_checks.clear()
    try:
        started = asyncio.ensure_future(start(runs_a_long_chore, runtime=runner, storage=storage))

        async def chore_running() -> bool:
            return len(stop_checks) >= 3

        await until(chore_running, "the long step to be under way", 30)
        await runner.ensure_running(storage)  # its renewal loop (what watches the step's run)
        run_id = (await storage.list_runs())[0][0].run_id
        assert await other.engine_for(storage).request_cancellation(run_id, "from afar")
        await started
        run = await storage.get_run(run_id)
        assert run.status is RunStatus.CANCELLED
        assert len(stop_checks) < 100_000
    finally:
        await runner.shutdown()
        await other.shutdown()
        await storage.close()
