"""Durations as users write them: ``30``, ``1.5``, ``timedelta(hours=2)``, ``"1h30m"``, ``"500ms"``.

A duration string is one or more ``<number><unit>`` parts, optionally separated by spaces, summed:
``"2d4h"``, ``"1h 30m"``, ``"1.5s"``. Units are case-insensitive: ``ms``, ``s``, ``m``, ``h``,
``d``, ``w`` (and the spelled-out forms ``sec``, ``min``, ``hour``, ``day``, ``week``, ...). Every
bad input -- negative, empty, an unknown unit, a bare number string, a bool -- is a ``ValueError``
that quotes the input and lists the valid forms.

Pure computation: this module must never read a clock (callers pass ``now``) or import anything
from the package.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from numbers import Real

Duration = str | int | float | timedelta

VALID_FORMS = (
    "seconds as an int or float >= 0, a timedelta >= 0, or a string such as "
    "'30s', '5m', '2h', '3d', '1w', '1h30m', '1h 30m', '500ms' or '1.5s'"
)

_MICROSECONDS_PER_UNIT = {
    "ms": 1_000,
    "msec": 1_000,
    "millisecond": 1_000,
    "milliseconds": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "secs": 1_000_000,
    "second": 1_000_000,
    "seconds": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "mins": 60_000_000,
    "minute": 60_000_000,
    "minutes": 60_000_000,
    "h": 3_600_000_000,
    "hr": 3_600_000_000,
    "hrs": 3_600_000_000,
    "hour": 3_600_000_000,
    "hours": 3_600_000_000,
    "d": 86_400_000_000,
    "day": 86_400_000_000,
    "days": 86_400_000_000,
    "w": 604_800_000_000,
    "week": 604_800_000_000,
    "weeks": 604_800_000_000,
}

# One "<number><unit>" part, with the spaces around it.
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_duration(value: Duration) -> timedelta:
    """The ``timedelta`` that ``value`` describes; ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise _invalid(value, "a bool is not a duration")
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise _invalid(value, "durations cannot be negative")
        return value
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, Real):
        return _from_seconds(value)
    raise _invalid(value, f"a value of type {type(value).__name__} is not a duration")


def to_seconds(value: Duration) -> float:
    """The duration in seconds, as a float."""
    return parse_duration(value).total_seconds()


def resolve_wake_time(value: Duration | datetime, now: datetime) -> datetime:
    """When a sleep of ``value`` started at ``now`` ends.

    A datetime means "until then": naive datetimes are UTC, and a time already past gives
    ``now``. Anything else is ``now + parse_duration(value)``. The result is expressed the way
    ``now`` is (aware in ``now``'s zone, or naive UTC when ``now`` is naive).
    """
    if not isinstance(value, datetime):
        return now + parse_duration(value)
    if now.tzinfo is None:
        wake = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    else:
        wake = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(
            now.tzinfo
        )
    return max(wake, now)


def format_duration(seconds: float, digits: int = 3) -> str:
    """``93784.5`` -> ``"1d 2h 3m 4.5s"``: whole days, hours and minutes, then the seconds to
    ``digits`` significant digits (left out when a bigger unit is there and they are 0)."""
    whole, fraction = divmod(seconds, 1)
    minutes, secs = divmod(int(whole), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if secs or fraction or not parts:
        parts.append(f"{secs + fraction:.{digits}g}s")
    return " ".join(parts)


def _from_seconds(seconds: Real) -> timedelta:
    as_float = float(seconds)
    if math.isnan(as_float) or math.isinf(as_float):
        raise _invalid(seconds, "a duration must be a finite number")
    if as_float < 0:
        raise _invalid(seconds, "durations cannot be negative")
    try:
        return timedelta(seconds=seconds if isinstance(seconds, int) else as_float)
    except OverflowError:
        raise _invalid(seconds, "the duration is too large") from None


@functools.lru_cache(maxsize=512)  # a workflow names the same few durations, again and again
def _parse_text(text: str) -> timedelta:
    if not text.strip():
        raise _invalid(text, "the string is empty")
    if text.strip().startswith("-"):
        raise _invalid(text, "durations cannot be negative")
    total = Decimal(0)
    position = 0
    while position < len(text):
        part = _PART.match(text, position)
        if part is None:
            raise _invalid(text, f"cannot read {text[position:].strip()!r}")
        number, unit = part.group(1), part.group(2).lower()
        if not unit:
            raise _invalid(text, f"the number {number} needs a unit")
        if unit not in _MICROSECONDS_PER_UNIT:
            raise _invalid(text, f"unknown unit {part.group(2)!r}")
        total += Decimal(number) * _MICROSECONDS_PER_UNIT[unit]
        position = part.end()
    try:
        return timedelta(microseconds=int(total.to_integral_value()))
    except OverflowError:
        raise _invalid(text, "the duration is too large") from None


def _invalid(value: object, reason: str) -> ValueError:
    return ValueError(f"invalid duration {value!r}: {reason}; expected {VALID_FORMS}")


__all__ = [
    "VALID_FORMS",
    "Duration",
    "format_duration",
    "parse_duration",
    "resolve_wake_time",
    "to_seconds",
]
