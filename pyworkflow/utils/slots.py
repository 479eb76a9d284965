"""When a schedule's slots fall: ``next_slot`` (strictly after an instant), ``slots_between``
(a window, for backfills and missed slots) and ``jittered`` (a slot's deterministic start).

Cron expressions are evaluated by ``cronsim`` (a maintained library; no cron parsing here) in the
schedule's time zone, so a 09:00 Europe/Prague job runs at 09:00 local time on both sides of a
daylight-saving change. A local time that does not exist that day (02:30 when clocks jump from
02:00 to 03:00) fires once, at the next valid instant (03:00); a local time that happens twice
(02:30 when clocks go back) fires once, at its first occurrence. Expressions that step through
the day (``*/30 * * * *``) keep stepping in real time across the change. Calendars are turned
into cron expressions (plus their second). Intervals count from ``start_at`` (itself a slot)
or the anchor the caller gives (the schedule's creation; its first slot is one interval later).
Every instant returned is aware, in UTC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from cronsim import CronSim

from pyworkflow.model.schedules import CalendarSpec, ScheduleSpec

# How far ``slots_between`` looks at most: a window of more slots is refused, not walked.
MAX_SLOTS = 100_000


def _calendar_cron(calendar: CalendarSpec) -> str:
    def field(name: str, shift: int = 0) -> str:
        values = calendar.values(name)
        if values is None:
            return "*"
        return ",".join(
            str((value + shift) % 7 if name == "day_of_week" else value) for value in values
        )

    # cron counts days of the week from 0 = Sunday; CalendarSpec from 0 = Monday.
    return " ".join(
        [
            field("minute"),
            field("hour"),
            field("day_of_month"),
            field("month"),
            field("day_of_week", shift=1),
        ]
    )


def _cron_after(expression: str, spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    local = after.astimezone(spec.zone)
    for moment in CronSim(expression, local):
        yield moment.astimezone(UTC)


def _candidates(spec: ScheduleSpec, after: datetime, anchor: datetime | None) -> list[datetime]:
    """The first slot strictly after ``after`` of each part of the spec."""
    found: list[datetime] = []
    if spec.cron is not None:
        found += _first(_cron_after(spec.cron, spec, after), after)
    for calendar in spec.calendars:
        seconds = calendar.values("second") or list(range(60))
        # Each minute the calendar names fires at each of its seconds: look from a minute back.
        minutes = _cron_after(_calendar_cron(calendar), spec, after - timedelta(minutes=1))
        for minute in minutes:
            later = [minute + timedelta(seconds=s) for s in seconds]
            due = [moment for moment in later if moment > after]
            if due:
                found.append(due[0])
                break
    if spec.interval is not None:
        # ``start_at`` is a slot itself; a schedule's creation (the anchor) is not: its first
        # slot is one interval later.
        start = spec.start_at or anchor
        if start is None:
            raise ValueError("an interval schedule needs start_at or an anchor to count from")
        first = start if spec.start_at is not None else start + spec.interval
        if after < first:
            found.append(first.astimezone(UTC))
        else:
            steps = (after - start) // spec.interval + 1
            found.append((start + steps * spec.interval).astimezone(UTC))
    return found


def _first(moments: Iterator[datetime], after: datetime) -> list[datetime]:
    for moment in moments:
        if moment > after:
            return [moment]
    return []


def next_slot(
    spec: ScheduleSpec, after: datetime, *, anchor: datetime | None = None
) -> datetime | None:
    """The first slot of ``spec`` strictly after ``after`` (aware), within ``start_at`` ..
    ``end_at``; None once the schedule has no slot left. ``anchor`` is where an interval counts
    from when the spec has no ``start_at``."""
    if after.tzinfo is None:
        raise ValueError(f"next_slot needs an aware instant, got {after}")
    if spec.start_at is not None and after < spec.start_at:
        after = spec.start_at - timedelta(microseconds=1)  # start_at itself may be a slot
    candidates = _candidates(spec, after, anchor)
    if not candidates:
        return None
    slot = min(candidates)
    if spec.end_at is not None and slot > spec.end_at:
        return None
    return slot


def slots_between(
    spec: ScheduleSpec, start: datetime, end: datetime, *, anchor: datetime | None = None
) -> list[datetime]:
    """Every slot in ``[start, end]``, in order (each once). ``ValueError`` past ``MAX_SLOTS``."""
    slots: list[datetime] = []
    slot = next_slot(spec, start - timedelta(microseconds=1), anchor=anchor)
    while slot is not None and slot <= end:
        slots.append(slot)
        if len(slots) > MAX_SLOTS:
            raise ValueError(f"more than {MAX_SLOTS} slots between {start} and {end}")
        slot = next_slot(spec, slot, anchor=anchor)
    return slots


def jittered(spec: ScheduleSpec, schedule_id: str, slot: datetime) -> datetime:
    """When the run of ``slot`` starts: the slot plus a deterministic share of ``jitter`` (the
    same for a given schedule and slot, whoever computes it)."""
    if not spec.jitter:
        return slot
    key = f"{schedule_id}|{slot.astimezone(UTC).isoformat()}".encode()
    fraction = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    micros = int(spec.jitter / timedelta(microseconds=1) * fraction)
    return slot + timedelta(microseconds=micros)


def slot_key(schedule_id: str, slot: datetime) -> str:
    """The idempotency key of the run a slot starts: the same slot never starts two runs."""
    return f"schedule:{schedule_id}:{slot.astimezone(UTC).isoformat()}"


__all__ = ["MAX_SLOTS", "jittered", "next_slot", "slot_key", "slots_between"]
