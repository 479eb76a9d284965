"""Duration parsing: every accepted form, and clear errors that quote the bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pyworkflow.utils.duration import parse_duration, resolve_wake_time, to_seconds

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d4h", timedelta(days=2, hours=4)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0.1s", timedelta(milliseconds=100)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("  1d 2h 3m 4s  ", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1H30M", timedelta(hours=1, minutes=30)),
        ("500MS", timedelta(milliseconds=500)),
        ("5 min", timedelta(minutes=5)),
        ("2 hours", timedelta(hours=2)),
        ("0s", timedelta(0)),
        (".5s", timedelta(milliseconds=500)),
        (30, timedelta(seconds=30)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=3), timedelta(minutes=3)),
        (timedelta(0), timedelta(0)),
    ],
)
def test_parse_duration_accepts(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "cannot read"),
        ("5x", "unknown unit 'x'"),
        ("h", "cannot read"),
        ("5", "needs a unit"),
        ("1h30", "needs a unit"),
        ("-5s", "negative"),
        ("1h -30m", "cannot read"),
        ("5s!", "cannot read"),
        (-1, "negative"),
        (-0.5, "negative"),
        (timedelta(seconds=-1), "negative"),
        (True, "bool"),
        (False, "bool"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (None, "NoneType"),
        ([1], "list"),
        (10**20, "too large"),
        ("9999999999w", "too large"),
    ],
    ids=repr,
)
def test_parse_duration_rejects_with_the_input_quoted(value: Any, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(value)
    message = str(raised.value)
    assert f"invalid duration {value!r}:" in message
    assert reason in message
    assert "'1h30m'" in message  # lists the valid forms


def test_to_seconds() -> None:
    assert to_seconds("1h30m") == 5400.0
    assert to_seconds(2) == 2.0
    assert to_seconds("500ms") == 0.5
    assert to_seconds(timedelta(minutes=1)) == 60.0
    with pytest.raises(ValueError, match="'nope'"):
        to_seconds("nope")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1h", NOW + timedelta(hours=1)),
        (90, NOW + timedelta(seconds=90)),
        (timedelta(days=1), NOW + timedelta(days=1)),
        (datetime(2024, 3, 2, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)),
        (datetime(2024, 3, 2), datetime(2024, 3, 2, tzinfo=UTC)),
        (datetime(2024, 2, 1, tzinfo=UTC), NOW),
        (datetime(2024, 2, 1), NOW),
        (
            datetime(2024, 3, 1, 15, 0, tzinfo=timezone(timedelta(hours=2))),
            datetime(2024, 3, 1, 13, 0, tzinfo=UTC),
        ),
    ],
)
def test_resolve_wake_time(value: Any, expected: datetime) -> None:
    assert resolve_wake_time(value, NOW) == expected


def test_resolve_wake_time_naive_datetime_is_utc() -> None:
    wake = resolve_wake_time(datetime(2024, 3, 1, 13, 0), NOW)
    assert wake == datetime(2024, 3, 1, 13, 0, tzinfo=UTC)
    assert wake.tzinfo is not None


def test_resolve_wake_time_keeps_the_convention_of_now() -> None:
    naive_now = datetime(2024, 3, 1, 12, 0)
    wake = resolve_wake_time(datetime(2024, 3, 1, 13, 0, tzinfo=UTC), naive_now)
    assert wake == datetime(2024, 3, 1, 13, 0)
    assert wake.tzinfo is None
    assert resolve_wake_time("5m", naive_now) == datetime(2024, 3, 1, 12, 5)


def test_resolve_wake_time_rejects_bad_durations() -> None:
    with pytest.raises(ValueError, match="'soon'"):
        resolve_wake_time("soon", NOW)


def test_format_duration_names_whole_units_then_the_seconds() -> None:
    from pyworkflow.model.duration import format_duration

    assert format_duration(93784.5) == "1d 2h 3m 4.5s"
    assert format_duration(726) == "12m 6s"
    assert format_duration(3600) == "1h"
    assert format_duration(0) == "0s"
    assert format_duration(6.354321) == "6.35s"
    assert format_duration(6.354321, digits=6) == "6.35432s"
