"""Blocked runs: an activation that fails for a reason code must fix says so on the run.

Replay that diverges from the log (``NonDeterminismError``), a log that cannot be read back
(``CorruptHistoryError``: storage edited or damaged; an operator can repair the row), a workflow
not registered in the process that activates its run, a recorded value that does not decode
here, an engine bug: none
of these goes away by retrying the same code, and none is the run's fault, so the run is neither
failed nor left to look merely ``suspended``. The engine records a ``Blocked`` on the run (in its
``error`` field, which only terminal runs use otherwise), releases its lease (the sweeper would
otherwise count each failed activation as a lost worker and, past the recovery budget, fail the
run), and sets a retry timer (``EngineOptions.blocked_retry``) so that workers running fixed code
continue it on their own. The next activation that gets through clears the record with its
first commit (``Commit.error=""``). ``get_workflow_result`` raises the recorded error at once.

Storage outages, lost commit races and held leases are not blocks: they pass by themselves.
"""

from __future__ import annotations

from datetime import timedelta

from loguru import logger

from pyworkflow.core.registry import list_workflows
from pyworkflow.engine.leases import STEP_EXECUTORS
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.ports import Clock
from pyworkflow.model.exceptions import (
    CorruptHistoryError,
    LeaseHeldError,
    NonDeterminismError,
    RunFinishedError,
    SequenceConflictError,
    SerializationError,
    WorkflowError,
    WorkflowNotFoundError,
)
from pyworkflow.model.schemas import UNSET, Blocked, BlockedKind, Commit, RunStatus, WorkflowRun
from pyworkflow.storage.base import StorageBackend

# Exceptions that are programming errors wherever they come from (never a storage outage):
# an activation that raises one is an engine (or workflow-library) bug that a retry repeats.
_BUGS = (AssertionError, AttributeError, TypeError, NameError, NotImplementedError, RecursionError)
_CANDIDATES = (
    NonDeterminismError,
    CorruptHistoryError,
    SerializationError,
    WorkflowNotFoundError,
    *_BUGS,
)


def blocked_kind(exc: BaseException, run: WorkflowRun | None = None) -> BlockedKind | None:
    """Whether ``exc``, raised by an activation of ``run``, blocks it (and why); None when it
    is transient or not the run's (a storage outage, a lost race, a run that does not exist)."""
    if isinstance(exc, NonDeterminismError):
        return BlockedKind.NON_DETERMINISM
    if isinstance(exc, CorruptHistoryError):
        return BlockedKind.CORRUPT_HISTORY
    if isinstance(exc, SerializationError):
        return BlockedKind.UNDECODABLE
    if isinstance(exc, WorkflowNotFoundError):
        if run is not None and run.workflow_name not in list_workflows():
            return BlockedKind.WORKFLOW_NOT_FOUND
        return None
    if isinstance(exc, WorkflowError):
        return None  # the engine's own signals (storage busy, races, leases) pass
    if isinstance(exc, _BUGS):
        return BlockedKind.ENGINE_ERROR
    return None


def blocked_of(exc: BaseException, kind: BlockedKind, clock: Clock, owner: str) -> Blocked:
    detail: dict[str, object] = {}
    message = str(exc) or type(exc).__name__
    if isinstance(exc, NonDeterminismError):
        detail = {
            "position": exc.position,
            "expected": exc.expected,
            "actual": exc.actual,
            "location": exc.location,
        }
    elif isinstance(exc, CorruptHistoryError):
        detail = {
            "run_id": exc.run_id,
            "sequence": exc.sequence,
            "event_type": exc.event_type,
            "field": exc.field,
            "why": getattr(exc, "why", ""),
        }
    elif kind is BlockedKind.WORKFLOW_NOT_FOUND:
        message = f"{message} (in process {owner}: import the module that defines it)"
    return Blocked(kind, type(exc).__name__, message, clock.now(), owner, detail)


def blocked_error(run_id: str, blocked: Blocked) -> WorkflowError:
    """The error ``get_workflow_result`` raises for a blocked run: the one its activation hit."""
    message = f"run {run_id} is blocked ({blocked.kind}): {blocked.message}"
    if blocked.kind is BlockedKind.NON_DETERMINISM:
        detail = blocked.detail
        return NonDeterminismError(
            message,
            _int_or_none(detail.get("position")),
            _str_or_none(detail.get("expected")),
            _str_or_none(detail.get("actual")),
            _str_or_none(detail.get("location")),
        )
    if blocked.kind is BlockedKind.WORKFLOW_NOT_FOUND:
        return WorkflowNotFoundError(message)
    if blocked.kind is BlockedKind.UNDECODABLE:
        return SerializationError(message)
    if blocked.kind is BlockedKind.CORRUPT_HISTORY:
        detail = blocked.detail
        sequence = _int_or_none(detail.get("sequence"))
        if sequence is None:
            return _CorruptHistory(message)
        return CorruptHistoryError(
            str(detail.get("run_id", run_id)),
            sequence,
            str(detail.get("event_type", "?")),
            str(detail.get("field", "?")),
            str(detail.get("why", "")),
        )
    return WorkflowError(f"{message} ({blocked.error_type})")


class _CorruptHistory(CorruptHistoryError):
    """A ``CorruptHistoryError`` rebuilt from a block's message alone (a record written without
    the details: the run, event and field are in the text)."""

    def __init__(self, message: str) -> None:
        WorkflowError.__init__(self, message)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


class Blocking:
    """The blocked-run part of ``Engine`` (a mixin: the engine provides the attributes)."""

    storage: StorageBackend
    clock: Clock
    options: EngineOptions

    async def record_block(
        self, run_id: str, exc: BaseException, *, retry: bool = True, seen: int | None = None
    ) -> Blocked | None:
        """If ``exc`` blocks ``run_id``, say so on the run (see the module docstring) and
        return the record; None when it does not (or the run moved on meanwhile).

        ``retry``: set the run's timer to ``blocked_retry`` from now (else leave it as it is).
        ``seen``: the log head the failing activation loaded; the record is conditional on it
        (else on the head now) and on the lease, so an activation that got through meanwhile,
        or one that committed anything before failing, wins. Every activation's commit clears
        a block. A run leased to its step executors keeps that lease (the sweeper's way back
        to it, should they be lost).
        """
        if not isinstance(exc, _CANDIDATES):
            return None  # (no storage call: an outage is no time for one)
        try:
            run = await self.storage.get_run(run_id)
        except Exception:  # noqa: BLE001 - storage may be what failed: nothing to record then
            return None
        kind = blocked_kind(exc, run)
        if run is None or kind is None or run.status.is_terminal:
            return None
        blocked = blocked_of(exc, kind, self.clock, self.options.owner)
        known = run.blocked
        same = known is not None and (known.kind, known.message, known.detail) == (
            blocked.kind,
            blocked.message,
            blocked.detail,
        )
        if same and not retry:
            return known
        if seen is not None and seen != run.last_sequence:
            return None  # the run moved on after the failing activation loaded it
        now = self.clock.now()
        wait: timedelta | None = self.options.blocked_retry
        on_workers = run.lease_owner == STEP_EXECUTORS
        commit = Commit(
            run_id=run_id,
            now=now,
            expected_sequence=run.last_sequence,
            status=None if on_workers else RunStatus.SUSPENDED,
            error=None if same else blocked.to_text(),
            timer=now + wait if retry and wait is not None else UNSET,
            lease=UNSET if on_workers else None,
            owner=self.options.owner,
        )
        try:
            await self.storage.commit(commit)
        except (SequenceConflictError, LeaseHeldError, RunFinishedError):
            return None  # someone else moved the run on or holds it: theirs to see
        except Exception as exc2:  # noqa: BLE001 - storage is down: the error is logged anyway
            logger.debug("could not record that run {} is blocked: {}", run_id, exc2)
            return None
        if not same:
            logger.bind(run_id=run_id, workflow=run.workflow_name).warning(
                "run {} is blocked ({}): {}", run_id, blocked.kind, blocked.message
            )
        return known if same else blocked


__all__ = ["Blocking", "blocked_error", "blocked_kind", "blocked_of"]
