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
from pyworkflow.model.exceptions import RunFinishedError, WorkflowNotFoundError
from pyworkflow.model.schemas import Commit
from pyworkflow.storage.base import StorageBackend


class Cancellations:
    """The cancellation part of ``Engine`` (a mixin: the engine provides the attributes)."""

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue

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
        await self.queue.enqueue_activation(run_id)
        return True


__all__ = ["Cancellations"]
