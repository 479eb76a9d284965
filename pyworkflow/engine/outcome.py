"""Where a run stands after an activation (``Outcome``), and a finished run's value or error.

Written once for every caller: the engine reports an ``Outcome``; ``pyworkflow.api`` and the
simulator turn a finished run into its return value or raise its error (``Outcome.value``,
``outcome_of``). Reads storage, never writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyworkflow.model.events import EventType
from pyworkflow.model.exceptions import CancellationError, CorruptHistoryError, WorkflowError
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.serialization import deserialize_exception, loads
from pyworkflow.storage.base import StorageBackend


@dataclass(slots=True)
class Outcome:
    """Where a run stands after an activation."""

    run_id: str
    status: RunStatus
    result: str | None = None  # JSON text of the return value when completed
    exception: str | None = None  # serialized exception when failed
    # Another activation holds the run: this one did nothing (see ``LeaseHeldError``).
    held_by: str | None = None
    error: str | None = None  # the run's error message when failed (no exception recorded)

    def value(self) -> Any:
        """The return value of a completed run; raises a failed run's error, or
        ``CancellationError`` for a cancelled one; None while the run is not finished."""
        if self.status is RunStatus.COMPLETED:
            return None if self.result is None else loads(self.result)
        if self.status is RunStatus.FAILED:
            if self.exception:
                raise deserialize_exception(self.exception)
            raise WorkflowError(self.error or f"run {self.run_id} failed")
        if self.status is RunStatus.CANCELLED:
            if self.exception:
                raise deserialize_exception(self.exception)
            raise CancellationError(f"run {self.run_id} was cancelled")
        return None


async def outcome_of(storage: StorageBackend, run: WorkflowRun) -> Outcome:
    """The ``Outcome`` of ``run`` as storage holds it (a failed run's error from its log)."""
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        ending = (
            EventType.WORKFLOW_FAILED
            if run.status is RunStatus.FAILED
            else (EventType.WORKFLOW_CANCELLED)
        )
        try:
            tail = await storage.get_events(run.run_id, after_sequence=run.last_sequence - 1)
        except CorruptHistoryError:  # (a run ended by an operator after its log broke)
            return Outcome(run.run_id, run.status, error=run.error)
        for event in reversed(tail):
            if event.type is ending and event.data.get("exception"):
                return Outcome(
                    run.run_id, run.status, exception=event.data["exception"], error=run.error
                )
        return Outcome(run.run_id, run.status, error=run.error)
    return Outcome(run.run_id, run.status, result=run.result)


async def chain_end(storage: StorageBackend, run: WorkflowRun) -> WorkflowRun:
    """``run``, or the last run of its chain if it continued as new (``continue_as_new``): the
    run whose ending is the chain's. Stops at a link storage does not hold."""
    seen = {run.run_id}
    while run.continued_to_run_id is not None and run.continued_to_run_id not in seen:
        following = await storage.get_run(run.continued_to_run_id)
        if following is None:
            break
        seen.add(following.run_id)
        run = following
    return run


__all__ = ["Outcome", "chain_end", "outcome_of"]
