"""When schedules fire (``pyworkflow.utils.slots``): cron in the schedule's zone across
daylight-saving changes, calendars, intervals, bounds, jitter, and clear errors for bad specs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pyworkflow import CalendarSpec, OverlapPolicy, ScheduleSpec, ScheduleStatus
from pyworkflow.utils.slots import jittered, next_slot, slot_key, slots_between

PRAGUE = ZoneInfo("Europe/Prague")


def local(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=PRAGUE)  # type: ignore[misc]


def in_prague(moments: list[datetime]) -> list[str]:
    return [m.astimezone(PRAGUE).strftime("%m-%d %H:%M %Z") for m in moments]


def test_a_0900_job_runs_at_0900_local_on_both_sides_of_both_changes() -> None:
    spec = ScheduleSpec(cron="0 9 * * *", timezone="Europe/Prague")
    spring = slots_between(spec, local(2026, 3, 28), local(2026, 3, 30, 23))
    assert in_prague(spring) == ["03-28 09:00 CET", "03-29 09:00 CEST", "03-30 09:00 CEST"]
    autumn = slots_between(spec, local(2026, 10, 24), local(2026, 10, 26, 23))
    assert in_prague(autumn) == ["10-24 09:00 CEST", "10-25 09:00 CET", "10-26 09:00 CET"]
    assert all(slot.tzinfo is UTC for slot in spring + autumn)


def test_a_local_time_that_does_not_exist_fires_once_at_the_next_valid_instant() -> None:
    spec = ScheduleSpec(cron="30 2 * * *", timezone="Europe/Prague")
    slots = slots_between(spec, local(2026, 3, 28), local(2026, 3, 30, 23))
    assert in_prague(slots) == ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]


def test_a_local_time_that_happens_twice_fires_once() -> None:
    spec = ScheduleSpec(cron="30 2 * * *", timezone="Europe/Prague")
    slots = slots_between(spec, local(2026, 10, 24), local(2026, 10, 26, 23))
    assert in_prague(slots) == ["10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"]


def test_a_stepping_expression_keeps_real_time_steps_across_the_change() -> None:
    spec = ScheduleSpec(cron="*/30 * * * *", timezone="Europe/Prague")
    slots = slots_between(spec, local(2026, 10, 25, 1, 45), local(2026, 10, 25, 3, 10))
    gaps = {later - earlier for earlier, later in zip(slots, slots[1:], strict=False)}
    assert gaps == {timedelta(minutes=30)}
    # 02:00 and 02:30 twice (summer time, then winter time), then 03:00.
    assert in_prague(slots) == [
        "10-25 02:00 CEST",
        "10-25 02:30 CEST",
        "10-25 02:00 CET",
        "10-25 02:30 CET",
        "10-25 03:00 CET",
    ]


def test_next_slot_is_strictly_after_and_a_slot_is_never_returned_twice() -> None:
    spec = ScheduleSpec(cron="0 * * * *")
    slot = next_slot(spec, datetime(2026, 1, 1, 10, tzinfo=UTC))
    assert slot == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert next_slot(spec, slot) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    hours = slots_between(spec, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    assert len(hours) == 25 and len(set(hours)) == 25  # both ends inclusive


def test_calendar_slots_count_days_from_monday_and_keep_their_seconds() -> None:
    spec = ScheduleSpec(
        calendar=CalendarSpec(second=15, minute=30, hour=8, day_of_week=[0, 4]),
        timezone="Europe/Prague",
    )
    slots = slots_between(spec, local(2026, 12, 7), local(2026, 12, 14, 23))  # Mon .. next Mon
    assert [s.astimezone(PRAGUE).strftime("%a %H:%M:%S") for s in slots] == [
        "Mon 08:30:15",
        "Fri 08:30:15",
        "Mon 08:30:15",
    ]


def test_intervals_count_from_start_at_or_the_anchor() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    spec = ScheduleSpec(interval=timedelta(minutes=5), start_at=start)
    assert next_slot(spec, start - timedelta(days=1)) == start  # start_at itself is a slot
    assert next_slot(spec, start + timedelta(minutes=7)) == start + timedelta(minutes=10)
    anchored = ScheduleSpec(interval=timedelta(hours=1))
    assert next_slot(anchored, start, anchor=start) == start + timedelta(hours=1)
    with pytest.raises(ValueError, match="start_at or an anchor"):
        next_slot(anchored, start)


def test_bounds_and_several_parts_together() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spec = ScheduleSpec(
        cron="0 12 * * *",
        interval=timedelta(hours=8),
        start_at=start,
        end_at=start + timedelta(days=1),
    )
    slots = slots_between(spec, start - timedelta(days=3), start + timedelta(days=9))
    assert [s.hour for s in slots] == [0, 8, 12, 16, 0]
    assert next_slot(spec, start + timedelta(days=1)) is None  # past end_at: nothing left


def test_jitter_is_deterministic_per_schedule_and_slot_and_below_the_bound() -> None:
    spec = ScheduleSpec(cron="0 * * * *", jitter=timedelta(minutes=10))
    slot = datetime(2026, 1, 1, 10, tzinfo=UTC)
    first = jittered(spec, "nightly", slot)
    assert first == jittered(spec, "nightly", slot)
    assert slot <= first < slot + timedelta(minutes=10)
    spread = {jittered(spec, f"s{i}", slot) for i in range(50)}
    assert len(spread) > 40  # spread out, not one offset for all
    assert jittered(ScheduleSpec(cron="0 * * * *"), "x", slot) == slot
    assert slot_key("nightly", slot) == "schedule:nightly:2026-01-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a cron expression, an interval or a calendar"),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"interval": timedelta(0)}, "interval must be positive"),
        ({"cron": "0 9 * * *", "start_at": datetime(2026, 1, 1)}, "must be timezone-aware"),
        ({"cron": "0 9 * * *", "jitter": timedelta(seconds=-1)}, "jitter must not be negative"),
    ],
)
def test_a_bad_spec_is_refused_when_built(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScheduleSpec(**kwargs)  # type: ignore[arg-type]


def test_a_bad_calendar_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="day_of_week=7"):
        CalendarSpec(day_of_week=7)
    with pytest.raises(ValueError, match="hour"):
        CalendarSpec(hour=[])


def test_the_enums_have_the_contract_values() -> None:
    assert [p.value for p in OverlapPolicy] == [
        "skip",
        "buffer_one",
        "buffer_all",
        "cancel_other",
        "allow_all",
    ]
    assert [s.value for s in ScheduleStatus] == ["active", "paused", "deleted"]
