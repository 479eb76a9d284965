"""Waiting that never swallows a cancellation.

On Python 3.11, ``asyncio.wait_for(event.wait(), timeout)`` returns normally when the event is
set in the same loop iteration as the task is cancelled: the cancellation is lost, and a loop
around it runs on for ever (``asyncio.run`` then waits for it at exit, for ever). ``wait_event``
uses ``asyncio.timeout``, which keeps a cancellation that arrives with the event. And
``with suppress(CancelledError): await task`` after ``task.cancel()`` also swallows a cancel of
the *caller*; ``cancel_and_wait`` passes that one on.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds passed (False)."""
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it ended; a cancellation of the caller meanwhile is
    re-raised (not mistaken for the task's own)."""
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise  # the caller was cancelled while it waited


__all__ = ["cancel_and_wait", "wait_event"]
