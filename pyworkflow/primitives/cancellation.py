"""``shield()``: defer a workflow's cancellation while a block runs.

A cancellation request (``cancel_workflow``) makes every durable call the workflow waits on, or
issues, raise ``CancellationError``, except inside ``async with shield():``: durable calls in the
block run normally, and the error arrives at the first durable call after it. That is where
clean-up goes: ``except CancellationError:`` then ``async with shield(): await undo(...)``.
Everything inside is recorded, so a crash during the clean-up does not run a finished step
again. Outside a workflow ``shield()`` does nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pyworkflow.context import current_workflow


@asynccontextmanager
async def shield() -> AsyncIterator[None]:
    """Defer cancellation of the workflow while the block runs (see the module docstring)."""
    ctx = current_workflow()
    if ctx is None:
        yield
        return
    ctx.enter_shield()
    try:
        yield
    finally:
        ctx.exit_shield()


__all__ = ["shield"]
