"""Cancellation requests: record one durably and wake the run (``request_cancellation``).

A request is a ``cancellation.requested`` event appended to the run's log like any completion
writer's (a hook receipt, a step result): no lease needed, a timer set to now so the run wakes even
if the enqueue after the commit is lost. What the workflow sees is the instance's business
(``WorkflowInstance._deliver_cancellation``): every unshielded durable call it waits on raises
``CancellationError``, a step in flight first finishes and is recorded. This module never runs
workflow code.
"""

from __future__ import annotations

from pyworkflow.engine.ports import Clock, TaskQueue
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    CorruptHistoryError,
    RunFinishedError,
    WorkflowNotFoundError,
)
from pyworkflow.model.schemas import Commit
from pyworkflow.storage.base import StorageBackend

# Forget what is known of cancellations beyond this many runs (they are re-learned if needed).
_KNOWN_LIMIT = 10_000


class Cancellations:
    """The cancellation part of ``Engine`` (a mixin: the engine provides the attributes).

    It also answers ``StepInfo.check_cancellation`` for steps running in this process: a run is
    known cancelled once this engine recorded its request, or once ``watch_cancellation`` (the
    lease renewal, while a dispatched step of the run runs here) found the request in its log.
    """

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue
    cancel_known: set[str]  # runs known to be asked to stop
    cancel_watch: dict[str, int]  # runs with dispatched steps running here -> sequence read
    active: set[str]  # runs with an activation in this process (their inline steps)
    activation_seen: dict[str, int]  # active run -> the sequence its activation loaded

    def cancel_requested(self, run_id: str) -> bool:
        return run_id in self.cancel_known

    def _know_cancelled(self, run_id: str) -> None:
        if len(self.cancel_known) >= _KNOWN_LIMIT:
            self.cancel_known.clear()
        self.cancel_known.add(run_id)

    async def watch_cancellation(self) -> None:
        """Read what the logs of runs with steps running here gained since the last look, and
        note any cancellation request (a few events per run: the step's run is waiting on it).
        Runs with an activation here are watched too: their inline steps run inside it."""
        for watched in (self.cancel_watch, self.activation_seen):
            for run_id, seen in list(watched.items()):
                if run_id in self.cancel_known:
                    continue
                try:
                    news = await self.storage.get_events(run_id, after_sequence=seen)
                except CorruptHistoryError:
                    continue  # (its activation blocks the run; the other runs are still read)
                if any(event.type is EventType.CANCELLATION_REQUESTED for event in news):
                    self._know_cancelled(run_id)
                if news and run_id in watched:
                    watched[run_id] = max(watched[run_id], news[-1].sequence)

    async def request_cancellation(self, run_id: str, reason: str | None = None) -> bool:
        """Record that ``run_id`` is to be cancelled and wake it. True when recorded; False when
        the run had already finished. Unknown run: ``WorkflowNotFoundError``. A second request
        is harmless (the first one counts)."""
        run = await self.storage.get_run(run_id)
        if run is None:
            raise WorkflowNotFoundError(f"no workflow run with id {run_id!r}")
        if run.status.is_terminal:
            return False
        now = self.clock.now()
        event = Event(
            run_id=run_id,
            type=EventType.CANCELLATION_REQUESTED,
            data={"reason": reason},
            timestamp=now,
        )
        try:
            await self.storage.commit(Commit(run_id=run_id, events=[event], now=now, timer=now))
        except RunFinishedError:
            return False  # it finished between the read and the write
        self._know_cancelled(run_id)
        await self.queue.enqueue_activation(run_id)
        return True


__all__ = ["Cancellations"]
