"""PyWorkflow: durable, event-sourced workflows written as plain async Python.

Everything users need is importable from here; see ``docs/`` (``docs/api.md``: the contract).
"""

from __future__ import annotations

from pyworkflow.api import (
    ResumeResult,
    cancel_workflow,
    get_runtime,
    get_workflow_chain,
    get_workflow_events,
    get_workflow_result,
    get_workflow_run,
    get_workflow_run_by_idempotency_key,
    resume,
    resume_hook,
    start,
)
from pyworkflow.config import (
    Config,
    configure,
    configure_from_yaml,
    get_config,
    get_storage,
    reset_config,
)
from pyworkflow.context import (
    StepContext,
    StepInfo,
    delete_step_checkpoint,
    get_step_context,
    get_step_info,
    has_step_context,
    load_step_checkpoint,
    save_step_checkpoint,
    set_step_context,
)
from pyworkflow.core.step import step
from pyworkflow.core.workflow import workflow
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    CancellationError,
    ChildWorkflowError,
    ChildWorkflowFailedError,
    ConfigurationError,
    EventLimitExceededError,
    FatalError,
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    HookPayloadError,
    InvalidTokenError,
    MaxNestingDepthError,
    NonDeterminismError,
    RetryableError,
    SerializationError,
    StepTimeoutError,
    StepValidationError,
    SuspensionSignal,
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from pyworkflow.model.schedules import (
    CalendarSpec,
    OverlapPolicy,
    Schedule,
    ScheduleSpec,
    ScheduleStatus,
)
from pyworkflow.model.schemas import Hook, HookStatus, RunStatus, WorkflowRun
from pyworkflow.observability.logging import configure_logging
from pyworkflow.primitives.cancellation import shield
from pyworkflow.primitives.children import (
    ChildWorkflowHandle,
    continue_as_new,
    start_child_workflow,
)
from pyworkflow.primitives.deterministic import now, random, uuid4
from pyworkflow.primitives.hooks import TypedHook, define_hook, hook
from pyworkflow.primitives.sleep import sleep

__version__ = "0.5.0"

__all__ = [
    "continue_as_new",
    "start_child_workflow",
    "CalendarSpec",
    "OverlapPolicy",
    "Schedule",
    "ScheduleSpec",
    "ScheduleStatus",
    "CancellationError",
    "ChildWorkflowError",
    "ChildWorkflowHandle",
    "ChildWorkflowFailedError",
    "Config",
    "ConfigurationError",
    "Event",
    "EventLimitExceededError",
    "EventType",
    "FatalError",
    "Hook",
    "HookAlreadyReceivedError",
    "HookExpiredError",
    "HookNotFoundError",
    "HookPayloadError",
    "HookStatus",
    "InvalidTokenError",
    "MaxNestingDepthError",
    "NonDeterminismError",
    "ResumeResult",
    "RetryableError",
    "RunStatus",
    "SerializationError",
    "StepContext",
    "StepInfo",
    "StepTimeoutError",
    "StepValidationError",
    "SuspensionSignal",
    "TypedHook",
    "WorkflowAlreadyRunningError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowRun",
    "WorkflowTimeoutError",
    "configure",
    "configure_from_yaml",
    "configure_logging",
    "define_hook",
    "delete_step_checkpoint",
    "get_config",
    "get_runtime",
    "get_step_context",
    "get_step_info",
    "get_storage",
    "cancel_workflow",
    "get_workflow_chain",
    "get_workflow_events",
    "get_workflow_result",
    "get_workflow_run",
    "get_workflow_run_by_idempotency_key",
    "has_step_context",
    "hook",
    "load_step_checkpoint",
    "now",
    "random",
    "reset_config",
    "resume",
    "resume_hook",
    "save_step_checkpoint",
    "set_step_context",
    "shield",
    "sleep",
    "start",
    "step",
    "uuid4",
    "workflow",
]
