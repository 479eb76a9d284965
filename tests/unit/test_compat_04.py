"""Code written for pyworkflow-engine 0.4 runs unchanged: step context helpers, context_class,
0.4's YAML storage keys, and logging that prints each line once."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from pyworkflow import (
    FatalError,
    RunStatus,
    StepContext,
    get_step_context,
    get_workflow_events,
    get_workflow_result,
    get_workflow_run,
    hook,
    set_step_context,
    start,
    step,
    workflow,
)
from pyworkflow.config import ConfigurationError, configure_from_yaml, get_storage
from pyworkflow.engine.replay import replay_history
from pyworkflow.model.events import Event, EventType
from pyworkflow.storage.config import config_to_storage
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import Env

REPO_ROOT = Path(__file__).resolve().parents[2]


class Tenant(StepContext):
    tenant: str
    region: str = "eu"
    retries: int = 0


def test_step_context_helpers() -> None:
    ctx = Tenant(tenant="acme")
    moved = ctx.with_updates(region="us", retries=2)
    assert (moved.tenant, moved.region, moved.retries) == ("acme", "us", 2)
    assert ctx.region == "eu"  # the original is unchanged (contexts are immutable)
    assert ctx.to_dict() == {"tenant": "acme", "region": "eu", "retries": 0}
    assert Tenant.from_dict(moved.to_dict()) == moved
    with pytest.raises(ValueError):
        ctx.with_updates(retries="many")  # validated like the fields


@step(name="compat_where")
async def where() -> str:
    ctx = get_step_context()
    assert isinstance(ctx, Tenant)
    return f"{ctx.tenant}@{ctx.region}"


@workflow(name="compat_tenant_flow", context_class=Tenant)
async def tenant_flow(name: str) -> str:
    await set_step_context(Tenant(tenant=name))  # awaited, as 0.4 code does
    return await where()


class Other(StepContext):
    value: int = 0


@workflow(name="compat_wrong_context", context_class=Tenant)
async def wrong_context() -> str:
    try:
        set_step_context(Other())
    except TypeError as exc:
        return str(exc)
    return "accepted"


async def test_context_class_is_accepted_and_enforced(env: Env) -> None:
    assert await env.start(tenant_flow, "acme") is not None
    runs, _ = await env.storage.list_runs()
    from pyworkflow.serialization import loads

    assert loads(runs[0].result) == "acme@eu"
    await env.start(wrong_context)
    runs, _ = await env.storage.list_runs(workflow_name="compat_wrong_context")
    assert "takes a Tenant step context" in loads(runs[0].result)
    with pytest.raises(TypeError, match="StepContext subclass"):

        @workflow(name="compat_bad_context", context_class=dict)
        async def bad() -> None:
            return None


def test_yaml_with_04_storage_keys(tmp_path: Path) -> None:
    config = tmp_path / "pyworkflow.config.yaml"
    config.write_text(f"storage:\n  type: sqlite\n  base_path: {tmp_path / 'data'}\n")
    configure_from_yaml(config)
    storage = get_storage()
    assert isinstance(storage, SQLiteStorageBackend)
    assert Path(storage.db_path) == tmp_path / "data" / "pyworkflow.db"
    file_db = config_to_storage({"type": "sqlite", "base_path": str(tmp_path / "x.db")})
    assert isinstance(file_db, SQLiteStorageBackend)
    assert Path(file_db.db_path) == tmp_path / "x.db"


def test_an_unknown_storage_setting_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown sqlite storage setting.*'dbpath'"):
        config_to_storage({"type": "sqlite", "dbpath": str(tmp_path / "typo.db")})


def test_configure_logging_prints_each_line_once_and_keeps_the_application_s() -> None:
    code = (
        "from loguru import logger\n"
        "from pyworkflow import configure_logging\n"
        "logger.info('app before')\n"
        "configure_logging('INFO')\n"
        "logger.bind().patch(lambda r: r.update(name='pyworkflow.x')).info('hello once')\n"
        "logger.info('app after')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert done.stderr.count("hello once") == 1, done.stderr
    assert "app before" in done.stderr and "app after" in done.stderr, done.stderr


# -- the log of a failed attempt: step.failed, then step.retrying (0.4's shape) -----------------

flaky_calls = {"n": 0}


@step(name="compat_flaky", max_retries=3, retry_delay=[0.01])
async def flaky() -> str:
    flaky_calls["n"] += 1
    if flaky_calls["n"] < 3:
        raise ConnectionError(f"try {flaky_calls['n']} failed")
    return "ok"


@step(name="compat_refused")
async def refused() -> str:
    raise FatalError("card declined")


@workflow(name="compat_flaky_flow")
async def flaky_flow() -> str:
    return await flaky()


@workflow(name="compat_refused_flow")
async def refused_flow() -> str:
    return await refused()


def _step_outcomes(events: list[Event]) -> list[tuple[str, int]]:
    kinds = {"step.started", "step.failed", "step.retrying", "step.completed"}
    return [(e.type.value, e.data["attempt"]) for e in events if e.type.value in kinds]


async def test_each_failed_attempt_logs_step_failed_then_step_retrying(env: Env) -> None:
    await _flaky_log(env)


async def test_a_failed_attempt_on_a_worker_logs_the_same(dispatched_env: Env) -> None:
    await _flaky_log(dispatched_env)


async def _flaky_log(env: Env) -> None:
    flaky_calls["n"] = 0
    run_id = await env.start(flaky_flow)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.COMPLETED
    events = await get_workflow_events(run_id, storage=env.storage)
    assert _step_outcomes(events) == [
        ("step.started", 1),
        ("step.failed", 1),
        ("step.retrying", 1),
        ("step.started", 2),
        ("step.failed", 2),
        ("step.retrying", 2),
        ("step.started", 3),
        ("step.completed", 3),
    ]
    failed = next(e for e in events if e.type is EventType.STEP_FAILED)
    assert failed.data["error"] == "try 1 failed"
    assert failed.data["error_type"].endswith("ConnectionError")
    assert failed.data["is_retryable"] is True and failed.data["attempt"] == 1
    # the log replays to the same result, and so does one written before step.failed was
    # logged per attempt (old logs keep working)
    assert await replay_history(flaky_flow, events) == "ok"
    old_shape = [e for e in events if not e.data.get("retrying")]
    for number, event in enumerate(old_shape, start=1):
        event.sequence = number
    assert await replay_history(flaky_flow, old_shape) == "ok"


async def test_a_final_failure_says_it_is_not_retryable(env: Env) -> None:
    with pytest.raises(FatalError, match="card declined"):
        await env.start(refused_flow)
    runs, _ = await env.storage.list_runs(workflow_name="compat_refused_flow")
    events = await get_workflow_events(runs[0].run_id, storage=env.storage)
    failed = [e for e in events if e.type is EventType.STEP_FAILED]
    assert len(failed) == 1
    assert failed[0].data["is_retryable"] is False and failed[0].data["attempt"] == 1
    assert failed[0].data["error"] == "card declined"


# -- a transient workflow runs its retries inside start(), as 0.4 did ----------------------------


@workflow(name="compat_transient_flaky", durable=False)
async def transient_flaky() -> str:
    return await flaky()


@step(name="compat_always_down", max_retries=2, retry_delay=[0.01])
async def always_down() -> str:
    raise ConnectionError("still down")


@workflow(name="compat_transient_down", durable=False)
async def transient_down() -> str:
    return await always_down()


async def test_a_transient_run_retries_its_steps_inside_start() -> None:
    flaky_calls["n"] = 0
    run_id = await start(transient_flaky)
    assert flaky_calls["n"] == 3  # (not: returned after the first attempt)
    run = await get_workflow_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, timeout=5) == "ok"


async def test_a_transient_run_whose_retries_run_out_raises_from_start() -> None:
    with pytest.raises(ConnectionError, match="still down"):
        await start(transient_down)


@step(name="compat_slow_and_down", max_retries=5, retry_delay=[0.05])
async def slow_and_down() -> str:
    raise ConnectionError("down")


@workflow(name="compat_transient_gives_up", durable=False)
async def transient_gives_up() -> str:
    # the workflow stops waiting: the step's pending retry is awaited by nobody
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(slow_and_down(), timeout=0.01)
    return await hook("approve")


async def test_a_transient_run_that_gave_up_on_a_retrying_step_returns_from_start() -> None:
    run_id = await asyncio.wait_for(start(transient_gives_up), timeout=30)
    run = await get_workflow_run(run_id)
    assert run is not None and run.status is RunStatus.SUSPENDED  # waiting on its hook
