"""``FaultyStorage``: the simulation's in-memory storage, failing the way real storage does.

When the seed says so, a call fails before doing anything (transient), a commit is applied and
the caller still sees an error (the ambiguous commit), a call yields to other workers first
(``interleave``), and a crash strikes right before or after a commit. It also watches what
storage hands out: a timer claimed before it is due is recorded (an oracle reads it). With a
``Trace`` attached (``trace``), commits, runs created, refused commits and injected storage errors
are recorded too. It never changes what the inner storage stores.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pyworkflow.model.events import Event
from pyworkflow.model.exceptions import WorkflowError
from pyworkflow.model.schedules import Schedule
from pyworkflow.model.schemas import Commit, Hook, HookStatus, Timer, WorkflowRun
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow_testing.fate import (
    Chooser,
    StorageFault,
    _delivery,
    _scripted,
    crash_point,
)
from pyworkflow_testing.ledger import ExecutionLedger
from pyworkflow_testing.trace import Trace


class FaultyStorage(StorageBackend):
    """In-memory storage that fails the way real storage does, when the seed says so."""

    shared_between_processes = False
    kind = "simulated storage"

    def to_config(self) -> dict[str, Any]:
        return {"type": "memory"}

    def __init__(self, chooser: Chooser, ledger: ExecutionLedger | None = None) -> None:
        self.inner = InMemoryStorageBackend()
        self.chooser = chooser
        self.ledger = ledger or ExecutionLedger()
        self.active = True
        self.events_recorded = 0  # by successful commits and run creations: progress
        self.early_claims: list[str] = []  # timers handed out before they were due
        self.trace: Trace | None = None  # set by the world when a report is wanted
        self._interleaving = random.Random(f"interleave:{chooser.seed}")
        self.joint_commits = False  # see ``commit_many``
        self.joint_writes = 0  # atomic ``commit_many`` calls
        # Told of each run created and each commit applied (run id, its new events; a notice's
        # event too, in its run), before the writer goes on, and of each commit about to be
        # applied: what a check's rerun acts on at a point of a run's progress
        # (``pyworkflow_testing.behind``).
        self.after_write: Callable[[str, list[Event]], Awaitable[None]] | None = None
        self.before_write: Callable[[str, list[Event]], Awaitable[None]] | None = None

    async def _interleave(self) -> None:
        """The ``interleave`` fault: let other tasks run before this call (see ``faults``)."""
        rate = self.chooser.faults.rate("interleave")
        if not rate or not self.active or (_delivery.get() is None and not _scripted.get()):
            return
        if self._interleaving.random() < rate:
            for _ in range(1 + self._interleaving.randrange(3)):
                await asyncio.sleep(0)

    def _maybe_fail(self, what: str) -> None:
        delivery = _delivery.get()
        if self.active and delivery is not None and self.chooser.fault("storage", what):
            for run_id in delivery.struck():
                self.ledger.fault(run_id, "storage")
            if self.trace is not None:
                self.trace.storage_fault(
                    delivery.worker, delivery.run_id, f"storage error in {what}"
                )
            raise StorageFault(f"simulated storage error in {what}")

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        await self._interleave()
        created = await self.inner.create_run(run, events)
        self.events_recorded += len(events)
        if self.trace is not None:
            self.trace.run_created(created[0], events, created[1])
        if self.after_write is not None and created[1]:
            await self.after_write(run.run_id, events)
        return created

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        await self._interleave()
        self._maybe_fail("get_run")
        return await self.inner.get_run(run_id)

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        await self._interleave()
        return await self.inner.get_run_by_idempotency_key(key)

    async def list_runs(self, **kwargs: Any) -> tuple[list[WorkflowRun], str | None]:
        return await self.inner.list_runs(**kwargs)

    async def commit(self, commit: Commit) -> int:
        return (await self._write([commit]))[0]

    async def commit_many(self, commits: list[Commit]) -> list[int]:
        """One atomic write when ``joint_commits`` (as on SQLite; the world sets it per seed, so
        that both forms of the engine's joined writes are explored): the faults strike the whole
        write, before anything or after everything. Else one commit after another."""
        if not self.joint_commits:
            return [await self.commit(commit) for commit in commits]
        self.joint_writes += 1
        return await self._write(commits)

    async def _write(self, commits: list[Commit]) -> list[int]:
        await self._interleave()
        delivery = _delivery.get()
        if delivery is not None:
            for commit in commits:
                delivery.runs.add(commit.run_id)
        crash_point("before_commit")
        self._maybe_fail("commit")
        if self.before_write is not None:
            for commit in commits:
                await self.before_write(commit.run_id, commit.events)
                for notice in commit.notices:
                    await self.before_write(notice.run_id, [notice.event])
        heads: list[int] = []
        for commit in commits:
            try:
                heads.append(await self.inner.commit(commit))  # (never suspends: one write)
            except Exception as exc:
                if self.trace is not None and isinstance(exc, WorkflowError):
                    self._trace_refused(commit, exc)
                if heads:
                    # The engine joins only writes that cannot refuse each other: report it.
                    raise RuntimeError(
                        f"the joint write of {[c.run_id for c in commits]} was refused after"
                        f" its first part was applied: {type(exc).__name__}: {exc}"
                    ) from exc
                raise
            self.events_recorded += len(commit.events)
            if self.trace is not None:
                worker = None if delivery is None else delivery.worker
                self.trace.committed(worker, commit, heads[-1])
        if self.after_write is not None:
            for commit in commits:
                await self.after_write(commit.run_id, commit.events)
                for notice in commit.notices:
                    if notice.placed is not None:  # (a child's ending, in its parent's log)
                        await self.after_write(notice.placed.run_id, [notice.placed])
        if self.active and delivery is not None and self.chooser.fault("storage", "ack"):
            # The caller sees an error: what it does after a commit (queue the runs it created,
            # among others) does not happen, so those runs are struck too.
            created = {run.run_id for commit in commits for run, _ in commit.runs_created}
            for run_id in delivery.struck() | created:
                self.ledger.fault(run_id, "storage")
            if self.trace is not None:
                self.trace.storage_fault(
                    delivery.worker, delivery.run_id, "ambiguous commit (applied, error seen)"
                )
            raise StorageFault("simulated ambiguous commit: applied, but the caller saw an error")
        crash_point("after_commit")
        return heads

    def _trace_refused(self, commit: Commit, error: WorkflowError) -> None:
        assert self.trace is not None
        delivery = _delivery.get()
        self.trace.refused(None if delivery is None else delivery.worker, commit, error)

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        await self._interleave()
        self._maybe_fail("get_events")
        return await self.inner.get_events(run_id, after_sequence, command_id)

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        await self._interleave()
        timers = await self.inner.claim_due_timers(now, limit, claim_for)
        self.early_claims += [
            f"the timer of run {timer.run_id} was claimed at {now.isoformat()}, before it was"
            f" due ({timer.fire_at.isoformat()})"
            for timer in timers
            if timer.fire_at > now
        ]
        return timers

    # -- schedules: crashes around the compare-and-set, failures, and early claims watched --

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        await self._interleave()
        return await self.inner.create_schedule(schedule)

    async def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        await self._interleave()
        crash_point("before_schedule_write")
        self._maybe_fail("update_schedule")
        stored = await self.inner.update_schedule(schedule, expected_revision)
        crash_point("after_schedule_write")
        return stored

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        await self._interleave()
        self._maybe_fail("get_schedule")
        return await self.inner.get_schedule(schedule_id)

    async def list_schedules(self, **kwargs: Any) -> list[Schedule]:
        return await self.inner.list_schedules(**kwargs)

    async def claim_due_schedules(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=10)
    ) -> list[Schedule]:
        await self._interleave()
        claimed = await self.inner.claim_due_schedules(now, limit, claim_for)
        self.early_claims += [
            f"schedule {schedule.schedule_id} was claimed at {now.isoformat()}, before its poll"
            f" time ({schedule.poll_at.isoformat()})"
            for schedule in claimed
            if schedule.poll_at is not None and schedule.poll_at > now
        ]
        return claimed

    async def get_timer(self, run_id: str) -> Timer | None:
        await self._interleave()
        return await self.inner.get_timer(run_id)

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        await self.inner.renew_leases(run_ids, owner, expires_at)

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        await self._interleave()
        return await self.inner.claim_expired_leases(now, owner, expires_at, limit)

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        await self._interleave()
        # A real read waits on I/O, and concurrent receipts of one hook (a webhook delivered
        # twice) interleave there, between the receipt's check and its commit: so here too.
        hook = await self.inner.get_hook(run_id, hook_id)
        await asyncio.sleep(0)  # the answer travels back
        return hook

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        return await self.inner.list_hooks(run_id, status)

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        await self.inner.put_checkpoint(run_id, step_id, data)

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        return await self.inner.get_checkpoint(run_id, step_id)

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        await self.inner.delete_checkpoint(run_id, step_id)


__all__ = ["FaultyStorage"]
