"""Schedules served by the engine: each due slot is claimed through storage and fires once.

A schedule is one storage record (``model.schedules.Schedule``) written compare-and-set on its
``revision``. Serving one is three steps, each safe to repeat or to lose halfway:

1. **Decide** (``plan``, pure): which due slots start a run, which are skipped or buffered by the
   overlap policy, which running runs ended (counted as successful or failed), the next slot and
   the next poll time. A run decided on gets a deterministic id and idempotency key from the
   schedule and its slot, and is written into ``running_run_ids`` and ``starting`` by the same
   compare-and-set that moves ``next_run_time`` on. Two schedulers deciding at once: one write
   wins, the other reloads and decides again from what won.
2. **Create** the runs of ``starting`` (``start_run`` with that id and key: a second attempt
   finds the run instead of starting another) and enqueue their first activations.
3. **Confirm**: a second compare-and-set drops the created runs from ``starting``. A scheduler
   that dies before it leaves ``starting`` non-empty and the poll time close: whoever claims the
   schedule next creates what is missing (step 2 again), so a crash between "run decided" and
   "run created" neither loses the run nor starts it twice.

Which schedules to look at comes from storage: ``claim_due_schedules`` hands out those whose poll
time has come, one claimant at a time (a claim ends after ``SCHEDULE_CLAIM``). The poll time is
the next slot's start (with its jitter), sooner while buffered starts wait for a run to end or
runs wait to be created, and never for a paused or deleted schedule.

Slots missed while nothing served the schedule (all workers down): the latest fires, the earlier
ones are counted as skipped, unless they are within the spec's ``catchup_window`` of now (those
fire too, each subject to the overlap policy). ``resume`` computes the next slot from now.
Counters of runs that ended are brought up to date whenever the schedule is served, and in what
``get_schedule`` returns (it looks at the running runs without writing).

This module never runs workflow code; the run's code must be registered in the process that
creates its run (a scheduler lacking it leaves the run in ``starting`` for one that has it).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from pyworkflow.core.registry import get_workflow, workflow_definition_of
from pyworkflow.core.schedules import declared_schedules
from pyworkflow.engine.outcome import chain_end
from pyworkflow.engine.ports import Clock, TaskQueue
from pyworkflow.model.exceptions import (
    ScheduleNotFoundError,
    SerializationError,
    WorkflowAlreadyRunningError,
    WorkflowNotFoundError,
)
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec, ScheduleStatus
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.serialization import deserialize_args, serialize_args
from pyworkflow.storage.base import StorageBackend
from pyworkflow.utils.slots import jittered, next_slot, slot_key, slots_between

if TYPE_CHECKING:
    from pyworkflow.core.registry import WorkflowDefinition

# How long a claimed schedule is left to its claimant before another may take it.
SCHEDULE_CLAIM = timedelta(seconds=10)
# While buffered starts wait for a running run to end, the schedule is looked at again after half
# the time since the last start, within these bounds. (The run's ending wakes it sooner:
# ``schedule_run_ended``; this is for an ending whose wake-up was lost with its process.)
RECHECK_MIN = timedelta(seconds=10)
RECHECK_MAX = timedelta(minutes=10)
# How soon a run decided on but not yet created (or a cancellation decided on but not yet
# requested) is looked at again.
START_RETRY = timedelta(seconds=5)
# How long a schedule whose serving failed (its stored arguments no longer fit the workflow, say)
# waits before it is tried again.
FAILURE_BACKOFF = timedelta(minutes=1)
# Compare-and-set attempts before a scheduler leaves a schedule to its next poll.
MAX_RACES = 20

# Keys of a scheduled run's ``context``.
SCHEDULE_ID = "schedule_id"
SCHEDULED_TIME = "scheduled_time"
TRIGGERED = "triggered"
BACKFILLED = "backfilled"
BACKFILL_MARK = "#backfill"  # ends a ``starting`` entry of a backfill

_SCHEDULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_schedule_id(schedule_id: str) -> str:
    if not isinstance(schedule_id, str) or not _SCHEDULE_ID.match(schedule_id):
        raise ValueError(
            f"invalid schedule id {schedule_id!r}: 1 to 128 letters, digits, '_', '.', ':' or"
            " '-', starting with a letter or digit"
        )
    return schedule_id


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def slot_run_id(schedule_id: str, slot: datetime) -> str:
    """The id of the run a slot starts: the same slot names the same run, whoever starts it."""
    return f"sched-{schedule_id}-{_stamp(slot)}"


def trigger_run_id(schedule_id: str, now: datetime | None, number: int = 0) -> str:
    """The id of the run a ``trigger_schedule`` at ``now`` starts as the schedule's run
    ``number`` (None: the prefix all trigger ids share)."""
    if now is None:
        return f"sched-{schedule_id}-trigger-"
    return f"sched-{schedule_id}-trigger-{_stamp(now)}-{number}"


def _ended(status: RunStatus | None) -> bool:
    return status is not None and status.is_terminal and status is not RunStatus.CONTINUED_AS_NEW


@dataclass
class Plan:
    """What serving a schedule decided: the record to write (what to do after writing it is in
    the record: ``starting``, ``cancelling``)."""

    schedule: Schedule


def _recheck_delay(schedule: Schedule, now: datetime) -> timedelta:
    since = now - (schedule.last_run_at or now)
    return min(RECHECK_MAX, max(RECHECK_MIN, since / 2))


def poll_time(schedule: Schedule, now: datetime) -> datetime | None:
    """When a scheduler must look at ``schedule`` next (None: never, until someone changes it)."""
    times: list[datetime] = []
    if schedule.starting or schedule.cancelling:
        times.append(now + START_RETRY)
    if schedule.status is ScheduleStatus.ACTIVE:
        if schedule.next_run_time is not None:
            times.append(jittered(schedule.spec, schedule.schedule_id, schedule.next_run_time))
        if schedule.buffered_slots:
            times.append(now + _recheck_delay(schedule, now))
    return min(times, default=None)


def settle(schedule: Schedule, statuses: dict[str, RunStatus | None]) -> bool:
    """Count the runs of ``running_run_ids`` that ended (``statuses``: each run's, or None when
    it does not exist yet) and drop the created ones from ``starting``. True if anything moved."""
    moved = False
    for run_id in list(schedule.running_run_ids):
        status = statuses.get(run_id)
        if status is not None and run_id in schedule.starting:
            del schedule.starting[run_id]
            moved = True
        if status is None and run_id not in schedule.starting:
            # Neither created nor to be created (storage lost it): nothing will end it.
            schedule.running_run_ids.remove(run_id)
            moved = True
        elif _ended(status):
            schedule.running_run_ids.remove(run_id)
            if run_id in schedule.cancelling:
                schedule.cancelling.remove(run_id)
            if status is RunStatus.COMPLETED:
                schedule.successful_runs += 1
            else:
                schedule.failed_runs += 1
            moved = True
    return moved


def _start(schedule: Schedule, slot: datetime, now: datetime) -> None:
    run_id = slot_run_id(schedule.schedule_id, slot)
    if run_id in schedule.running_run_ids:
        return  # decided already (counted once)
    schedule.running_run_ids.append(run_id)
    schedule.starting[run_id] = slot.isoformat()
    schedule.total_runs += 1
    schedule.last_run_at = now
    schedule.last_run_id = run_id


def due_slots(schedule: Schedule, now: datetime) -> tuple[list[datetime], int]:
    """The slots due at ``now`` that fire (in order) and how many missed ones are skipped; moves
    ``next_run_time`` past them. Missed slots are counted, never kept: an interval schedule
    jumps over a long outage arithmetically, others walk it once (a cron of every minute down
    for a month: 43,200 steps)."""
    spec, anchor = schedule.spec, schedule.created_at
    window = spec.catchup_window
    kept: list[datetime] = []  # the due slots recent enough to fire (catchup_window)
    last: datetime | None = None
    total = 0
    slot = schedule.next_run_time
    while slot is not None and jittered(spec, schedule.schedule_id, slot) <= now:
        skip = _interval_jump(spec, slot, now)
        if skip:
            total += skip
            slot += skip * spec.interval  # type: ignore[operator]
            continue
        total += 1
        last = slot
        if window is not None and now - slot <= window:
            kept.append(slot)
        slot = next_slot(spec, slot, anchor=anchor)
    schedule.next_run_time = slot
    if last is None:
        return [], total
    fire = kept if kept and kept[-1] == last else [*kept, last]
    return fire, total - len(fire)


# An interval-only schedule more than this many slots behind jumps (the missed ones counted).
_WALK = 1_000


def _interval_jump(spec: ScheduleSpec, slot: datetime, now: datetime) -> int:
    """How many slots from ``slot`` on an interval-only spec may skip without being looked at:
    all but the last ``_WALK`` due ones and those inside the catch-up window (0: walk)."""
    interval = spec.interval
    if interval is None or spec.cron is not None or spec.calendars:
        return 0
    horizon = now - (spec.catchup_window or timedelta(0)) - (spec.jitter or timedelta(0))
    if spec.end_at is not None:
        horizon = min(horizon, spec.end_at)
    behind = (horizon - slot) // interval + 1 if horizon >= slot else 0
    return max(0, behind - _WALK)


def plan(schedule: Schedule, now: datetime, statuses: dict[str, RunStatus | None]) -> Plan:
    """Serve ``schedule`` at ``now``: see the module docstring. Pure; ``schedule`` is copied."""
    s = schedule.copy()
    result = Plan(s)
    settle(s, statuses)
    if s.status is ScheduleStatus.ACTIVE:
        # Buffered starts go first, one at a time, when nothing runs.
        if s.buffered_slots and not s.running_run_ids:
            _start(s, datetime.fromisoformat(s.buffered_slots.pop(0)), now)
        fire, missed = due_slots(s, now)
        s.skipped_runs += missed
        policy = s.overlap_policy
        for slot in fire:
            if not s.running_run_ids or policy is OverlapPolicy.ALLOW_ALL:
                _start(s, slot, now)
            elif policy is OverlapPolicy.SKIP:
                s.skipped_runs += 1
            elif policy is OverlapPolicy.BUFFER_ONE:
                if s.buffered_slots:
                    s.skipped_runs += 1
                else:
                    s.buffered_slots.append(slot.isoformat())
            elif policy is OverlapPolicy.BUFFER_ALL:
                s.buffered_slots.append(slot.isoformat())
            else:  # CANCEL_OTHER: the requests are made after this write (``cancelling``)
                s.cancelling += [r for r in s.running_run_ids if r not in s.cancelling]
                _start(s, slot, now)
        s.buffered_count = len(s.buffered_slots)
    s.poll_at = poll_time(s, now)
    return result


class ScheduleService:
    """The schedules part of ``Engine`` (a mixin: the engine provides the attributes)."""

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue
    # Told (schedule id, poll time) whenever this engine writes a schedule that has one: a
    # scheduler loop wakes for it instead of polling.
    schedule_listener: Callable[[str, datetime], None] | None = None

    if TYPE_CHECKING:

        async def start_run(
            self,
            definition: WorkflowDefinition,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            *,
            idempotency_key: str | None = None,
            run_id: str | None = None,
            activate_here: bool = False,
            context: dict[str, Any] | None = None,
        ) -> tuple[WorkflowRun, bool]: ...

        async def request_cancellation(self, run_id: str, reason: str | None = None) -> bool: ...

    # -- serving ------------------------------------------------------------------------------

    async def fire_due_schedules(self, limit: int = 100) -> list[str]:
        """Claim the schedules whose poll time has come and serve each; returns the ids of the
        runs created. Safe in any number of processes at once."""
        created: list[str] = []
        while True:
            claimed = await self.storage.claim_due_schedules(
                self.clock.now(), limit=limit, claim_for=SCHEDULE_CLAIM
            )
            for schedule in claimed:
                try:
                    created += await self.serve_schedule(schedule)
                except WorkflowNotFoundError as exc:
                    # Another process may know the workflow: its claim runs out for them.
                    logger.warning("schedule {}: {}", schedule.schedule_id, exc)
                except (TypeError, ValueError, SerializationError) as exc:
                    # What the schedule holds cannot run (arguments that no longer fit, data that
                    # does not decode): the same next time; look again after a while.
                    logger.warning(
                        "schedule {} failed ({}: {}); retried in {}",
                        schedule.schedule_id,
                        type(exc).__name__,
                        exc,
                        FAILURE_BACKOFF,
                    )
                    await self._back_off(schedule.schedule_id, exc)
                except Exception as exc:  # noqa: BLE001 - one schedule must not stop the rest
                    # Storage or the broker away, most likely: the claim runs out and the
                    # schedule is served again then (in ``SCHEDULE_CLAIM``).
                    logger.warning(
                        "schedule {} not served ({}: {}); again once its claim runs out",
                        schedule.schedule_id,
                        type(exc).__name__,
                        exc,
                    )
            if len(claimed) < limit:
                return created

    async def _back_off(self, schedule_id: str, error: Exception) -> None:
        """A schedule whose serving failed is looked at again after ``FAILURE_BACKOFF`` (its
        last error kept in ``metadata``), not at every claim. Best effort."""
        with contextlib.suppress(Exception):
            current = await self.storage.get_schedule(schedule_id)
            if current is None:
                return
            current.metadata["last_error"] = f"{type(error).__name__}: {error}"
            current.poll_at = self.clock.now() + FAILURE_BACKOFF
            await self._write(current, current.revision)

    async def serve_schedule(self, schedule: Schedule) -> list[str]:
        """Decide, create, confirm (module docstring) for one schedule; returns created runs.

        Nothing is decided unless the runs can be created here: the workflow must be registered
        in this process (``WorkflowNotFoundError`` otherwise: a process that has it serves it)
        and the stored arguments must fit it (``TypeError`` otherwise)."""
        _runnable(schedule)
        current: Schedule | None = schedule
        for _ in range(MAX_RACES):
            assert current is not None
            now = self.clock.now()
            decided = plan(current, now, await self._statuses(current))
            stored = await self._write(decided.schedule, current.revision)
            if stored is not None:
                break
            current = await self.storage.get_schedule(schedule.schedule_id)
            if current is None:
                return []
        else:
            return []  # others keep winning: they serve it
        return await self._create_starting(stored)

    async def schedule_run_ended(self, schedule_id: str) -> None:
        """A run of the schedule just ended: if starts wait in its buffer, make it due now
        (rather than at its next recheck). Best effort: the recheck is the safety net."""
        try:
            schedule = await self.storage.get_schedule(schedule_id)
            if schedule is None or not schedule.buffered_slots:
                return
            now = self.clock.now()
            if schedule.poll_at is not None and schedule.poll_at <= now:
                return
            schedule.poll_at = now
            await self._write(schedule, schedule.revision)
        except Exception as exc:  # noqa: BLE001 - the run's ending is recorded; this is a hint
            logger.debug("schedule {}: not woken after a run ended ({})", schedule_id, exc)

    async def _statuses(self, schedule: Schedule) -> dict[str, RunStatus | None]:
        statuses: dict[str, RunStatus | None] = {}
        for run_id in schedule.running_run_ids:
            run = await self.storage.get_run(run_id)
            if run is not None and run.status is RunStatus.CONTINUED_AS_NEW:
                run = await chain_end(self.storage, run)
            statuses[run_id] = None if run is None else run.status
        return statuses

    async def _write(self, schedule: Schedule, revision: int) -> Schedule | None:
        schedule.updated_at = self.clock.now()
        stored = await self.storage.update_schedule(schedule, revision)
        if stored is not None and stored.poll_at is not None and self.schedule_listener:
            self.schedule_listener(stored.schedule_id, stored.poll_at)
        return stored

    async def _cancel_for(self, schedule: Schedule, run_id: str) -> None:
        """Ask ``run_id`` (or, if it continued as new, the live run of its chain) to stop."""
        reason = f"schedule {schedule.schedule_id}: a new run started (overlap policy cancel_other)"
        run = await self.storage.get_run(run_id)
        if run is None:
            return  # storage lost it: nothing to stop
        if run.status is RunStatus.CONTINUED_AS_NEW:
            run = await chain_end(self.storage, run)
        with contextlib.suppress(WorkflowNotFoundError):
            await self.request_cancellation(run.run_id, reason)

    async def _create_starting(self, schedule: Schedule) -> list[str]:
        """Create the runs of ``starting``, make the requests of ``cancelling``, and confirm
        both in the record; returns the runs this call created."""
        if not schedule.starting and not schedule.cancelling:
            return []
        definition = get_workflow(schedule.workflow_name)
        args, kwargs = deserialize_args(schedule.args, schedule.kwargs)
        created: list[str] = []
        for run_id, entry in schedule.starting.items():
            slot = entry.removesuffix(BACKFILL_MARK)
            context: dict[str, Any] = {SCHEDULE_ID: schedule.schedule_id, SCHEDULED_TIME: slot}
            key = slot_key(schedule.schedule_id, datetime.fromisoformat(slot))
            if entry.endswith(BACKFILL_MARK):
                context[BACKFILLED] = True
            if run_id.startswith(trigger_run_id(schedule.schedule_id, None)):
                context[TRIGGERED] = True
                key = f"schedule:{schedule.schedule_id}:{run_id}"  # one per trigger
            try:
                run, new = await self.start_run(
                    definition, args, kwargs, idempotency_key=key, run_id=run_id, context=context
                )
            except WorkflowAlreadyRunningError:
                new = False  # created by an earlier attempt
            if new:
                created.append(run_id)
            # Enqueued whether new or not: an earlier creator may have died before enqueueing
            # (a second activation of a run finds nothing to do).
            await self.queue.enqueue_activation(run_id)
        for run_id in schedule.cancelling:
            await self._cancel_for(schedule, run_id)
        await self._confirm(schedule, set(schedule.cancelling))
        return created

    async def _confirm(self, schedule: Schedule, cancelled: set[str]) -> None:
        """Drop the runs just created from ``starting`` and those just asked to stop from
        ``cancelling``. Losing this race changes nothing: the next serving sees the runs exist
        and drops them then (and asks again: a second request is harmless)."""
        current: Schedule | None = schedule
        for _ in range(MAX_RACES):
            assert current is not None
            settled = current.copy()
            statuses = await self._statuses(settled)
            moved = settle(settled, statuses)
            asked = [run_id for run_id in settled.cancelling if run_id in cancelled]
            settled.cancelling = [r for r in settled.cancelling if r not in cancelled]
            if not moved and not asked:
                return
            settled.poll_at = poll_time(settled, self.clock.now())
            if await self._write(settled, current.revision) is not None:
                return
            current = await self.storage.get_schedule(schedule.schedule_id)
            if current is None:
                return

    # -- operations ---------------------------------------------------------------------------

    async def create_schedule(
        self,
        workflow: Any,
        spec: ScheduleSpec,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        overlap_policy: OverlapPolicy | str = OverlapPolicy.SKIP,
        schedule_id: str | None = None,
    ) -> tuple[Schedule, bool]:
        """Store a new schedule (``False``: the id was taken; that schedule is returned)."""
        if not isinstance(spec, ScheduleSpec):
            raise TypeError(f"a schedule needs a ScheduleSpec, got {type(spec).__name__}")
        definition = workflow_definition_of(workflow)
        kwargs = kwargs or {}
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"workflow {definition.name!r}: {exc}") from None
        args_json, kwargs_json = serialize_args(args, kwargs)
        now = self.clock.now()
        schedule = Schedule(
            schedule_id=check_schedule_id(schedule_id or f"sched_{uuid.uuid4().hex[:16]}"),
            workflow_name=definition.name,
            spec=spec,
            args=args_json,
            kwargs=kwargs_json,
            overlap_policy=OverlapPolicy.of(overlap_policy),
            created_at=now,
            updated_at=now,
        )
        schedule.next_run_time = next_slot(spec, now, anchor=now)
        schedule.poll_at = poll_time(schedule, now)
        stored, created = await self.storage.create_schedule(schedule)
        if created and stored.poll_at is not None and self.schedule_listener:
            self.schedule_listener(stored.schedule_id, stored.poll_at)
        return stored, created

    async def declare_schedules(self) -> list[str]:
        """Create the schedules ``@scheduled_workflow`` declared (id: the workflow's name), or
        bring an existing one's spec and overlap policy up to date with the code; a paused or
        deleted one is left so. Returns the ids created."""
        created: list[str] = []
        for declared in declared_schedules():
            schedule, new = await self.create_schedule(
                declared.workflow_name,
                declared.spec,
                overlap_policy=declared.overlap_policy,
                schedule_id=declared.workflow_name,
            )
            if new:
                created.append(schedule.schedule_id)
            elif schedule.status is ScheduleStatus.ACTIVE and (
                schedule.spec != declared.spec or schedule.overlap_policy != declared.overlap_policy
            ):
                await self.update_schedule(
                    schedule.schedule_id, declared.spec, declared.overlap_policy
                )
        return created

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule with its counters up to date (runs that ended since it was last served
        are counted here, without writing). ``ScheduleNotFoundError`` when unknown."""
        schedule = await self.storage.get_schedule(schedule_id)
        if schedule is None:
            raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
        return await self._settled_view(schedule)

    async def _settled_view(self, schedule: Schedule) -> Schedule:
        if schedule.running_run_ids:
            settle(schedule, await self._statuses(schedule))
        return schedule

    async def list_schedules(
        self,
        workflow_name: str | None = None,
        status: ScheduleStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Schedule]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        found = await self.storage.list_schedules(
            workflow_name=workflow_name,
            status=None if status is None else ScheduleStatus(status),
            limit=limit,
            offset=offset,
        )
        return [await self._settled_view(schedule) for schedule in found]

    async def change_schedule(
        self,
        schedule_id: str,
        change: Callable[[Schedule, datetime], None],
        prepare: Callable[[Schedule], Awaitable[None]] | None = None,
    ) -> Schedule:
        """Apply ``change`` (which edits a copy in place, given now) compare-and-set, again on
        a race; the poll time is recomputed. ``prepare`` is awaited with each record read,
        before anything of it changes (to look up what ``change`` needs at that revision).
        ``ScheduleNotFoundError`` when unknown."""
        for _ in range(MAX_RACES * 5):
            current = await self.storage.get_schedule(schedule_id)
            if current is None:
                raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
            if prepare is not None:
                await prepare(current)
            edited = current.copy()
            now = self.clock.now()
            settle(edited, await self._statuses(edited))
            change(edited, now)
            edited.buffered_count = len(edited.buffered_slots)
            edited.poll_at = poll_time(edited, now)
            stored = await self._write(edited, current.revision)
            if stored is not None:
                return stored
        raise RuntimeError(f"schedule {schedule_id!r} kept changing under this update; try again")

    async def update_schedule(
        self,
        schedule_id: str,
        spec: ScheduleSpec | None = None,
        overlap_policy: OverlapPolicy | str | None = None,
    ) -> Schedule:
        if spec is not None and not isinstance(spec, ScheduleSpec):
            raise TypeError(f"a schedule needs a ScheduleSpec, got {type(spec).__name__}")
        policy = None if overlap_policy is None else OverlapPolicy.of(overlap_policy)

        def change(schedule: Schedule, now: datetime) -> None:
            _alive(schedule)
            _skip_due(schedule, now)
            if policy is not None:
                schedule.overlap_policy = policy
            if spec is not None:
                schedule.spec = spec
                schedule.next_run_time = next_slot(spec, now, anchor=schedule.created_at)

        return await self.change_schedule(schedule_id, change)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        def change(schedule: Schedule, now: datetime) -> None:
            _alive(schedule)
            _skip_due(schedule, now)
            schedule.status = ScheduleStatus.PAUSED

        return await self.change_schedule(schedule_id, change)

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Active again; the next slot counts from now (no burst of the slots missed while
        paused)."""

        def change(schedule: Schedule, now: datetime) -> None:
            _alive(schedule)
            if schedule.status is not ScheduleStatus.ACTIVE:
                schedule.status = ScheduleStatus.ACTIVE
                schedule.next_run_time = next_slot(schedule.spec, now, anchor=schedule.created_at)

        return await self.change_schedule(schedule_id, change)

    async def delete_schedule(self, schedule_id: str) -> Schedule:
        """Soft: the record stays (``deleted``), fires nothing more, and its id stays taken."""

        def change(schedule: Schedule, now: datetime) -> None:
            _skip_due(schedule, now)
            schedule.status = ScheduleStatus.DELETED
            schedule.skipped_runs += len(schedule.buffered_slots)  # they will never start
            schedule.buffered_slots.clear()
            schedule.next_run_time = None

        return await self.change_schedule(schedule_id, change)

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Start a run now, outside the spec and regardless of the overlap policy."""
        chosen: list[str] = []

        def change(schedule: Schedule, now: datetime) -> None:
            _alive(schedule)
            run_id = trigger_run_id(schedule.schedule_id, now, schedule.total_runs)
            chosen[:] = [run_id]
            schedule.running_run_ids.append(run_id)
            schedule.starting[run_id] = now.isoformat()
            schedule.total_runs += 1
            schedule.last_run_at = now
            schedule.last_run_id = run_id

        stored = await self.change_schedule(schedule_id, change)
        await self._create_starting(stored)
        return chosen[0]

    async def backfill_schedule(
        self, schedule_id: str, start_time: datetime, end_time: datetime
    ) -> list[str]:
        """One run per slot of the spec in ``[start_time, end_time]`` (each slot's own run: a
        slot that already has one, by an earlier backfill or by the schedule, starts nothing
        new); returns the window's runs, in slot order. Only slots the schedule has passed
        (before its next slot and now): later ones are the schedule's to fire, and a buffered
        one starts when its turn comes. Starts regardless of the overlap policy, also while
        paused."""
        for name, value in (("start_time", start_time), ("end_time", end_time)):
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError(f"backfill {name} must be a timezone-aware datetime, got {value}")
        if end_time < start_time:
            raise ValueError("backfill end_time is before its start_time")
        current = await self.storage.get_schedule(schedule_id)
        if current is None:
            raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
        slots = slots_between(current.spec, start_time, end_time, anchor=current.created_at)
        run_ids = [slot_run_id(schedule_id, slot) for slot in slots]
        taken: set[str] = set()

        async def look(record: Schedule) -> None:
            # What the record holds at this revision (before ended runs are settled out of it),
            # then what storage holds: a run that left the record earlier exists by now.
            taken.clear()
            taken.update(record.running_run_ids)
            for run_id in run_ids:
                if run_id not in taken and await self.storage.get_run(run_id) is not None:
                    taken.add(run_id)

        def change(schedule: Schedule, now: datetime) -> None:
            _alive(schedule)
            # Slots the schedule has yet to reach are its own to fire, and buffered ones will
            # start anyway: a backfill takes only those behind it.
            bound = now
            if schedule.status is ScheduleStatus.ACTIVE and schedule.next_run_time is not None:
                bound = min(bound, schedule.next_run_time - timedelta(microseconds=1))
            buffered = set(schedule.buffered_slots)
            window[:] = []
            for slot, run_id in zip(slots, run_ids, strict=True):
                if slot > bound or slot.isoformat() in buffered:
                    continue
                window.append(run_id)
                if run_id in taken:
                    continue
                schedule.running_run_ids.append(run_id)
                schedule.starting[run_id] = slot.isoformat() + BACKFILL_MARK
                schedule.total_runs += 1
                schedule.last_run_at = now
                schedule.last_run_id = run_id

        window: list[str] = []
        stored = await self.change_schedule(schedule_id, change, look)
        await self._create_starting(stored)
        return window


def _runnable(schedule: Schedule) -> None:
    definition = get_workflow(schedule.workflow_name)
    args, kwargs = deserialize_args(schedule.args, schedule.kwargs)
    try:
        definition.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"the arguments stored with schedule {schedule.schedule_id!r} do not fit workflow"
            f" {definition.name!r} any more: {exc}"
        ) from None


def _skip_due(schedule: Schedule, now: datetime) -> None:
    """Slots due but not served yet when the schedule is paused, changed or deleted: skipped
    (they are not started by an operation that stops or changes the schedule)."""
    if schedule.status is ScheduleStatus.ACTIVE and schedule.next_run_time is not None:
        fire, missed = due_slots(schedule, now)
        schedule.skipped_runs += len(fire) + missed


def _alive(schedule: Schedule) -> None:
    if schedule.status is ScheduleStatus.DELETED:
        raise ScheduleNotFoundError(f"schedule {schedule.schedule_id!r} was deleted")


__all__ = [
    "SCHEDULED_TIME",
    "SCHEDULE_ID",
    "Plan",
    "ScheduleService",
    "check_schedule_id",
    "due_slots",
    "plan",
    "poll_time",
    "settle",
    "slot_run_id",
    "trigger_run_id",
]
