"""Waiting for something in a test: poll with a deadline, never sleep to wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(
    check: Callable[[], Any],
    what: str,
    deadline: float,
    *,
    still_possible: Callable[[], None] | None = None,
) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy, and return that.

    Fails once ``deadline`` seconds have passed; ``still_possible`` is called between tries and
    raises when waiting longer is pointless (the process that would do it has died).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if still_possible is not None:
            still_possible()
        assert loop.time() < end, f"timed out after {deadline}s waiting for {what}"
        await asyncio.sleep(0.02)
