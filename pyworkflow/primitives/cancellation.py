"""``shield()``: defer a workflow's cancellation while a block runs — not implemented yet.

Workflow cancellation (``cancel_workflow``) has not landed in this release (see ``docs/api.md``,
"Pending"), so there is nothing to defer. ``shield()`` raises ``NotImplementedError`` rather than
pretend: code that relies on it must not believe its clean-up is protected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def shield() -> AsyncIterator[None]:
    """Defer cancellation of the workflow while the block runs (pending: raises for now)."""
    raise NotImplementedError(
        "shield() is not implemented yet: workflow cancellation has not landed in this release,"
        " so there is nothing to defer. Remove the `async with shield():` wrapper for now."
    )
    yield  # pragma: no cover - makes this an async generator


__all__ = ["shield"]
