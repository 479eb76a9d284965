"""How backends store a time: integer microseconds since the Unix epoch.

Exact, compact and ordered; read back as aware UTC datetimes. Shared by the SQL backends and
Redis (none of which should import another backend's module for it). Pure functions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are rejected (storage keeps UTC)."""
    if value.tzinfo is None:
        raise ValueError(f"storage needs aware datetimes (UTC), got naive {value.isoformat()}")
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_or_none(value: datetime | None) -> int | None:
    return micros(value) if value is not None else None


def time_of(value: int) -> datetime:
    """The aware UTC datetime of a microsecond count (the inverse of ``micros``)."""
    # Exact for every microsecond count below 2**53 (until year 2255): the float division is
    # correctly rounded and fromtimestamp rounds back to the nearest microsecond.
    return datetime.fromtimestamp(value / 1_000_000, UTC)


def time_or_none(value: int | None) -> datetime | None:
    return EPOCH + timedelta(microseconds=value) if value is not None else None


__all__ = ["EPOCH", "micros", "micros_or_none", "time_of", "time_or_none"]
