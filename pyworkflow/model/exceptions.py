"""The exception hierarchy users catch and raise.

Pure data: this module imports nothing from the package, so storage, serialization and the engine
can all raise these without depending on each other. Every exception keeps its constructor
arguments in ``args`` so that it survives a round trip through serialization with its type.
"""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    """Base class of every error PyWorkflow raises on purpose."""


class FatalError(WorkflowError):
    """A step failure that must not be retried."""


class RetryableError(WorkflowError):
    """A step failure that should be retried, optionally after ``retry_after``.

    ``retry_after`` accepts every duration form ``sleep`` accepts: seconds, ``"30s"``,
    ``"1h30m"``, a ``timedelta``.
    """

    def __init__(self, message: str = "", retry_after: Any = None) -> None:
        super().__init__(message, retry_after)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class StepTimeoutError(RetryableError):
    """A step attempt ran longer than its ``timeout``; it is retried like any retryable error."""


class StepValidationError(FatalError):
    """A step was called with arguments that do not match its type hints."""


class CancellationError(WorkflowError):
    """The workflow was cancelled (``cancel_workflow``): raised at its durable calls outside
    ``shield()``, and by ``get_workflow_result`` of a run that ended cancelled."""


class WorkflowNotFoundError(WorkflowError):
    """No workflow (run or registered name) matches what was asked for."""


class ScheduleNotFoundError(WorkflowNotFoundError):
    """No schedule with that id (or it was deleted, for operations that need a live one)."""


class ScheduleAlreadyExistsError(WorkflowError):
    """``create_schedule`` with a ``schedule_id`` that is taken."""


class WorkflowAlreadyRunningError(WorkflowError):
    """A run with this identity is already running."""


class WorkflowTimeoutError(WorkflowError):
    """The workflow ran past its ``max_duration``, or a wait for its result timed out."""


class HookNotFoundError(WorkflowError):
    """No hook matches the token or id."""


class HookExpiredError(WorkflowError):
    """The hook's timeout passed before a payload arrived."""


class HookAlreadyReceivedError(WorkflowError):
    """The hook already received its payload; a hook receives exactly one."""


class HookPayloadError(WorkflowError, ValueError):
    """A hook payload does not match the hook's ``payload_schema``; nothing was recorded."""


class InvalidTokenError(WorkflowError):
    """A hook token is malformed or its secret does not match."""


class SerializationError(WorkflowError):
    """A value cannot be serialized (or deserialized)."""


class CorruptHistoryError(WorkflowError):
    """A value recorded in a run's log cannot be read back (edited or damaged storage, or a
    pickled value read with pickling off). An infrastructure fault: the engine blocks the run
    (``WorkflowRun.blocked``, kind ``corrupt_history``), naming the run, the event and the
    field; workflow code never sees it, and a repaired log lets the run go on."""

    def __init__(self, run_id: str, sequence: int, event_type: str, field: str, why: str) -> None:
        super().__init__(
            f"corrupt history: run {run_id}, event {sequence} ({event_type}), field {field!r}"
            f" cannot be read: {why}"
        )
        self.run_id = run_id
        self.sequence = sequence
        self.event_type = event_type
        self.field = field
        self.why = why


class ChildWorkflowError(WorkflowError):
    """Base class of child workflow errors (``start_child_workflow``, ``ChildWorkflowHandle``)."""


class ChildWorkflowFailedError(ChildWorkflowError):
    """A child workflow failed or was cancelled: raised where the parent awaits its result.

    ``child_run_id`` and ``child_workflow_name`` name the child; ``error_type`` is the class of
    the child's error (``module:QualName``) and ``error_message`` its message.
    """

    def __init__(
        self,
        message: str = "",
        *,
        child_run_id: str | None = None,
        child_workflow_name: str | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.child_run_id = child_run_id
        self.child_workflow_name = child_workflow_name
        self.error_type = error_type
        self.error_message = error_message


class MaxNestingDepthError(WorkflowError):
    """A child workflow would nest deeper than allowed (3 levels below the root run)."""


class EventLimitExceededError(FatalError):
    """A run recorded more events than the configured limit."""


class NonDeterminismError(WorkflowError):
    """Workflow code issued different durable calls than the recorded history.

    ``position`` is the command number (1-based), ``expected`` what the history recorded there,
    ``actual`` what the code issued, ``location`` the workflow source line (``file:line in func``).
    """

    def __init__(
        self,
        message: str,
        position: int | None = None,
        expected: str | None = None,
        actual: str | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message, position, expected, actual, location)
        self.message = message
        self.position = position
        self.expected = expected
        self.actual = actual
        self.location = location

    def __str__(self) -> str:
        return self.message


class ConfigurationError(WorkflowError):
    """PyWorkflow is configured wrongly (unknown storage type, unreachable URL, ...)."""


class StorageBusyError(WorkflowError):
    """Another process held the storage lock for longer than the backend is willing to wait."""


class RunFinishedError(WorkflowError):
    """The run already ended: nothing more can be recorded in its log."""


class SequenceConflictError(WorkflowError):
    """A conditional append lost the race: the log moved past the expected sequence."""


class DuplicateCompletionError(WorkflowError):
    """A completion for this command was already recorded (duplicate delivery)."""


class LeaseHeldError(WorkflowError):
    """Another activation holds the run's lease: this one must not act on the run."""

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class SuspensionSignal(BaseException):  # noqa: N818 - kept for import compatibility
    """Kept for import compatibility with pyworkflow-engine 0.3/0.4.

    The engine never raises or catches it: a blocked workflow is a coroutine waiting on futures.
    """


__all__ = [
    "CorruptHistoryError",
    "ScheduleAlreadyExistsError",
    "ScheduleNotFoundError",
    "CancellationError",
    "ChildWorkflowError",
    "ChildWorkflowFailedError",
    "ConfigurationError",
    "DuplicateCompletionError",
    "EventLimitExceededError",
    "FatalError",
    "HookAlreadyReceivedError",
    "HookExpiredError",
    "HookNotFoundError",
    "HookPayloadError",
    "InvalidTokenError",
    "LeaseHeldError",
    "MaxNestingDepthError",
    "NonDeterminismError",
    "RetryableError",
    "RunFinishedError",
    "SequenceConflictError",
    "SerializationError",
    "StepTimeoutError",
    "StorageBusyError",
    "StepValidationError",
    "SuspensionSignal",
    "WorkflowAlreadyRunningError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowTimeoutError",
]

# Their public path, kept as their ``__module__``: an error's type is recorded in logs as
# ``module:QualName``, so logs written by earlier releases and by this one name the same
# importable place (``pyworkflow.core.exceptions`` re-exports this module).
PUBLIC_MODULE = "pyworkflow.core.exceptions"
for _name in __all__:
    globals()[_name].__module__ = PUBLIC_MODULE
del _name
