"""Timers and recovery: fire due timers, keep leases alive, take runs back from lost workers.

The timer service calls ``fire_due_timers`` and ``recover_expired`` on a schedule and
``renew_leases`` every ``lease_ttl / 3``. A due timer only asks for an activation (the activation
decides from the log and the clock what is due); an expired lease is a lost worker, noted on the
log as ``workflow.interrupted`` and counted against ``max_recovery_attempts``. This module never
runs workflow code.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from pyworkflow.engine.children import PARENT_COMMAND, ending_notices, open_children_in
from pyworkflow.engine.leases import RECOVERED, STEP_EXECUTORS
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.ports import Clock, TaskQueue
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    CorruptHistoryError,
    DuplicateCompletionError,
    LeaseHeldError,
    RunFinishedError,
    SequenceConflictError,
    WorkflowError,
)
from pyworkflow.model.schemas import Commit, HookStatus, RunStatus, WorkflowRun
from pyworkflow.observability.logging import lifecycle
from pyworkflow.serialization import error_fields
from pyworkflow.storage.base import StorageBackend


class Recovery:
    """The timer and recovery part of ``Engine`` (a mixin: the engine provides the attributes)."""

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue
    options: EngineOptions
    active: set[str]  # runs with an activation in this process
    executing: Counter[str]  # run id -> its step attempts running in this process
    cancel_watch: dict[str, int]  # see cancellation.Cancellations
    activation_seen: dict[str, int]  # (the same)

    if TYPE_CHECKING:

        def evict(self, run_id: str | None = None) -> None: ...

        async def watch_cancellation(self) -> None: ...

    async def renew_leases(self) -> None:
        """Extend the leases this process keeps alive: runs it activates, and runs whose
        dispatched steps it executes (leased to ``STEP_EXECUTORS`` while their activation waits).
        Runtimes call this every ``lease_ttl / 3``."""
        expires = self.clock.now() + self.options.lease_ttl
        if self.active:
            await self.storage.renew_leases(sorted(self.active), self.options.owner, expires)
        if self.executing:
            await self.storage.renew_leases(sorted(self.executing), STEP_EXECUTORS, expires)
        if self.cancel_watch or self.activation_seen:  # steps running here: dispatched, inline
            await self.watch_cancellation()

    async def fire_due_timers(self, limit: int = 100) -> list[str]:
        """Claim due timers and enqueue their activations; returns the run ids."""
        timers = await self.storage.claim_due_timers(
            self.clock.now(), limit, claim_for=self.options.lease_ttl
        )
        for timer in timers:
            lifecycle("timer of run {} fired", timer.run_id, run_id=timer.run_id)
            await self.queue.enqueue_activation(timer.run_id)
        return [timer.run_id for timer in timers]

    async def hand_back_timer(self, run_id: str) -> bool:
        """Give a claimed timer back at once (its claim ends now), for a process that cannot run
        the run (its workflow is not registered here): whoever can claims it now, not when the
        claim runs out. Conditional on the log: a run that moved on keeps its newer timer."""
        run = await self.storage.get_run(run_id)
        timer = await self.storage.get_timer(run_id)
        if run is None or timer is None or run.status.is_terminal:
            return False
        commit = Commit(
            run_id=run_id,
            now=self.clock.now(),
            timer=timer.fire_at,
            expected_sequence=run.last_sequence,
        )
        try:
            await self.storage.commit(commit)
        except (SequenceConflictError, RunFinishedError):
            return False
        return True

    async def recover_expired(self, limit: int = 100, *, until_done: bool = False) -> list[str]:
        """The sweeper: take over runs whose activation lease expired, and resume them.

        Claims at most ``limit`` runs; with ``until_done``, claims batch after batch until one
        comes back short (after a whole fleet restarted, thousands of runs may be waiting).
        """
        recovered = []
        while True:
            now = self.clock.now()
            claimed = await self.storage.claim_expired_leases(
                now, RECOVERED, now + self.options.lease_ttl, limit
            )
            for run_id in claimed:
                if run_id in self.active:
                    continue
                if await self._record_interruption(run_id):
                    self.evict(run_id)
                    await self.queue.enqueue_activation(run_id)
                    recovered.append(run_id)
            if not until_done or len(claimed) < limit:
                return recovered

    async def _record_interruption(self, run_id: str) -> bool:
        """Note a lost worker on the log; False when the run must not be resumed."""
        run = await self.storage.get_run(run_id)
        if run is None or run.status.is_terminal:
            return False
        now = self.clock.now()
        attempts = run.recovery_attempts + 1
        event = Event(
            run_id=run_id,
            type=EventType.WORKFLOW_INTERRUPTED,
            data={"recovery_attempt": attempts},
            timestamp=now,
        )
        commit = Commit(run_id=run_id, events=[event], now=now, recovery_attempts=attempts)
        resume = True
        if not run.recover_on_worker_loss:
            commit.status, commit.lease, resume = RunStatus.INTERRUPTED, None, False
        elif attempts > run.max_recovery_attempts:
            error = WorkflowError(
                f"run {run_id} lost its worker {attempts} times"
                f" (max_recovery_attempts={run.max_recovery_attempts})"
            )
            failed = Event(
                run_id=run_id,
                type=EventType.WORKFLOW_FAILED,
                # imposed: by the recovery budget, not the code (see Engine._finish)
                data={**error_fields(error), "imposed": True},
                timestamp=now,
            )
            commit.events.append(failed)
            resume = False
            await self._end_failed(run, commit, failed, now)
        try:
            await self.storage.commit(commit)
        except (SequenceConflictError, DuplicateCompletionError):
            return False
        for notice in commit.notices:
            await self.queue.enqueue_activation(notice.run_id)
        return resume

    async def _end_failed(
        self, run: WorkflowRun, commit: Commit, failed: Event, now: datetime
    ) -> None:
        """Make ``commit`` end ``run`` failed from outside its code (``failed`` is its imposed
        ``workflow.failed``): the log says which children it leaves running, its pending hooks
        are disposed of, its parent is told."""
        commit.status, commit.error, commit.completed_at = (
            RunStatus.FAILED,
            failed.data["error"],
            now,
        )
        commit.lease, commit.timer = None, None
        try:
            children = open_children_in(await self.storage.get_events(run.run_id))
        except CorruptHistoryError:
            # Its log cannot be read: the children it leaves running are found by their
            # parent_run_id instead (those its code started; a step's children run on their own).
            children = [
                child.run_id
                for child in await self.storage.list_children(run.run_id, open_only=True)
                if child.context.get(PARENT_COMMAND)
            ]
        waiting = await self.storage.list_hooks(run.run_id, HookStatus.PENDING)
        commit.hooks_disposed = [hook.hook_id for hook in waiting]
        if children or run.parent_run_id is not None:
            commit.notices = ending_notices(run, RunStatus.FAILED, failed.data, children, now)

    async def impose_failure(
        self,
        run_id: str,
        error: BaseException,
        *,
        expected_sequence: int | None = None,
        require_blocked: bool = False,
    ) -> bool:
        """End ``run_id`` failed with ``error`` without running its code (``pyworkflow runs
        fail``: a blocked run whose log cannot be repaired). Conditional: not while another
        process holds the run's lease, nor once its log moved on since it was read (or since
        ``expected_sequence``, what the caller checked); with ``require_blocked``, only a run
        that is still blocked. False when not written."""
        run = await self.storage.get_run(run_id)
        if run is None or run.status.is_terminal:
            return False
        if expected_sequence is not None and run.last_sequence != expected_sequence:
            return False
        if require_blocked and run.blocked is None:
            return False
        now = self.clock.now()
        failed = Event(
            run_id=run_id,
            type=EventType.WORKFLOW_FAILED,
            data={**error_fields(error), "imposed": True},
            timestamp=now,
        )
        commit = Commit(
            run_id=run_id,
            events=[failed],
            now=now,
            expected_sequence=run.last_sequence,
            owner=self.options.owner,
        )
        await self._end_failed(run, commit, failed, now)
        try:
            await self.storage.commit(commit)
        except (SequenceConflictError, DuplicateCompletionError, RunFinishedError, LeaseHeldError):
            return False
        for notice in commit.notices:
            await self.queue.enqueue_activation(notice.run_id)
        return True


def progress_made(events: list[Event]) -> bool:
    """Whether a commit of ``events`` records a completion, which resets ``recovery_attempts``.

    ``max_recovery_attempts`` bounds the worker losses in a row *without progress*: a run that
    keeps completing steps between losses is not a crash loop, and a lease that expired while a
    dispatched step was still in a queue (its message lost, redelivered after the broker's
    visibility timeout) must not use up the budget of a long run.
    """
    return any(event.completion_key is not None for event in events)


__all__ = ["Recovery", "progress_made"]
