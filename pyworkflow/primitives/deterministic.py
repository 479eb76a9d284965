"""Deterministic values for workflow code: ``now()``, ``random()``, ``uuid4()``.

Inside a workflow they return the same values on every replay (logical time, a PRNG seeded by the
run id); outside a workflow they fall back to the real thing.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from datetime import UTC, datetime

from pyworkflow.context import current_workflow

# Values ``random()`` and ``uuid4()`` drew from runs' seeded streams in this process. Those streams
# are seeded by the run id, so such a value differs from run to run: the simulator's sweeps ask
# whether a run's code drew any (``seeded_draws``) before taking one run's ending for another's.
_seeded_draws = 0


def seeded_draws() -> int:
    """How many values workflow code has drawn from runs' seeded streams in this process."""
    return _seeded_draws


def now() -> datetime:
    """The workflow's logical time (aware UTC); the wall clock outside workflows."""
    ctx = current_workflow()
    return ctx.now() if ctx is not None else datetime.now(UTC)


def random() -> float:
    """A float in [0, 1) that replays identically."""
    global _seeded_draws
    ctx = current_workflow()
    if ctx is None:
        return _random.random()
    _seeded_draws += 1
    return ctx.random()


def uuid4() -> _uuid.UUID:
    """A UUID that replays identically."""
    global _seeded_draws
    ctx = current_workflow()
    if ctx is None:
        return _uuid.uuid4()
    _seeded_draws += 1
    return ctx.uuid4()


__all__ = ["now", "random", "seeded_draws", "uuid4"]
