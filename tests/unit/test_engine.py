"""The engine on the local runtime: steps, retries, sleeps, asyncio inside workflows, replay."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from pyworkflow import (
    EventLimitExceededError,
    EventType,
    FatalError,
    RetryableError,
    RunStatus,
    SerializationError,
    StepTimeoutError,
    StepValidationError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
    get_workflow_events,
    get_workflow_result,
    now,
    random,
    resume,
    sleep,
    step,
    uuid4,
    workflow,
)
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.leases import STARTING
from pyworkflow.engine.replay import replay_history
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.memory import InMemoryStorageBackend
from tests.conftest import Env, ManualClock, event_types
from tests.polling import until

calls: dict[str, int] = {}


def bump(name: str) -> int:
    calls[name] = calls.get(name, 0) + 1
    return calls[name]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@step()
async def double(x: int) -> int:
    bump("double")
    return x * 2


@step()
async def record(tag: str) -> str:
    bump(tag)
    return tag


@workflow()
async def two_steps(x: int) -> int:
    y = await double(x)
    return await double(y)


async def test_steps_run_and_record_one_started_and_one_completed_each(env: Env) -> None:
    run_id = await env.start(two_steps, 3)
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == 12
    events = await get_workflow_events(run_id, storage=env.storage)
    assert event_types(events) == [
        "workflow.started",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "workflow.completed",
    ]
    assert [e.sequence for e in events] == list(range(1, 7))
    assert [e.data.get("command_id") for e in events[1:5]] == [
        "step:double:1",
        "step:double:1",
        "step:double:2",
        "step:double:2",
    ]
    assert run.result == "12"


@workflow()
async def same_step_twice() -> list[str]:
    return [await record("same"), await record("same")]


async def test_same_step_with_same_arguments_runs_twice(env: Env) -> None:
    run_id = await env.start(same_step_twice)
    assert await get_workflow_result(run_id, storage=env.storage) == ["same", "same"]
    assert calls["same"] == 2


@workflow()
async def sleeper() -> str:
    await record("before")
    await sleep("1h30m")
    await record("after")
    return "done"


async def test_sleep_is_a_durable_timer_and_resume_never_reruns_completed_steps(env: Env) -> None:
    run_id = await env.start(sleeper)
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.SUSPENDED
    timer = await env.storage.get_timer(run_id)
    assert timer is not None and timer.fire_at == env.clock.now() + timedelta(hours=1, minutes=30)
    # resuming early does nothing: the timer is not due
    assert await resume(run_id, storage=env.storage) is None
    env.engine.evict()  # force a cold replay from storage
    env.clock.advance(90 * 60)
    assert await resume(run_id, storage=env.storage) == "done"
    assert calls == {"before": 1, "after": 1}
    assert await resume(run_id, storage=env.storage) == "done"  # idempotent
    assert calls == {"before": 1, "after": 1}
    events = await get_workflow_events(run_id, storage=env.storage)
    completed = next(e for e in events if e.type is EventType.SLEEP_COMPLETED)
    assert completed.timestamp >= timer.fire_at


async def test_timer_service_fires_due_timers(env: Env) -> None:
    run_id = await env.start(sleeper)
    env.clock.advance(5400)
    assert await env.engine.fire_due_timers() == [run_id]
    await env.settle()
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.COMPLETED
    assert await env.engine.fire_due_timers() == []


async def test_an_engine_keeps_no_per_run_state_once_its_runs_are_done(env: Env) -> None:
    # Activations serialize per run with a lock; a lock no one holds or waits for must go,
    # or a long-lived worker keeps one for every run it ever activated.
    run_ids = [await env.start(sleeper) for _ in range(5)]
    env.clock.advance(5400)
    assert sorted(await env.engine.fire_due_timers()) == sorted(run_ids)
    await env.settle()
    for run_id in run_ids:
        assert (await env.storage.get_run(run_id)).status is RunStatus.COMPLETED
    assert env.engine._locks == {}
    assert not env.engine.active and not env.engine._cache


@pytest.mark.parametrize(
    ("retry_delay", "expected"),
    [
        ("exponential", [1, 2, 4]),
        ("fixed", [60, 60, 60]),
        ("5s", [5, 5, 5]),
        (7, [7, 7, 7]),
        (timedelta(seconds=3), [3, 3, 3]),
        (["1s", "10s"], [1, 10, 10]),
    ],
)
async def test_retry_delay_forms_are_honoured(
    env: Env, retry_delay: object, expected: list
) -> None:
    @step(name=f"always_fails_{expected}_{retry_delay!s}", max_retries=3, retry_delay=retry_delay)
    async def always_fails() -> None:
        raise ValueError("nope")

    @workflow(name=f"retrying_{expected}_{retry_delay!s}")
    async def retrying() -> None:
        await always_fails()

    run_id = await env.start(retrying)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.FAILED
    events = await get_workflow_events(run_id, storage=env.storage)
    retrying_events = [e for e in events if e.type is EventType.STEP_RETRYING]
    delays = [
        (
            __import__("datetime").datetime.fromisoformat(e.data["resume_at"]) - e.timestamp
        ).total_seconds()
        for e in retrying_events
    ]
    assert delays == expected
    assert [e.data["attempt"] for e in events if e.type is EventType.STEP_STARTED] == [1, 2, 3, 4]
    assert events[-1].type is EventType.WORKFLOW_FAILED
    with pytest.raises(ValueError, match="nope"):
        await get_workflow_result(run_id, storage=env.storage)


async def test_exponential_delay_is_capped_at_300s() -> None:
    from pyworkflow.core.retry import RetryPolicy

    policy = RetryPolicy.from_options(20, "exponential")
    assert [policy.delay_before(n).total_seconds() for n in range(2, 13)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
        300,
    ]


@pytest.mark.parametrize("retry_after", [30, "30s", timedelta(seconds=30), "0.5m"])
async def test_retryable_error_retry_after_overrides_policy(env: Env, retry_after: object) -> None:
    @step(name=f"flaky_after_{retry_after!s}", max_retries=2)
    async def flaky() -> str:
        if bump(f"flaky{retry_after}") == 1:
            raise RetryableError("later", retry_after=retry_after)
        return "ok"

    @workflow(name=f"wf_after_{retry_after!s}")
    async def wf() -> str:
        return await flaky()

    run_id = await env.start(wf)
    timer = await env.storage.get_timer(run_id)
    assert timer is not None and timer.fire_at == env.clock.now() + timedelta(seconds=30)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.COMPLETED and run.result == '"ok"'


@step(max_retries=5)
async def fatal_step() -> None:
    bump("fatal")
    raise FatalError("card declined")


@workflow()
async def fatal_wf() -> None:
    await fatal_step()


async def test_fatal_error_is_not_retried_and_start_reraises(env: Env) -> None:
    with pytest.raises(FatalError, match="card declined") as raised:
        await env.start(fatal_wf)
    assert calls["fatal"] == 1
    runs, _ = await env.storage.list_runs()
    assert runs[0].status is RunStatus.FAILED
    assert runs[0].error == "card declined"
    # The error names the run it ended, so the caller can find it.
    assert raised.value.run_id == runs[0].run_id  # type: ignore[attr-defined]
    assert any(runs[0].run_id in note for note in raised.value.__notes__)


@dataclass(frozen=True)
class FrozenRefusal(Exception):  # noqa: N818 - a user's error class, named as users name them
    code: int


@step(name="frozen_refusal_step", max_retries=0)
async def frozen_refusal_step() -> None:
    raise FrozenRefusal(7)


@workflow(name="frozen_refusal_wf")
async def frozen_refusal_wf() -> None:
    await frozen_refusal_step()


async def test_start_reraises_an_error_that_takes_no_attributes_as_it_is(env: Env) -> None:
    with pytest.raises(FrozenRefusal) as raised:
        await env.start(frozen_refusal_wf)
    assert raised.value.code == 7
    assert not hasattr(raised.value, "run_id")


@step(timeout="1s", max_retries=1, retry_delay="0s")
async def slow_step() -> str:
    if bump("slow") == 1:
        await asyncio.sleep(5)
    return "fast enough"


@workflow()
async def timeout_wf() -> str:
    return await slow_step()


async def test_step_timeout_is_enforced_and_retried(env: Env) -> None:
    run_id = await env.start(timeout_wf)
    assert await get_workflow_result(run_id, storage=env.storage) == "fast enough"
    events = await get_workflow_events(run_id, storage=env.storage)
    retrying = [e for e in events if e.type is EventType.STEP_RETRYING]
    assert len(retrying) == 1
    assert retrying[0].data["error_type"].endswith(StepTimeoutError.__qualname__)


@workflow()
async def swallowing() -> str:
    try:
        await sleep(10)
    except Exception:  # noqa: BLE001 - the point: user code catching broadly
        return "swallowed"
    try:
        result = await double(1)
    except Exception:  # noqa: BLE001
        return "swallowed step"
    return f"ok {result}"


async def test_try_except_exception_around_sleep_and_step_does_not_break_the_workflow(
    env: Env,
) -> None:
    run_id = await env.start(swallowing)
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    run = await env.run_until_done(run_id)
    assert run.result == '"ok 2"'


@workflow()
async def gathering() -> list[str]:
    return list(await asyncio.gather(record("a"), record("b"), record("c")))


async def test_gather_of_three_steps_is_deterministic_on_replay(env: Env) -> None:
    run_id = await env.start(gathering)
    assert await get_workflow_result(run_id, storage=env.storage) == ["a", "b", "c"]
    events = await get_workflow_events(run_id, storage=env.storage)
    ids = sorted({e.data["command_id"] for e in events if e.type is EventType.STEP_COMPLETED})
    assert ids == ["step:record:1", "step:record:2", "step:record:3"]
    for _ in range(3):
        assert await replay_history(gathering, events) == ["a", "b", "c"]
    assert calls == {"a": 1, "b": 1, "c": 1}


@workflow()
async def tasks_and_wait_for() -> list[object]:
    task = asyncio.create_task(double(5))
    try:
        await asyncio.wait_for(sleep("1d"), timeout=60)
        timed_out = False
    except TimeoutError:
        timed_out = True
    done, _ = await asyncio.wait([asyncio.create_task(double(1))])
    return [await task, timed_out, next(iter(done)).result()]


async def test_create_task_wait_for_and_wait_work_inside_workflows(env: Env) -> None:
    run_id = await env.start(tasks_and_wait_for)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == [10, True, 2]
    events = await get_workflow_events(run_id, storage=env.storage)
    assert await replay_history(tasks_and_wait_for, events) == [10, True, 2]
    # the wait_for timer fired after 60s, not the one-day sleep
    assert env.clock.now() - events[0].timestamp == timedelta(seconds=60)


@workflow()
async def deterministic_helpers() -> list[str]:
    first = [now().isoformat(), str(uuid4()), str(random())]
    await sleep(5)
    return [*first, now().isoformat()]


async def test_now_random_uuid4_replay_identically(env: Env) -> None:
    run_id = await env.start(deterministic_helpers)
    run = await env.run_until_done(run_id)
    values = await get_workflow_result(run_id, storage=env.storage)
    assert values[0] == run.started_at.isoformat()
    events = await get_workflow_events(run_id, storage=env.storage)
    assert await replay_history(deterministic_helpers, events) == values
    assert values[3] == (run.started_at + timedelta(seconds=5)).isoformat()


async def test_idempotency_key_gives_the_same_run(env: Env) -> None:
    first = await env.start(two_steps, 1, idempotency_key="order-1")
    second = await env.start(two_steps, 1, idempotency_key="order-1")
    assert first == second
    assert calls["double"] == 2
    from pyworkflow import get_workflow_run_by_idempotency_key

    run = await get_workflow_run_by_idempotency_key("order-1", storage=env.storage)
    assert run is not None and run.run_id == first


async def test_unknown_run_id_raises_clear_error(env: Env) -> None:
    with pytest.raises(WorkflowNotFoundError, match="no-such-run"):
        await resume("no-such-run", storage=env.storage)
    with pytest.raises(WorkflowNotFoundError, match="no-such-run"):
        await get_workflow_result("no-such-run", storage=env.storage)


async def test_unknown_workflow_raises_clear_error(env: Env) -> None:
    async def not_a_workflow() -> None:
        return None

    with pytest.raises(WorkflowNotFoundError, match="not_a_workflow"):
        await env.start(not_a_workflow)
    with pytest.raises(WorkflowNotFoundError, match="nope"):
        await env.start("nope")
    assert (await env.storage.list_runs())[0] == []


async def test_non_serializable_argument_names_it_and_records_nothing(env: Env) -> None:
    from pyworkflow import configure

    configure(allow_pickle=False)
    with pytest.raises(SerializationError, match="argument 1"):
        await env.start(two_steps, object())
    assert (await env.storage.list_runs())[0] == []


async def test_wrong_arguments_to_a_workflow_record_nothing(env: Env) -> None:
    with pytest.raises(TypeError, match="two_steps"):
        await env.start(two_steps, 1, 2, 3)
    assert (await env.storage.list_runs())[0] == []


@workflow()
async def bad_sleep() -> None:
    await sleep("soon")


async def test_invalid_duration_fails_clearly_and_records_no_sleep(env: Env) -> None:
    with pytest.raises(ValueError, match="soon"):
        await env.start(bad_sleep)
    runs, _ = await env.storage.list_runs()
    events = await env.storage.get_events(runs[0].run_id)
    assert EventType.SLEEP_STARTED not in {e.type for e in events}


@step()
async def typed_step(count: int) -> int:
    return count


@workflow()
async def validation_wf() -> int:
    return await typed_step("not a number")  # type: ignore[arg-type]


async def test_step_arguments_are_validated_as_fatal_errors(env: Env) -> None:
    with pytest.raises(StepValidationError, match="typed_step"):
        await env.start(validation_wf)
    assert isinstance(StepValidationError("x"), FatalError)


async def test_step_called_outside_a_workflow_just_runs() -> None:
    assert await double(21) == 42
    with pytest.raises(StepValidationError):
        await typed_step("x")  # type: ignore[arg-type]


@workflow(max_duration="1h")
async def too_long() -> None:
    await sleep("2h")


async def test_max_duration_is_enforced(env: Env) -> None:
    run_id = await env.start(too_long)
    timer = await env.storage.get_timer(run_id)
    assert timer is not None and timer.fire_at == env.clock.now() + timedelta(hours=1)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.FAILED
    with pytest.raises(WorkflowTimeoutError, match="max_duration"):
        await get_workflow_result(run_id, storage=env.storage)
    # The engine ended the run while the code slept: replaying the history is not a divergence.
    events = await get_workflow_events(run_id, storage=env.storage)
    assert events[-1].data["imposed"] is True
    with pytest.raises(WorkflowTimeoutError, match="max_duration"):
        await replay_history(too_long, events)


async def test_event_limit_fails_the_run(env: Env) -> None:
    env.runtime.event_limit = 6
    env.runtime._engines.clear()

    @workflow(name="many_steps_limit")
    async def many() -> None:
        for i in range(10):
            await double(i)

    with pytest.raises(EventLimitExceededError):
        await env.start(many)


def test_decorator_validation() -> None:
    with pytest.raises(ValueError, match="at most 3 tags"):

        @workflow(tags=["a", "b", "c", "d"])
        async def tagged() -> None: ...

    with pytest.raises(ValueError, match="already registered"):

        @step(name="double")
        async def other() -> None: ...

    with pytest.raises(ValueError, match="max_retries"):

        @step(max_retries=-1)
        async def negative() -> None: ...

    with pytest.raises(ValueError, match="retry_delay"):

        @step(retry_delay="sometimes")
        async def bad_delay() -> None: ...


@workflow
async def bare_decorated() -> str:
    return await bare_step()


@step
async def bare_step() -> str:
    return "bare"


async def test_decorators_work_without_parentheses(env: Env) -> None:
    run_id = await env.start(bare_decorated)
    assert await get_workflow_result(run_id, storage=env.storage) == "bare"


@step()
def sync_step(x: int) -> int:
    return x + 100


@workflow()
async def uses_sync_step() -> int:
    return await sync_step(1)


async def test_sync_step_functions_run_in_a_thread(env: Env) -> None:
    run_id = await env.start(uses_sync_step)
    assert await get_workflow_result(run_id, storage=env.storage) == 101


async def test_get_workflow_result_times_out(env: Env) -> None:
    run_id = await env.start(sleeper)
    with pytest.raises(WorkflowTimeoutError):
        await get_workflow_result(run_id, timeout=0.05, storage=env.storage)
    # The wait left nothing behind in the engine (the run may finish in another process).
    assert env.engine._finished == {}
    env.clock.advance(5400)
    await env.engine.fire_due_timers()
    assert await get_workflow_result(run_id, timeout=5, storage=env.storage) == "done"
    assert env.engine._finished == {}


lease_seen: list[str | None] = []


@step(name="lease_reporting_step")
async def report_lease(storage_box: list) -> str:
    run = await storage_box[0].get_run(storage_box[1])
    lease_seen.append(run.lease_owner)
    return "done"


async def test_a_step_runs_only_once_its_activation_holds_the_run(clock: ManualClock) -> None:
    """A run created by one process (Celery: the caller) and activated by another: the worker
    takes the lease before the step starts, so nobody's sweeper takes the run mid-step."""
    storage = InMemoryStorageBackend()
    box: list = [storage]

    @workflow(name="lease_taking_workflow")
    async def lease_taking() -> str:
        return await report_lease(box)

    caller = LocalRuntime(clock=clock, poll_interval=3600, owner="caller")
    worker = LocalRuntime(clock=clock, poll_interval=3600, owner="worker")
    try:
        run, _ = await caller.engine_for(storage).start_run(
            workflow_definition_of(lease_taking), (), {}
        )
        assert run.lease_owner == STARTING  # a reservation: the caller does not activate it
        box.append(run.run_id)
        lease_seen.clear()
        outcome = await worker.resume(run.run_id, storage=storage)
        assert outcome.status is RunStatus.COMPLETED
        assert lease_seen == ["worker"]
    finally:
        await caller.shutdown()
        await worker.shutdown()


_long_step_gate: list[asyncio.Event] = []


@step(name="service_long_step")
async def long_step() -> str:
    await _long_step_gate[0].wait()
    return "done"


@workflow(name="service_long_workflow")
async def long_workflow() -> str:
    return await long_step()


async def test_the_local_service_renews_leases_whatever_its_poll_interval() -> None:
    """Renewals run every lease_ttl / 3 even when timers are polled once an hour: a long step
    must not let its run's lease lapse (a sweeper elsewhere would start a second activation)."""
    storage = InMemoryStorageBackend()
    runtime = LocalRuntime(poll_interval=3600, lease_ttl=0.3)
    _long_step_gate[:] = [asyncio.Event()]
    try:
        run, _ = await runtime.engine_for(storage).start_run(
            workflow_definition_of(long_workflow), (), {}, activate_here=True
        )
        assert run.lease_expires_at is not None
        first_expiry = run.lease_expires_at
        resumed = asyncio.ensure_future(runtime.resume(run.run_id, storage=storage))

        async def renewed_twice_over() -> bool:
            now = await storage.get_run(run.run_id)
            assert now is not None and now.lease_owner == runtime.owner
            return now.lease_expires_at > first_expiry + timedelta(seconds=0.6)

        await until(renewed_twice_over, "the lease to be renewed while the step runs", 20)
        _long_step_gate[0].set()
        assert (await resumed).status is RunStatus.COMPLETED
        types = event_types(await storage.get_events(run.run_id))
        assert EventType.WORKFLOW_INTERRUPTED.value not in types
    finally:
        _long_step_gate[0].set()
        await runtime.shutdown()
