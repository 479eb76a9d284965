"""Deterministic values for workflow code: ``now()``, ``random()``, ``uuid4()``.

Inside a workflow they return the same values on every replay (logical time, a PRNG seeded by the
run id); outside a workflow they fall back to the real thing.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from datetime import UTC, datetime

from pyworkflow.context import current_workflow


def now() -> datetime:
    """The workflow's logical time (aware UTC); the wall clock outside workflows."""
    ctx = current_workflow()
    return ctx.now() if ctx is not None else datetime.now(UTC)


def random() -> float:
    """A float in [0, 1) that replays identically."""
    ctx = current_workflow()
    return ctx.random() if ctx is not None else _random.random()


def uuid4() -> _uuid.UUID:
    """A UUID that replays identically."""
    ctx = current_workflow()
    return ctx.uuid4() if ctx is not None else _uuid.uuid4()


__all__ = ["now", "random", "uuid4"]
