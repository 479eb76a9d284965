"""Step context, step info, checkpoints, non-durable runs, and the real-clock timer service."""

from __future__ import annotations

import pytest

from pyworkflow import (
    RunStatus,
    StepContext,
    configure,
    configure_logging,
    get_step_context,
    get_step_info,
    get_workflow_result,
    get_workflow_run,
    has_step_context,
    load_step_checkpoint,
    save_step_checkpoint,
    set_step_context,
    sleep,
    start,
    step,
    workflow,
)
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.memory import InMemoryStorageBackend
from tests.conftest import Env


class Tenant(StepContext):
    tenant: str


seen: list[object] = []


@step(max_retries=2, retry_delay="0s")
async def tenant_step() -> str:
    info = get_step_info()
    seen.append((info.step_id, info.attempt, info.idempotency_key))
    progress = await load_step_checkpoint()
    if progress is None:
        await save_step_checkpoint({"done": 1})
        raise ConnectionError("crash after the first half")
    return f"{get_step_context().tenant}:{progress['done']}"


@workflow()
async def with_context() -> list[object]:
    before = has_step_context()
    set_step_context(Tenant(tenant="acme"))
    return [before, has_step_context(), get_step_context().tenant, await tenant_step()]


async def test_step_context_and_checkpoints_survive_a_retry(env: Env) -> None:
    seen.clear()
    run_id = await env.start(with_context)
    assert await get_workflow_result(run_id, storage=env.storage) == [False, True, "acme", "acme:1"]
    first, second = seen
    assert first[1:] == (1, f"{run_id}:step:tenant_step:1")
    assert second[1:] == (2, first[2])  # same idempotency key on every attempt


async def test_step_context_rules() -> None:
    with pytest.raises(RuntimeError, match="inside a workflow"):
        set_step_context(Tenant(tenant="x"))
    with pytest.raises(RuntimeError, match="inside a step"):
        get_step_info()
    with pytest.raises(TypeError):

        @workflow(name="bad_context_type")
        async def bad() -> None:
            set_step_context({"tenant": "x"})  # type: ignore[arg-type]

        await bad()


@step()
async def quick() -> str:
    return "quick"


@workflow(durable=False)
async def transient() -> str:
    return await quick()


async def test_non_durable_runs_use_a_transient_store() -> None:
    durable_store = InMemoryStorageBackend()
    configure(storage=durable_store)
    run_id = await start(transient)
    assert await durable_store.get_run(run_id) is None
    run = await get_workflow_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id) == "quick"


@workflow()
async def short_nap() -> str:
    await sleep(0.2)
    return "awake"


async def test_the_timer_service_wakes_sleeping_runs_on_the_wall_clock() -> None:
    storage = InMemoryStorageBackend()
    runtime = LocalRuntime(poll_interval=0.05)
    try:
        # The first activation ends with the run asleep (what the runtime returned then, not
        # the run's status later: on a busy machine the timer may have fired since).
        run_id, first = await runtime.start(
            workflow_definition_of(short_nap), (), {}, storage=storage
        )
        assert first is not None and first.status is RunStatus.SUSPENDED
        # the run finishes on its own: nobody resumes it; the wait only polls with a deadline
        assert await get_workflow_result(run_id, timeout=10, storage=storage) == "awake"
    finally:
        await runtime.shutdown()


@step(max_retries=1, retry_delay="0s", name="logged_flaky")
async def logged_flaky() -> str:
    if get_step_info().attempt == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@workflow(name="logged_workflow")
async def logged_workflow() -> str:
    return await logged_flaky()


async def test_configure_logging_sends_engine_logs_to_a_file(env: Env, tmp_path) -> None:
    log_file = tmp_path / "pyworkflow.log"
    configure_logging(level="INFO", log_file=str(log_file), show_context=True)
    try:
        run_id = await env.start(logged_workflow)
        assert await get_workflow_result(run_id, storage=env.storage) == "ok"
    finally:
        configure_logging(level="ERROR")
    text = log_file.read_text()
    assert "step logged_flaky attempt 1 failed (first attempt fails)" in text
    assert run_id in text  # run_id is bound on the record


@workflow()
async def awaiting_set_step_context() -> str:
    await set_step_context(Tenant(tenant="awaited"))  # as 0.4 code wrote it (a coroutine there)
    return str(get_step_context().tenant)


async def test_set_step_context_can_be_awaited_as_in_0_4(env: Env) -> None:
    run_id = await env.start(awaiting_set_step_context)
    assert await get_workflow_result(run_id, storage=env.storage) == "awaited"
