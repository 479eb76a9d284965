"""In-memory storage: the tables of every run in plain dicts.

``MemoryStore`` holds the state and applies each operation synchronously, checking everything
before it changes anything, so an operation is all-or-nothing and atomic with respect to the
asyncio loop (nothing awaits in the middle of a mutation). ``InMemoryStorageBackend`` is that
store behind the async port; the file backend keeps the same store and journals its mutations.

This is the engine's per-step hot path for in-memory runs: ``commit`` does dict, set and list
operations only, never serialization. Records handed out are copies, so callers cannot change
storage through them; events are immutable by convention and are shared.

Due timers and expired leases are found through heaps, not scans, so the timer service and the
sweeper cost the same with ten thousand runs as with ten. The heaps are lazy: an entry is pushed
whenever a timer or lease is set and checked against the tables when it comes out (a stale one is
dropped); they are rebuilt from the tables when stale entries outnumber live ones.

This module must never import the engine (only its event model), a runtime, or do any I/O.
"""

from __future__ import annotations

import copy
import heapq
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pyworkflow.model.events import Event
from pyworkflow.model.schedules import Schedule, ScheduleStatus
from pyworkflow.model.schemas import (
    Change,
    Commit,
    Hook,
    HookStatus,
    Notice,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage.base import (
    LEASABLE_STATUSES,
    SECRETS_RUN,
    StorageBackend,
    already_exists,
    check_hook_pending,
    check_lease,
    check_run_open,
    decode_run_cursor,
    duplicate_completion,
    encode_run_cursor,
    new_run_record,
    number_events,
    run_not_found,
    with_logged_args,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEASABLE_STATUSES = frozenset(LEASABLE_STATUSES)

# run_id -> (fire_at, claimed_until); claimed_until is None while nobody holds the timer.
TimerTable = dict[str, tuple[datetime, datetime | None]]


@dataclass(slots=True)
class _RunLog:
    """A run with its log. Invariant: ``events[i].sequence == i + 1 == run.last_sequence``
    for the last ``i``, and ``completion_keys`` holds the completion key of every event."""

    run: WorkflowRun
    events: list[Event]
    completion_keys: set[str]


@dataclass(slots=True)
class StoreTables:
    """Everything a ``MemoryStore`` holds, as plain records (what the file backend snapshots)."""

    runs: list[tuple[WorkflowRun, list[Event]]]
    timers: TimerTable
    hooks: list[Hook]
    checkpoints: dict[tuple[str, str], str]
    # schedule_id -> (the schedule, its poll time as claims left it)
    schedules: dict[str, tuple[Schedule, datetime | None]] = field(default_factory=dict)


class MemoryStore:
    """The tables of every run. Every method is synchronous and all-or-nothing.

    ``keep_finished``: how many ended runs to keep (None: all); past it, the run that ended
    longest ago is forgotten with everything of it (non-durable runs: memory that only grows).
    """

    def __init__(self, keep_finished: int | None = None) -> None:
        if keep_finished is not None and (
            isinstance(keep_finished, bool)
            or not isinstance(keep_finished, int)
            or keep_finished < 1
        ):
            raise ValueError(f"keep_finished must be 1 or more (or None), got {keep_finished!r}")
        self.keep_finished = keep_finished
        self._ended: deque[str] = deque()  # runs in the order they ended (with keep_finished)
        self._runs: dict[str, _RunLog] = {}
        self._idempotency: dict[str, str] = {}  # idempotency key -> run_id
        self._timers: TimerTable = {}
        self._hooks: dict[tuple[str, str], Hook] = {}  # (run_id, hook_id) -> hook
        self._hooks_of: dict[str, list[str]] = {}  # run_id -> its hook ids
        self._checkpoints: dict[tuple[str, str], str] = {}  # (run_id, step_id) -> data
        # (fire_at, run_id) for unclaimed timers, (claimed_until, fire_at, run_id) for claimed
        # ones; (lease expiry, run_id) for leased pending/running runs; and the pending/running
        # runs nobody holds (claimable at once).
        self._timer_heap: list[tuple[datetime, str]] = []
        self._claim_heap: list[tuple[datetime, datetime, str]] = []
        self._lease_heap: list[tuple[datetime, str]] = []
        self._unowned: set[str] = set()
        # schedule_id -> (schedule, poll time); (poll time, schedule_id), lazily as timers.
        self._schedules: dict[str, tuple[Schedule, datetime | None]] = {}
        self._schedule_heap: list[tuple[datetime, str]] = []

    # -- snapshots ----------------------------------------------------------------------------

    def tables(self) -> StoreTables:
        """The current state (shared, not copied: serialize it before the next mutation)."""
        return StoreTables(
            runs=[(log.run, log.events) for log in self._runs.values()],
            timers=self._timers,
            hooks=list(self._hooks.values()),
            checkpoints=self._checkpoints,
            schedules=self._schedules,
        )

    @classmethod
    def from_tables(cls, tables: StoreTables) -> MemoryStore:
        store = cls()
        for run, events in tables.runs:
            keys = {key for key in (event.completion_key for event in events) if key is not None}
            store._runs[run.run_id] = _RunLog(run, events, keys)
            if run.idempotency_key is not None:
                store._idempotency[run.idempotency_key] = run.run_id
        store._timers = dict(tables.timers)
        store._rebuild_timer_heap()
        store._rebuild_lease_index()
        store._hooks = {(hook.run_id, hook.hook_id): hook for hook in tables.hooks}
        for run_id, hook_id in store._hooks:
            store._hooks_of.setdefault(run_id, []).append(hook_id)
        store._checkpoints = dict(tables.checkpoints)
        for schedule, poll_at in tables.schedules.values():
            store._put_schedule(schedule, poll_at)
        return store

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self, run: WorkflowRun, events: list[Event], now: datetime
    ) -> tuple[WorkflowRun, bool]:
        key = run.idempotency_key
        if key is not None and key in self._idempotency:
            return self._read_run(self._runs[self._idempotency[key]]), False
        if run.run_id in self._runs:
            raise already_exists(run.run_id)
        record, numbered = new_run_record(run, events, now)
        self._insert_run(record, numbered)
        if key is not None:
            self._idempotency[key] = run.run_id
        return with_logged_args(_copy_run(record), numbered[0] if numbered else None), True

    def get_run(self, run_id: str) -> WorkflowRun | None:
        log = self._runs.get(run_id)
        return self._read_run(log) if log is not None else None

    @staticmethod
    def _read_run(log: _RunLog) -> WorkflowRun:
        return with_logged_args(_copy_run(log.run), log.events[0] if log.events else None)

    def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        run_id = self._idempotency.get(key)
        return self.get_run(run_id) if run_id is not None else None

    def list_children(self, parent_run_id: str, open_only: bool) -> list[WorkflowRun]:
        """One pass over the runs (``StorageBackend.list_children`` pages through them all)."""
        found = [
            log
            for log in self._runs.values()
            if log.run.parent_run_id == parent_run_id
            and not (open_only and log.run.status.is_terminal)
        ]
        found.sort(key=lambda log: (log.run.created_at or _EPOCH, log.run.run_id))
        return [self._read_run(log) for log in found]

    def list_runs(
        self,
        status: RunStatus | None,
        workflow_name: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[WorkflowRun], str | None]:
        if limit < 1:
            raise ValueError(f"list_runs limit must be at least 1, got {limit}")
        runs = [
            log.run
            for log in self._runs.values()
            if (status is None or log.run.status == status)
            and (workflow_name is None or log.run.workflow_name == workflow_name)
        ]
        runs.sort(key=_run_order)
        if cursor is not None:
            after = decode_run_cursor(cursor)
            runs = [run for run in runs if _run_order(run) > after]
        page = [self._read_run(self._runs[run.run_id]) for run in runs[:limit]]
        if len(runs) <= limit:
            return page, None
        last = page[-1]
        assert last.created_at is not None  # every stored run has one
        return page, encode_run_cursor(last.created_at, last.run_id)

    # -- the log ------------------------------------------------------------------------------

    def commit(self, commit: Commit, now: datetime) -> int:
        run_id = commit.run_id
        log = self._runs.get(run_id)
        if log is None:
            raise run_not_found(run_id)
        run = log.run
        events = number_events(commit, run.last_sequence, now)
        check_run_open(run_id, run.status)
        check_lease(commit, run.lease_owner, run.lease_expires_at, now)
        # Hook moves are checked before completion keys: a second payload for a hook is
        # "already received" even though its hook.received event is a duplicate completion too.
        received = commit.hook_received
        if received is not None:
            check_hook_pending(run_id, received[0], self._hook_status(run_id, received[0]))
        if commit.hook_expired is not None:
            hook_id = commit.hook_expired
            check_hook_pending(run_id, hook_id, self._hook_status(run_id, hook_id))
        new_keys = _new_completion_keys(run_id, events, log.completion_keys)
        created = self._check_runs_created(commit, now) if commit.runs_created else []
        # Everything is checked: from here on nothing can fail.
        log.events.extend(events)
        log.completion_keys.update(new_keys)
        self._update_run(run, commit, now)
        if commit.status is not None or commit.lease_change.change is not Change.KEEP:
            self._index_lease(run)
        run.last_sequence += len(events)
        timer = commit.timer_change
        if timer.change is Change.CLEAR:
            self._timers.pop(run_id, None)
        elif timer.change is Change.SET:
            assert timer.fire_at is not None
            self._set_timer(run_id, timer.fire_at, None)
        for hook in commit.hooks_created:
            if (run_id, hook.hook_id) not in self._hooks:
                self._hooks[(run_id, hook.hook_id)] = _copy_hook(hook, run_id=run_id)
                self._hooks_of.setdefault(run_id, []).append(hook.hook_id)
        if received is not None:
            hook = self._hooks[(run_id, received[0])]
            hook.status, hook.payload, hook.received_at = HookStatus.RECEIVED, received[1], now
        if commit.hook_expired is not None:
            self._hooks[(run_id, commit.hook_expired)].status = HookStatus.EXPIRED
        head = run.last_sequence
        if created or commit.notices or commit.hooks_disposed:  # (rare: keep steps lean)
            self._reach_out(commit, created, now)
        if self.keep_finished is not None and run.status.is_terminal:
            self._ended.append(run_id)
            while len(self._ended) > self.keep_finished:
                self._forget(self._ended.popleft())
        return head

    def _forget(self, run_id: str) -> None:
        """Drop an ended run and everything of it (``keep_finished``)."""
        log = self._runs.pop(run_id, None)
        if log is None:
            return
        key = log.run.idempotency_key
        if key is not None and self._idempotency.get(key) == run_id:
            del self._idempotency[key]
        self._timers.pop(run_id, None)
        self._unowned.discard(run_id)
        for hook_id in self._hooks_of.pop(run_id, []):
            self._hooks.pop((run_id, hook_id), None)
        for checkpoint in [k for k in self._checkpoints if k[0] == run_id]:
            del self._checkpoints[checkpoint]

    def _reach_out(
        self, commit: Commit, created: list[tuple[WorkflowRun, list[Event]]], now: datetime
    ) -> None:
        """The parts of a commit beyond its own events: runs created, notices, hooks disposed."""
        for hook_id in commit.hooks_disposed:
            disposed = self._hooks.get((commit.run_id, hook_id))
            if disposed is not None and disposed.status is HookStatus.PENDING:
                disposed.status = HookStatus.DISPOSED
        for record, numbered in created:
            self._insert_run(record, numbered)
        for notice in commit.notices:
            self._deliver(notice, now)

    def _check_runs_created(
        self, commit: Commit, now: datetime
    ) -> list[tuple[WorkflowRun, list[Event]]]:
        created = []
        ids = set()
        for run, events in commit.runs_created:
            if run.run_id in self._runs or run.run_id in ids:
                raise already_exists(run.run_id)
            if run.idempotency_key is not None:
                raise ValueError("a run created by a commit cannot have an idempotency key")
            ids.add(run.run_id)
            created.append(new_run_record(run, events, now))
        return created

    def _insert_run(self, record: WorkflowRun, numbered: list[Event]) -> None:
        completion_keys = _new_completion_keys(record.run_id, numbered, set())
        stored = _copy_run(record)
        # A list of its own: the caller's list must not grow with the log.
        self._runs[record.run_id] = _RunLog(stored, list(numbered), set(completion_keys))
        self._index_lease(stored)

    def _deliver(self, notice: Notice, now: datetime) -> None:
        """Append a notice to its run (followed along a chain), or skip it (see ``Notice``)."""
        notice.placed = None
        log = self._runs.get(notice.run_id)
        seen = {notice.run_id}
        while (
            notice.follow_chain
            and log is not None
            and log.run.continued_to_run_id is not None
            and log.run.continued_to_run_id not in seen  # (a chain that loops: none carries it on)
        ):
            seen.add(log.run.continued_to_run_id)
            log = self._runs.get(log.run.continued_to_run_id)
        if log is None or log.run.status.is_terminal:
            return
        run = log.run
        key = notice.event.completion_key
        if key is not None and key in log.completion_keys:
            return
        event = notice.event.copy_for(run.run_id)
        event.place(run.last_sequence + 1, now)
        log.events.append(event)
        notice.placed = event
        if key is not None:
            log.completion_keys.add(key)
        run.last_sequence += 1
        run.updated_at = now
        if notice.wake_at is not None:
            self._set_timer(run.run_id, notice.wake_at, None)

    @staticmethod
    def _update_run(run: WorkflowRun, commit: Commit, now: datetime) -> None:
        if commit.status is not None:
            run.status = commit.status
        if commit.result is not None:
            run.result = commit.result
        if commit.error is not None:
            run.error = commit.error
        if commit.started_at is not None:
            run.started_at = commit.started_at
        if commit.completed_at is not None:
            run.completed_at = commit.completed_at
        if commit.recovery_attempts is not None:
            run.recovery_attempts = commit.recovery_attempts
        if commit.continued_to_run_id is not None:
            run.continued_to_run_id = commit.continued_to_run_id
        run.updated_at = now
        lease = commit.lease_change
        if lease.change is not Change.KEEP:  # cleared: both None
            run.lease_owner, run.lease_expires_at = lease.owner, lease.expires_at

    def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        log = self._runs.get(run_id)
        if log is None:
            return []
        # events[i] has sequence i + 1, so the events after ``n`` start at index ``n``.
        events = log.events[max(after_sequence, 0) :]
        if command_id is None:
            return events
        return [event for event in events if event.data.get("command_id") == command_id]

    # -- timers -------------------------------------------------------------------------------

    def schedule_timer(self, run_id: str, fire_at: datetime) -> None:
        """Set a run's timer alone: replays ``schedule_timer`` lines of file-storage journals
        written before timers were set only by commits."""
        self._set_timer(run_id, fire_at, None)

    def _set_timer(self, run_id: str, fire_at: datetime, claimed_until: datetime | None) -> None:
        self._timers[run_id] = (fire_at, claimed_until)
        if claimed_until is None:
            heapq.heappush(self._timer_heap, (fire_at, run_id))
        else:
            heapq.heappush(self._claim_heap, (claimed_until, fire_at, run_id))
        if len(self._timer_heap) + len(self._claim_heap) > 2 * len(self._timers) + 1_000:
            self._rebuild_timer_heap()

    def _rebuild_timer_heap(self) -> None:
        unclaimed: list[tuple[datetime, str]] = []
        claimed: list[tuple[datetime, datetime, str]] = []
        for run_id, (fire_at, claimed_until) in self._timers.items():
            if claimed_until is None:
                unclaimed.append((fire_at, run_id))
            else:
                claimed.append((claimed_until, fire_at, run_id))
        heapq.heapify(unclaimed)
        heapq.heapify(claimed)
        self._timer_heap, self._claim_heap = unclaimed, claimed

    def _release_expired_claims(self, now: datetime) -> None:
        """Claims that ran out make their timers unclaimed again (their claimer was lost)."""
        claims, timers = self._claim_heap, self._timers
        while claims and claims[0][0] <= now:
            claimed_until, fire_at, run_id = heapq.heappop(claims)
            if timers.get(run_id) == (fire_at, claimed_until):
                self._set_timer(run_id, fire_at, None)

    def claim_due_timers(self, now: datetime, limit: int, claim_for: timedelta) -> list[Timer]:
        self._release_expired_claims(now)
        heap, timers = self._timer_heap, self._timers
        due: list[tuple[datetime, str]] = []
        # Unclaimed timers come out in (fire_at, run_id) order: the oldest due first.
        while heap and heap[0][0] <= now and len(due) < limit:
            fire_at, run_id = heapq.heappop(heap)
            if timers.get(run_id) == (fire_at, None) and (fire_at, run_id) not in due[-1:]:
                due.append((fire_at, run_id))  # (a timer set twice to one time has 2 entries)
        self.set_timer_claims([run_id for _, run_id in due], now + claim_for)
        return [Timer(run_id, fire_at) for fire_at, run_id in due]

    def set_timer_claims(self, run_ids: list[str], claimed_until: datetime) -> None:
        for run_id in run_ids:
            self._set_timer(run_id, self._timers[run_id][0], claimed_until)

    def get_timer(self, run_id: str) -> Timer | None:
        entry = self._timers.get(run_id)
        return Timer(run_id, entry[0]) if entry is not None else None

    # -- schedules ----------------------------------------------------------------------------

    def _put_schedule(self, schedule: Schedule, poll_at: datetime | None) -> None:
        self._schedules[schedule.schedule_id] = (schedule, poll_at)
        if poll_at is not None:
            heapq.heappush(self._schedule_heap, (poll_at, schedule.schedule_id))
        if len(self._schedule_heap) > 2 * len(self._schedules) + 1_000:
            self._schedule_heap = [
                (at, schedule_id) for schedule_id, (_, at) in self._schedules.items() if at
            ]
            heapq.heapify(self._schedule_heap)

    def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        found = self._schedules.get(schedule.schedule_id)
        if found is not None:
            return found[0].copy(), False
        stored = schedule.copy()
        stored.revision = 1
        self._put_schedule(stored, stored.poll_at)
        return stored.copy(), True

    def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        found = self._schedules.get(schedule.schedule_id)
        if found is None or found[0].revision != expected_revision:
            return None
        stored = schedule.copy()
        stored.revision = expected_revision + 1
        self._put_schedule(stored, stored.poll_at)
        return stored.copy()

    def set_schedule_polls(self, schedule_ids: list[str], poll_at: datetime) -> None:
        for schedule_id in schedule_ids:
            self._put_schedule(self._schedules[schedule_id][0], poll_at)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        found = self._schedules.get(schedule_id)
        return found[0].copy() if found is not None else None

    def list_schedules(
        self, workflow_name: str | None, status: ScheduleStatus | None, limit: int, offset: int
    ) -> list[Schedule]:
        chosen = [
            schedule
            for schedule, _ in self._schedules.values()
            if (workflow_name is None or schedule.workflow_name == workflow_name)
            and (status is None or schedule.status == status)
        ]
        chosen.sort(key=lambda schedule: (schedule.created_at or _EPOCH, schedule.schedule_id))
        return [schedule.copy() for schedule in chosen[offset : offset + limit]]

    def due_schedules(self, now: datetime, limit: int) -> list[str]:
        """Ids of up to ``limit`` schedules whose poll time is ``<= now``, earliest first."""
        heap, schedules = self._schedule_heap, self._schedules
        due: list[str] = []
        while heap and heap[0][0] <= now and len(due) < limit:
            poll_at, schedule_id = heapq.heappop(heap)
            found = schedules.get(schedule_id)
            if found is not None and found[1] == poll_at and schedule_id not in due:
                due.append(schedule_id)
        return due

    def claim_due_schedules(
        self, now: datetime, limit: int, claim_for: timedelta
    ) -> list[Schedule]:
        due = self.due_schedules(now, limit)
        self.set_schedule_polls(due, now + claim_for)
        return [self._schedules[schedule_id][0].copy() for schedule_id in due]

    def next_schedule_poll(self) -> datetime | None:
        heap, schedules = self._schedule_heap, self._schedules
        while heap:
            poll_at, schedule_id = heap[0]
            found = schedules.get(schedule_id)
            if found is not None and found[1] == poll_at:
                return poll_at
            heapq.heappop(heap)
        return None

    # -- leases -------------------------------------------------------------------------------

    def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> list[str]:
        """Extend ``owner``'s leases among ``run_ids``; returns the ids it extended."""
        held = [
            run_id
            for run_id in dict.fromkeys(run_ids)
            if run_id in self._runs and self._runs[run_id].run.lease_owner == owner
        ]
        self.set_leases(held, owner, expires_at)
        return held

    def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int
    ) -> list[str]:
        heap = self._lease_heap
        expired = {run_id: self._runs[run_id].run for run_id in self._unowned}
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._lease_entry_live(entry):
                expired[entry[1]] = self._runs[entry[1]].run
        ordered = sorted(expired.values(), key=lambda run: (run.updated_at or _EPOCH, run.run_id))
        for run in ordered[limit:]:
            self._index_lease(run)  # expired, but beyond the limit: put back
        run_ids = [run.run_id for run in ordered[:limit]]
        self.set_leases(run_ids, owner, expires_at)
        return run_ids

    def next_wakeup(self) -> datetime | None:
        """The earliest time a timer becomes claimable or a pending/running run's lease ends."""
        times = [self._runs[run_id].run.updated_at or _EPOCH for run_id in self._unowned]
        unclaimed, claims, leases = self._timer_heap, self._claim_heap, self._lease_heap
        while unclaimed and self._timers.get(unclaimed[0][1]) != (unclaimed[0][0], None):
            heapq.heappop(unclaimed)
        if unclaimed:
            times.append(unclaimed[0][0])
        while claims and self._timers.get(claims[0][2]) != (claims[0][1], claims[0][0]):
            heapq.heappop(claims)
        if claims:
            # When the claim runs out (a claim never ends before its timer is due).
            times.append(max(claims[0][0], claims[0][1]))
        while leases and not self._lease_entry_live(leases[0]):
            heapq.heappop(leases)
        if leases:
            times.append(leases[0][0])
        return min(times, default=None)

    def set_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        for run_id in run_ids:
            run = self._runs[run_id].run
            run.lease_owner, run.lease_expires_at = owner, expires_at
            self._index_lease(run)

    def _index_lease(self, run: WorkflowRun) -> None:
        """Record where ``run`` now stands for the sweeper (after any lease or status change)."""
        run_id = run.run_id
        if run.status not in _LEASABLE_STATUSES:
            self._unowned.discard(run_id)
            return
        if run.lease_owner is None:
            self._unowned.add(run_id)
            return
        self._unowned.discard(run_id)
        if run.lease_expires_at is not None:  # a lease without an expiry never runs out
            heapq.heappush(self._lease_heap, (run.lease_expires_at, run_id))
            if len(self._lease_heap) > 2 * len(self._runs) + 1_000:
                self._rebuild_lease_index()

    def _lease_entry_live(self, entry: tuple[datetime, str]) -> bool:
        log = self._runs.get(entry[1])
        if log is None:
            return False
        run = log.run
        return (
            run.status in _LEASABLE_STATUSES
            and run.lease_owner is not None
            and run.lease_expires_at == entry[0]
        )

    def _rebuild_lease_index(self) -> None:
        self._lease_heap, self._unowned = [], set()
        leased = []
        for run_id, log in self._runs.items():
            run = log.run
            if run.status not in _LEASABLE_STATUSES:
                continue
            if run.lease_owner is None:
                self._unowned.add(run_id)
            elif run.lease_expires_at is not None:
                leased.append((run.lease_expires_at, run_id))
        heapq.heapify(leased)
        self._lease_heap = leased

    # -- hooks --------------------------------------------------------------------------------

    def _hook_status(self, run_id: str, hook_id: str) -> HookStatus | None:
        hook = self._hooks.get((run_id, hook_id))
        return hook.status if hook is not None else None

    def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        hook = self._hooks.get((run_id, hook_id))
        return _copy_hook(hook) if hook is not None else None

    def list_hooks(self, run_id: str | None, status: HookStatus | None) -> list[Hook]:
        if run_id is None:
            keys = sorted(self._hooks)
        else:
            keys = [(run_id, hook_id) for hook_id in sorted(self._hooks_of.get(run_id, ()))]
        return [
            _copy_hook(self._hooks[key])
            for key in keys
            if status is None or self._hooks[key].status == status
        ]

    # -- step checkpoints ---------------------------------------------------------------------

    def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        self._checkpoints[(run_id, step_id)] = data

    def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        return self._checkpoints.get((run_id, step_id))

    def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        self._checkpoints.pop((run_id, step_id), None)

    def keep_secret(self, name: str, candidate: str) -> str:
        return self._checkpoints.setdefault((SECRETS_RUN, name), candidate)


def _run_order(run: WorkflowRun) -> tuple[datetime, str]:
    assert run.created_at is not None  # every stored run has one
    return run.created_at, run.run_id


def _new_completion_keys(run_id: str, events: list[Event], recorded: set[str]) -> list[str]:
    """The completion keys ``events`` add; fails if one is recorded or repeats among them."""
    keys: list[str] = []
    for event in events:
        key = event.completion_key
        if key is not None:
            if key in recorded or key in keys:
                raise duplicate_completion(run_id, [key])
            keys.append(key)
    return keys


def _copy_run(run: WorkflowRun) -> WorkflowRun:
    return run.copy(context=copy.deepcopy(run.context) if run.context else {})


def _copy_hook(hook: Hook, run_id: str | None = None) -> Hook:
    metadata = copy.deepcopy(hook.metadata) if hook.metadata else {}
    return replace(hook, run_id=run_id or hook.run_id, metadata=metadata)


class InMemoryStorageBackend(StorageBackend):
    """Storage that lives as long as the process: for tests, the simulator and local runs."""

    shared_between_processes = False  # one process's memory
    kind = "in-memory storage"

    def to_config(self) -> dict[str, Any]:
        return {"type": "memory"}

    def __init__(self, keep_finished: int | None = None) -> None:
        """``keep_finished``: keep at most this many ended runs (the oldest endings are
        forgotten, with their logs); None keeps every run."""
        self._store = MemoryStore(keep_finished)

    def next_wakeup(self) -> datetime | None:
        """When the next timer or lease comes due (for drivers of virtual time: the simulator)."""
        return self._store.next_wakeup()

    def next_schedule_poll(self) -> datetime | None:
        """When the next schedule is to be polled (for drivers of virtual time)."""
        return self._store.next_schedule_poll()

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        return self._store.create_run(run, events, datetime.now(UTC))

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        return self._store.get_run(run_id)

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        return self._store.get_run_by_idempotency_key(key)

    async def list_children(
        self, parent_run_id: str, *, open_only: bool = False
    ) -> list[WorkflowRun]:
        return self._store.list_children(parent_run_id, open_only)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        return self._store.list_runs(status, workflow_name, limit, cursor)

    async def commit(self, commit: Commit) -> int:
        return self._store.commit(commit, commit.now or datetime.now(UTC))

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        return self._store.get_events(run_id, after_sequence, command_id)

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        return self._store.claim_due_timers(now, limit, claim_for)

    async def get_timer(self, run_id: str) -> Timer | None:
        return self._store.get_timer(run_id)

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        self._store.renew_leases(run_ids, owner, expires_at)

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        return self._store.claim_expired_leases(now, owner, expires_at, limit)

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        return self._store.get_hook(run_id, hook_id)

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        return self._store.list_hooks(run_id, status)

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        return self._store.create_schedule(schedule)

    async def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        return self._store.update_schedule(schedule, expected_revision)

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self._store.get_schedule(schedule_id)

    async def list_schedules(
        self,
        *,
        workflow_name: str | None = None,
        status: ScheduleStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Schedule]:
        return self._store.list_schedules(workflow_name, status, limit, offset)

    async def claim_due_schedules(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=10)
    ) -> list[Schedule]:
        return self._store.claim_due_schedules(now, limit, claim_for)

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        self._store.put_checkpoint(run_id, step_id, data)

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        return self._store.get_checkpoint(run_id, step_id)

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        self._store.delete_checkpoint(run_id, step_id)

    async def keep_secret(self, name: str, candidate: str) -> str:
        return self._store.keep_secret(name, candidate)


__all__ = ["InMemoryStorageBackend", "MemoryStore", "StoreTables", "TimerTable"]
