"""Code written for pyworkflow-engine 0.3/0.4 runs unchanged: quick start, testing, config, names.

The snippets below are the old documentation's, kept as users wrote them (``storage.get_run``,
``json.loads(run.result)``, ``from pyworkflow.storage.schemas import RunStatus``). Names that
docs/api.md promises but that have not landed yet are listed in ``PENDING`` (and not checked);
everything else must import. Take a name out of ``PENDING`` when it lands.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pyworkflow import (
    ConfigurationError,
    configure,
    configure_from_yaml,
    get_config,
    get_runtime,
    get_storage,
    get_workflow_result,
    reset_config,
    sleep,
    start,
    step,
    workflow,
)
from pyworkflow.config import Config
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    ChildWorkflowError,
    ChildWorkflowFailedError,
    EventLimitExceededError,
    FatalError,
    RetryableError,
    WorkflowError,
)
from pyworkflow.model.schemas import RunStatus
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage import InMemoryStorageBackend, SQLiteStorageBackend, WorkflowRun

# -- the old quick start and testing guide ----------------------------------------------------


@step
async def compat_double(x: int) -> int:
    return x * 2


@step(max_retries=3, retry_delay="exponential")
async def compat_add(x: int, y: int) -> int:
    return x + y


@workflow
async def compat_bare(x: int) -> int:
    return await compat_double(x)


@workflow(name="compat_named", durable=True)
async def compat_math(x: int) -> dict[str, int]:
    doubled = await compat_double(x)
    return {"doubled": doubled, "sum": await compat_add(doubled, 1)}


@workflow()
async def compat_sleepy(x: int) -> int:
    await sleep(0)
    return await compat_double(x)


async def _stop_local_runtime() -> None:
    """Stop the timer service ``start`` left running on this test's event loop."""
    runtime = get_runtime()
    assert isinstance(runtime, LocalRuntime)
    await runtime.shutdown()


@pytest.fixture
async def storage() -> AsyncIterator[InMemoryStorageBackend]:
    """The old testing guide's fixture, plus stopping the runtime's timer service."""
    backend = InMemoryStorageBackend()
    configure(storage=backend, default_durable=True)
    yield backend
    await _stop_local_runtime()
    reset_config()


async def test_old_testing_guide_snippet(storage: InMemoryStorageBackend) -> None:
    run_id = await start(compat_math, 5)
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.COMPLETED
    assert json.loads(run.result) == {"doubled": 10, "sum": 11}  # JSON text, not wrapped in a list
    assert run.workflow_name == "compat_named"


async def test_decorators_without_parentheses(storage: InMemoryStorageBackend) -> None:
    run_id = await start(compat_bare, 5)
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.COMPLETED
    assert run.result == "10"
    assert await compat_double(4) == 8  # a step called outside a workflow just runs


async def test_zero_sleep_run_finishes_and_result_is_decoded(
    storage: InMemoryStorageBackend,
) -> None:
    run_id = await start(compat_sleepy, 3)
    assert await get_workflow_result(run_id, timeout=10) == 6
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.COMPLETED and json.loads(run.result) == 6


# -- names and values api.md fixes -------------------------------------------------------------

NAMES = {
    "pyworkflow": (
        "workflow step start resume get_workflow_run get_workflow_run_by_idempotency_key"
        " get_workflow_events get_workflow_result cancel_workflow get_workflow_chain configure"
        " configure_from_yaml get_config reset_config get_storage configure_logging sleep hook"
        " define_hook resume_hook start_child_workflow continue_as_new shield now random uuid4"
        " StepContext get_step_context has_step_context set_step_context save_step_checkpoint"
        " load_step_checkpoint delete_step_checkpoint scheduled_workflow create_schedule"
        " get_schedule list_schedules update_schedule pause_schedule resume_schedule"
        " delete_schedule trigger_schedule backfill_schedule ScheduleSpec CalendarSpec"
        " OverlapPolicy ResumeResult WorkflowRun RunStatus Event EventType WorkflowError"
        " FatalError RetryableError ConfigurationError"
    ),
    "pyworkflow.core.exceptions": (
        "WorkflowError FatalError RetryableError CancellationError WorkflowNotFoundError"
        " WorkflowAlreadyRunningError WorkflowTimeoutError HookNotFoundError HookExpiredError"
        " HookAlreadyReceivedError InvalidTokenError SerializationError ChildWorkflowError"
        " ChildWorkflowFailedError MaxNestingDepthError EventLimitExceededError"
        " NonDeterminismError ConfigurationError SuspensionSignal"
    ),
    "pyworkflow.storage": (
        "StorageBackend InMemoryStorageBackend FileStorageBackend SQLiteStorageBackend"
        " PostgresStorageBackend RedisStorageBackend WorkflowRun RunStatus Hook HookStatus"
        " config_to_storage storage_to_config"
    ),
    "pyworkflow.core": "cancel_workflow",
    "pyworkflow.engine.events": "Event EventType",
    "pyworkflow.storage.schemas": "WorkflowRun RunStatus Hook HookStatus",
}

# Promised by docs/api.md, not implemented yet in this repository (add a name here until it
# lands; none is pending now).
PENDING: set[tuple[str, str]] = set()


def _name_params() -> list[object]:
    params: list[object] = []
    for module, names in NAMES.items():
        for name in names.split():
            if (module, name) not in PENDING:  # pending names land with their issues
                params.append(pytest.param(module, name, id=f"{module}.{name}"))
    return params


@pytest.mark.parametrize(("module", "name"), _name_params())
def test_api_md_name_is_importable(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_storage_modules_and_top_level_share_the_same_objects() -> None:
    import pyworkflow
    import pyworkflow.model.schemas as schemas

    assert pyworkflow.RunStatus is schemas.RunStatus is RunStatus
    assert pyworkflow.WorkflowRun is WorkflowRun
    assert pyworkflow.Event is Event and pyworkflow.EventType is EventType


def test_exception_hierarchy() -> None:
    assert issubclass(FatalError, WorkflowError) and issubclass(RetryableError, WorkflowError)
    assert issubclass(ChildWorkflowFailedError, ChildWorkflowError)
    assert issubclass(EventLimitExceededError, FatalError)
    error = RetryableError("busy", retry_after="5s")
    assert error.retry_after == "5s" and str(error) == "busy"


def test_run_status_and_event_type_values() -> None:
    assert [s.value for s in RunStatus] == [
        "pending",
        "running",
        "suspended",
        "completed",
        "failed",
        "interrupted",
        "cancelled",
        "continued_as_new",
    ]
    expected = {
        *(f"workflow.{x}" for x in ["started", "completed", "failed", "suspended", "cancelled"]),
        "workflow.continued_as_new",
        "workflow.interrupted",
        *(f"step.{x}" for x in ["started", "completed", "failed", "retrying"]),
        "sleep.started",
        "sleep.completed",
        *(f"hook.{x}" for x in ["created", "received", "expired", "processed"]),
        "cancellation.requested",
        *(f"child_workflow.{x}" for x in ["started", "completed", "failed", "cancelled"]),
    }
    # The contract's values all stay; hook.announced (on_created called) and
    # child_workflow.cancel_requested (handle.cancel() in the parent) are this engine's own.
    assert {t.value for t in EventType} == expected | {
        "hook.announced",
        "child_workflow.cancel_requested",
    }


def test_record_fields() -> None:
    run_fields = {f.name for f in dataclasses.fields(WorkflowRun)}
    promised = [
        "run_id",
        "workflow_name",
        "status",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "input_args",
        "input_kwargs",
        "result",
        "error",
        "idempotency_key",
        "max_duration",
        "context",
        "recovery_attempts",
        "max_recovery_attempts",
        "recover_on_worker_loss",
        "parent_run_id",
        "nesting_depth",
        "continued_from_run_id",
        "continued_to_run_id",
    ]
    assert set(promised) <= run_fields
    promised_event = {"event_id", "run_id", "type", "timestamp", "data", "sequence"}
    assert promised_event <= set(inspect.signature(Event).parameters)
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    event = Event(
        event_id="r:1", run_id="r", type="step.started", timestamp=at, data={"a": 1}, sequence=1
    )
    assert {name: getattr(event, name) for name in promised_event} == {
        "event_id": "r:1",
        "run_id": "r",
        "type": EventType.STEP_STARTED,
        "timestamp": at,
        "data": {"a": 1},
        "sequence": 1,
    }


# -- configuration -------------------------------------------------------------------------------


async def test_configure_from_yaml_with_sqlite_storage(tmp_path: Path) -> None:
    db = tmp_path / "data" / "workflows.db"
    settings = tmp_path / "pyworkflow.config.yaml"
    settings.write_text(f"runtime: local\nstorage:\n  type: sqlite\n  path: {db}\n")
    configure_from_yaml(settings)
    backend = get_storage()
    assert isinstance(backend, SQLiteStorageBackend)
    assert Path(backend.db_path) == db
    assert get_config().default_runtime == "local"
    try:
        run_id = await start(compat_bare, 21)
        run = await backend.get_run(run_id)
        assert run is not None and run.status == RunStatus.COMPLETED and run.result == "42"
        assert db.exists()
    finally:
        await _stop_local_runtime()
        await backend.close()


def test_configure_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown_key"):
        configure(unknown_key=1)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("lease_ttl", "half a minute", "valid number"),
        ("lease_ttl", 0, "greater than 0"),
        ("timer_poll_interval", -1.0, "greater than 0"),
        ("event_limit", 2.5, "valid integer"),
        ("event_limit", 0, "greater than or equal to 1"),
        ("max_nesting_depth", -1, "greater than or equal to 0"),
        ("logical_order", "sometimes", "valid boolean"),
        ("default_durable", [True], "valid boolean"),
        ("max_value_size", "big", "valid integer"),
    ],
)
def test_configure_refuses_a_bad_value_naming_the_key_and_keeps_the_old_one(
    key: str, value: Any, says: str
) -> None:
    before = getattr(get_config(), key)
    with pytest.raises(ConfigurationError, match=f"configuration key '{key}': .*{says}") as bad:
        configure(**{key: value})
    assert repr(value) in str(bad.value)
    assert getattr(get_config(), key) == before


def test_configuration_values_from_yaml_text_are_converted(tmp_path: Path) -> None:
    """What a file or an environment variable gives as text means what it says (``"false"``
    is False, not a true non-empty string)."""
    settings = tmp_path / "pyworkflow.config.yaml"
    settings.write_text(
        "logical_order: 'false'\ninline_children: 'no'\nlease_ttl: '12.5'\nevent_limit: '900'\n"
    )
    configure_from_yaml(settings)
    config = get_config()
    assert config.logical_order is False and config.inline_children is False
    assert config.lease_ttl == 12.5 and config.event_limit == 900


def test_configure_from_yaml_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        configure_from_yaml(tmp_path / "nope.yaml")


def test_reset_config_restores_defaults() -> None:
    defaults = dataclasses.asdict(Config())
    configure(
        storage=InMemoryStorageBackend(), default_durable=False, lease_ttl=5.0, runtime="local"
    )
    assert get_config().default_durable is False and get_config().lease_ttl == 5.0
    reset_config()
    assert dataclasses.asdict(get_config()) == defaults
    assert get_config().storage is None and get_config().default_durable is True
