"""Oracles for schedules: what must hold of every schedule of a simulation, whatever the faults.

- **no slot twice**: the schedule counts every run it started once (``total_runs`` equals the
  runs that name it), and no two runs name the same slot;
- **no run before its slot, nor long after**: a run the schedule fired was created at or after
  its slot's start (the slot plus its jitter), within ``LATE_START`` of it unless the overlap
  policy buffers, and its slot is a slot of the spec the schedule had then, in the schedule's
  time zone (cron slots are checked with ``cronsim`` directly);
- **every due slot accounted for**: over each stretch of time the schedule was active with one
  spec, the slots that came due equal the runs fired for them plus the slots skipped and the
  slots buffered (``skipped_runs``, ``buffered_count``); triggered and backfilled runs are
  counted apart;
- **counters equal what the logs show**: ``successful_runs`` / ``failed_runs`` are the runs that
  completed / failed or were cancelled, ``running_run_ids`` the others;
- **nothing left behind**: when schedules were last served (the end of the last ``run_for``),
  no schedule's next slot was overdue by more than a claim's length (``served_until``; None:
  never served, nothing to check);
- **cancel_other cancels**: under ``cancel_other``, a run still going more than ``LATE_START``
  after the next run started ended cancelled.

``history`` is what the simulation did to each schedule: ``(time, operation, spec, policy)`` for
create, update, pause, resume and delete, in order (spec and policy: those the operation set).
Each check returns plain-language violations.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from pyworkflow.engine.schedules import (
    BACKFILLED,
    SCHEDULE_CLAIM,
    SCHEDULE_ID,
    SCHEDULED_TIME,
    TRIGGERED,
)
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.utils.slots import jittered, next_slot

History = list[tuple[datetime, str, ScheduleSpec | None, str | None]]

# Past this many due slots, a stretch is not walked slot by slot (a check, not a benchmark).
_MAX_WALK = 200_000
# How late after its slot's start a run may be created when it did not wait in a buffer: a
# scheduler's crash costs a claim (10 s) and a retry (5 s); faults come in runs of a few.
LATE_START = timedelta(minutes=10)
_BUFFERING = (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL)


def _periods(history: History) -> list[tuple[ScheduleSpec, datetime, datetime | None]]:
    """The stretches the schedule was active: (spec, from, until; None: still active)."""
    periods: list[tuple[ScheduleSpec, datetime, datetime | None]] = []
    spec: ScheduleSpec | None = None
    start: datetime | None = None
    for at, op, new_spec, _ in history:
        if op == "create":
            spec, start = new_spec, at
        elif op == "update" and new_spec is not None and start is not None and spec is not None:
            periods.append((spec, start, at))
            spec, start = new_spec, at
        elif op == "update" and new_spec is not None:
            spec = new_spec
        elif op in ("pause", "delete") and start is not None and spec is not None:
            periods.append((spec, start, at))
            start = None
        elif op == "resume" and start is None:
            start = at
    if start is not None and spec is not None:
        periods.append((spec, start, None))
    return periods


def _due_count(
    spec: ScheduleSpec,
    schedule: Schedule,
    after: datetime,
    until: datetime | None,
) -> int:
    """Slots of ``spec`` after ``after`` that came due by ``until`` (jitter included), or, for
    the open stretch, those before the schedule's next slot."""
    anchor = schedule.created_at
    count = 0
    slot = next_slot(spec, after, anchor=anchor)
    while slot is not None and count < _MAX_WALK:
        if until is not None and jittered(spec, schedule.schedule_id, slot) > until:
            break
        if until is None and (schedule.next_run_time is None or slot >= schedule.next_run_time):
            break
        count += 1
        slot = next_slot(spec, slot, anchor=anchor)
    return count


def _is_slot(spec: ScheduleSpec, slot: datetime, anchor: datetime | None) -> bool:
    """Whether ``slot`` is a slot of ``spec``: a cron slot is checked with ``cronsim`` in the
    spec's zone directly (not through the code under test), the rest through ``next_slot``."""
    before = slot - timedelta(microseconds=1)
    if spec.cron is not None and not spec.calendars and spec.interval is None:
        local = before.astimezone(ZoneInfo(spec.timezone))
        return next(iter(CronSim(spec.cron, local))).astimezone(UTC) == slot
    return next_slot(spec, before, anchor=anchor) == slot


def schedule_problems(
    schedule: Schedule,
    runs: list[WorkflowRun],
    history: History,
    served_until: datetime | None,
    ends: dict[str, WorkflowRun] | None = None,
) -> list[str]:
    """Violations of the module docstring's rules by one schedule (``schedule``: as
    ``get_schedule`` shows it; ``runs``: every run naming it, first runs of chains only)."""
    name = f"schedule {schedule.schedule_id}"
    problems: list[str] = []
    if schedule.total_runs != len(runs):
        problems.append(
            f"{name}: total_runs is {schedule.total_runs} but {len(runs)} runs name it (a slot"
            " counted twice, or a run started that was not counted)"
        )
    fired = [
        run for run in runs if not run.context.get(TRIGGERED) and not run.context.get(BACKFILLED)
    ]
    slots = Counter(run.context.get(SCHEDULED_TIME) for run in fired)
    problems += [f"{name}: slot {slot} started {n} runs" for slot, n in slots.items() if n > 1]
    specs = [spec for _, _, spec, _ in history if spec is not None] or [schedule.spec]
    policies = {OverlapPolicy(p) for *_, p in history if p is not None} | {schedule.overlap_policy}
    buffering = bool(policies & set(_BUFFERING))
    for run in fired:
        slot = datetime.fromisoformat(str(run.context.get(SCHEDULED_TIME)))
        start = jittered(schedule.spec, schedule.schedule_id, slot)
        if run.created_at is not None and run.created_at < min(
            jittered(spec, schedule.schedule_id, slot) for spec in specs
        ):
            problems.append(
                f"{name}: run {run.run_id} was created at {run.created_at.isoformat()}, before"
                f" its slot's start {start.isoformat()}"
            )
        late = None if run.created_at is None else run.created_at - start
        if late is not None and late > LATE_START and not buffering:
            problems.append(
                f"{name}: run {run.run_id} was created {late} after its slot's start"
                f" {start.isoformat()} (a slot decided on but its run not created?)"
            )
        if not any(_is_slot(spec, slot, schedule.created_at) for spec in specs):
            problems.append(
                f"{name}: run {run.run_id} names {slot.isoformat()}, which is not a slot of the"
                f" schedule's spec (in time zone {schedule.spec.timezone})"
            )
    # Every due slot: fired, skipped or buffered.
    due = sum(_due_count(spec, schedule, start, until) for spec, start, until in _periods(history))
    accounted = len(fired) + schedule.skipped_runs + schedule.buffered_count
    if history and due != accounted:
        problems.append(
            f"{name}: {due} slots came due, but {len(fired)} fired + {schedule.skipped_runs}"
            f" skipped + {schedule.buffered_count} buffered = {accounted}"
        )
    # Counters against the logs.
    ended = {
        RunStatus.COMPLETED: sum(run.status is RunStatus.COMPLETED for run in runs),
        RunStatus.FAILED: sum(
            run.status in (RunStatus.FAILED, RunStatus.CANCELLED) for run in runs
        ),
    }
    if schedule.successful_runs != ended[RunStatus.COMPLETED]:
        problems.append(
            f"{name}: successful_runs is {schedule.successful_runs}, the logs show"
            f" {ended[RunStatus.COMPLETED]} completed runs"
        )
    if schedule.failed_runs != ended[RunStatus.FAILED]:
        problems.append(
            f"{name}: failed_runs is {schedule.failed_runs}, the logs show"
            f" {ended[RunStatus.FAILED]} failed or cancelled runs"
        )
    going = {run.run_id for run in runs if not run.status.is_terminal}
    if set(schedule.running_run_ids) != going:
        problems.append(
            f"{name}: running_run_ids {sorted(schedule.running_run_ids)} but the runs not ended"
            f" are {sorted(going)}"
        )
    if policies == {OverlapPolicy.CANCEL_OTHER} and ends is not None:
        problems += _overlapping(name, fired, ends)
    if (
        served_until is not None
        and schedule.status.value == "active"
        and schedule.next_run_time is not None
    ):
        late = served_until - jittered(schedule.spec, schedule.schedule_id, schedule.next_run_time)
        if late > SCHEDULE_CLAIM + timedelta(seconds=1):
            problems.append(
                f"{name}: its next slot {schedule.next_run_time.isoformat()} is {late} overdue"
            )
    return problems


def _overlapping(name: str, fired: list[WorkflowRun], ends: dict[str, WorkflowRun]) -> list[str]:
    """Under ``cancel_other``: a run that went on long after the next one started was stopped."""
    problems = []
    ordered = sorted(fired, key=lambda run: str(run.context.get(SCHEDULED_TIME)))
    for run, following in zip(ordered, ordered[1:], strict=False):
        end = ends.get(run.run_id, run)
        if following.created_at is None or end.updated_at is None or not end.status.is_terminal:
            continue
        if end.updated_at - following.created_at > LATE_START and end.status is not (
            RunStatus.CANCELLED
        ):
            problems.append(
                f"{name}: run {run.run_id} ended {end.status} at {end.updated_at.isoformat()},"
                f" long after run {following.run_id} started (cancel_other did not cancel it)"
            )
    return problems


def schedules(
    found: list[Schedule],
    runs: dict[str, WorkflowRun],
    ends: dict[str, WorkflowRun],
    history: dict[str, History],
    served_until: datetime | None,
) -> list[str]:
    """``schedule_problems`` for every schedule; ``ends``: each first run's chain end (a run
    that continued as new ends as its chain does)."""
    named: dict[str, list[WorkflowRun]] = {}
    for run in runs.values():
        schedule_id = run.context.get(SCHEDULE_ID)
        if schedule_id is not None and run.continued_from_run_id is None:
            end = ends.get(run.run_id, run)
            shown = run.copy(status=end.status) if end is not run else run
            named.setdefault(str(schedule_id), []).append(shown)
    problems: list[str] = []
    for schedule in found:
        problems += schedule_problems(
            schedule,
            named.get(schedule.schedule_id, []),
            history.get(schedule.schedule_id, []),
            served_until,
            ends,
        )
    return problems


__all__ = ["History", "schedule_problems", "schedules"]
