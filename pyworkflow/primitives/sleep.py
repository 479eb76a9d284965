"""``sleep``: a durable pause. Inside a workflow it is a timer row, not a held worker.

Accepts ``"30s"``, ``"5m"``, ``"2h"``, ``"3d"``, ``"1w"``, ``"1h30m"``, seconds, a ``timedelta`` or
a future ``datetime``. Outside a workflow it simply waits with ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pyworkflow.context import current_workflow
from pyworkflow.utils.duration import resolve_wake_time


async def sleep(duration: Any) -> None:
    """Pause the workflow durably for ``duration`` (or until a ``datetime``)."""
    ctx = current_workflow()
    if ctx is None:
        now = datetime.now(UTC)
        await asyncio.sleep((resolve_wake_time(duration, now) - now).total_seconds())
        return
    await ctx.sleep(duration)


__all__ = ["sleep"]
