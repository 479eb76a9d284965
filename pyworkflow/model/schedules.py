"""Schedules as data: when a schedule fires (``ScheduleSpec``, ``CalendarSpec``), what happens
when a slot comes due while earlier runs are unfinished (``OverlapPolicy``), and the ``Schedule``
record storage keeps.

Pure data, checked as it is built (a bad cron expression or time zone, an empty spec, a
non-positive interval raise ``ValueError`` naming the value; cron expressions are read by
``cronsim``). When a spec's slots fall is ``pyworkflow.utils.slots``'s business; this module
imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# A calendar field: one value, several, or None for every value.
CalendarField = int | list[int] | None


class OverlapPolicy(StrEnum):
    """What a slot that comes due while earlier runs of the schedule are unfinished does."""

    SKIP = "skip"  # counted in ``skipped_runs``, no run
    BUFFER_ONE = "buffer_one"  # at most one start waits for the running one to end
    BUFFER_ALL = "buffer_all"  # every start waits, in order
    CANCEL_OTHER = "cancel_other"  # the running one is cancelled, this one starts
    ALLOW_ALL = "allow_all"  # starts regardless

    def __str__(self) -> str:
        return self.value


class ScheduleStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day_of_month": (1, 31),
    "month": (1, 12),
    "day_of_week": (0, 6),
}


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """Calendar firing times: every combination of the fields' values. A field is one value, a
    list of values, or None for all of them. ``day_of_week`` counts from 0 = Monday. As in cron,
    when both ``day_of_month`` and ``day_of_week`` are given, a day matching either fires."""

    second: CalendarField = 0
    minute: CalendarField = 0
    hour: CalendarField = 0
    day_of_month: CalendarField = None
    month: CalendarField = None
    day_of_week: CalendarField = None

    def __post_init__(self) -> None:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            values = [value] if isinstance(value, int) else value
            if values is None:
                continue
            if not isinstance(values, list) or not values:
                raise ValueError(f"CalendarSpec.{name} must be an int, a non-empty list or None")
            for item in values:
                if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                    raise ValueError(
                        f"CalendarSpec.{name}={value!r}: each value must be in {low}..{high}"
                    )

    def values(self, name: str) -> list[int] | None:
        value = getattr(self, name)
        if value is None:
            return None
        return sorted(set([value] if isinstance(value, int) else value))


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a schedule fires: a cron expression (5 fields, in ``timezone``), a fixed
    ``interval``, a ``calendar``, or several of them (the slots of all). ``start_at`` and
    ``end_at`` bound the slots (inclusive); ``jitter`` delays each start by a deterministic
    amount below it (the same for a given schedule and slot)."""

    cron: str | None = None
    interval: timedelta | None = None
    calendar: CalendarSpec | list[CalendarSpec] | None = None
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter: timedelta | None = None

    def __post_init__(self) -> None:
        if self.cron is None and self.interval is None and not self.calendar:
            raise ValueError("a ScheduleSpec needs a cron expression, an interval or a calendar")
        if self.interval is not None and self.interval <= timedelta(0):
            raise ValueError(f"ScheduleSpec.interval must be positive, got {self.interval}")
        if self.jitter is not None and self.jitter < timedelta(0):
            raise ValueError(f"ScheduleSpec.jitter must not be negative, got {self.jitter}")
        for name in ("start_at", "end_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"ScheduleSpec.{name} must be timezone-aware, got {value}")
        if self.start_at and self.end_at and self.end_at < self.start_at:
            raise ValueError("ScheduleSpec.end_at is before its start_at")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def calendars(self) -> list[CalendarSpec]:
        calendar = self.calendar
        if calendar is None:
            return []
        return list(calendar) if isinstance(calendar, list) else [calendar]


@dataclass(slots=True)
class Schedule:
    """A schedule as storage keeps it (the counters count slots, by what became of them)."""

    schedule_id: str
    workflow_name: str
    spec: ScheduleSpec
    status: ScheduleStatus = ScheduleStatus.ACTIVE
    args: str = "[]"  # JSON text, as a run's input
    kwargs: str = "{}"
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_run_at: datetime | None = None
    next_run_time: datetime | None = None
    last_run_id: str | None = None
    running_run_ids: list[str] = field(default_factory=list)
    buffered_count: int = 0
    total_runs: int = 0
    successful_runs: int = 0
    failed_runs: int = 0
    skipped_runs: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


__all__ = [
    "CalendarSpec",
    "OverlapPolicy",
    "Schedule",
    "ScheduleSpec",
    "ScheduleStatus",
]
