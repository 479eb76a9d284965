"""What a name or key may hold. Names (of workflows, steps, hooks) and keys (idempotency keys, run
ids) end up in storage columns and log lines: a NUL character, refused only by PostgreSQL (with a
raw driver error), or a control character is refused here, where it enters, on every backend."""

from __future__ import annotations

MAX_LENGTH = 1_000


def checked_name(what: str, value: object, *, control: bool = False) -> str:
    """``value`` when it is a usable name; ``ValueError`` naming ``what`` otherwise. ``control``:
    control characters other than NUL are allowed (keys)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long; at most {MAX_LENGTH} are allowed"
        )
    if "\x00" in value or (not control and any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise ValueError(f"{what} {value!r} contains a control character, which it may not hold")
    return value


__all__ = ["MAX_LENGTH", "checked_name"]
