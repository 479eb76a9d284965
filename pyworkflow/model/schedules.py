"""Schedules as data: when a schedule fires (``ScheduleSpec``, ``CalendarSpec``), what happens
when a slot comes due while earlier runs are unfinished (``OverlapPolicy``), and the ``Schedule``
record storage keeps.

Pure data, checked as it is built (a bad cron expression or time zone, an empty spec, a
non-positive interval raise ``ValueError`` naming the value; cron expressions are read by
``cronsim``; durations may be written as ``"5m"``, seconds or a ``timedelta``). When a spec's
slots fall is ``pyworkflow.utils.slots``'s business; this module imports nothing of the package
outside the data model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from pyworkflow.model.duration import parse_duration

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

    @classmethod
    def of(cls, value: OverlapPolicy | str) -> OverlapPolicy:
        """``value`` as a policy; ``ValueError`` naming the valid ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(policy.value for policy in cls)
            raise ValueError(f"unknown overlap policy {value!r}: use one of {valid}") from None


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


def _duration(name: str, value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"ScheduleSpec.{name}: {exc}") from None


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
    catchup_window: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("interval", "jitter", "catchup_window"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, timedelta):
                object.__setattr__(self, name, _duration(name, value))
        if self.cron is None and self.interval is None and not self.calendar:
            raise ValueError("a ScheduleSpec needs a cron expression, an interval or a calendar")
        if self.interval is not None and self.interval <= timedelta(0):
            raise ValueError(f"ScheduleSpec.interval must be positive, got {self.interval}")
        if self.catchup_window is not None and self.catchup_window < timedelta(0):
            raise ValueError(
                f"ScheduleSpec.catchup_window must not be negative, got {self.catchup_window}"
            )
        if isinstance(self.calendar, tuple):
            object.__setattr__(self, "calendar", list(self.calendar))
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
    """A schedule as storage keeps it. The counters count slots by what became of them:
    ``total_runs`` runs started, ``successful_runs`` / ``failed_runs`` of those that ended
    (``failed_runs`` includes cancelled ones), ``skipped_runs`` slots that started nothing.

    The rest is the scheduler's bookkeeping: ``revision`` (storage's compare-and-set counter),
    ``poll_at`` (when a scheduler must look at the schedule next; None: never),
    ``starting`` (run id -> slot of runs decided on but maybe not yet created),
    ``buffered_slots`` (slots waiting for the running ones to end, ``buffered_count`` of them)
    and ``cancelling`` (runs ``cancel_other`` decided to stop, until the requests are made).
    """

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
    revision: int = 0
    poll_at: datetime | None = None
    starting: dict[str, str] = field(default_factory=dict)
    buffered_slots: list[str] = field(default_factory=list)
    cancelling: list[str] = field(default_factory=list)

    def copy(self) -> Schedule:
        """A copy sharing nothing mutable with this one (the spec is immutable)."""
        return replace(
            self,
            running_run_ids=list(self.running_run_ids),
            metadata=copy.deepcopy(self.metadata) if self.metadata else {},
            starting=dict(self.starting),
            buffered_slots=list(self.buffered_slots),
            cancelling=list(self.cancelling),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--output json`` prints and storage keeps)."""
        data: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "spec":
                value = _spec_to_dict(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, list | dict):
                value = json.loads(json.dumps(value))
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        values = dict(data)
        values["spec"] = _spec_from_dict(values["spec"])
        values["status"] = ScheduleStatus(values.get("status", "active"))
        values["overlap_policy"] = OverlapPolicy(values.get("overlap_policy", "skip"))
        for name in _TIMES:
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        known = set(cls.__slots__)
        return cls(**{key: value for key, value in values.items() if key in known})


_TIMES = ("created_at", "updated_at", "last_run_at", "next_run_time", "poll_at")
_SPEC_DURATIONS = ("interval", "jitter", "catchup_window")


def _spec_to_dict(spec: ScheduleSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"timezone": spec.timezone}
    if spec.cron is not None:
        data["cron"] = spec.cron
    for name in _SPEC_DURATIONS:
        value = getattr(spec, name)
        if value is not None:
            data[name] = value.total_seconds()
    for name in ("start_at", "end_at"):
        value = getattr(spec, name)
        if value is not None:
            data[name] = value.isoformat()
    if spec.calendar is not None:
        data["calendar"] = [
            {name: getattr(calendar, name) for name in _RANGES} for calendar in spec.calendars
        ]
        data["calendar_list"] = isinstance(spec.calendar, list)
    return data


def _spec_from_dict(data: dict[str, Any]) -> ScheduleSpec:
    values: dict[str, Any] = {"timezone": data.get("timezone", "UTC"), "cron": data.get("cron")}
    for name in _SPEC_DURATIONS:
        if data.get(name) is not None:
            values[name] = timedelta(seconds=data[name])
    for name in ("start_at", "end_at"):
        if data.get(name) is not None:
            values[name] = datetime.fromisoformat(data[name])
    if data.get("calendar") is not None:
        calendars = [CalendarSpec(**item) for item in data["calendar"]]
        values["calendar"] = calendars if data.get("calendar_list") else calendars[0]
    return ScheduleSpec(**values)


def schedule_to_json(schedule: Schedule) -> str:
    return json.dumps(schedule.to_dict(), separators=(",", ":"), sort_keys=True)


def schedule_from_json(text: str) -> Schedule:
    return Schedule.from_dict(json.loads(text))


__all__ = [
    "CalendarSpec",
    "OverlapPolicy",
    "Schedule",
    "ScheduleSpec",
    "ScheduleStatus",
    "schedule_from_json",
    "schedule_to_json",
]
