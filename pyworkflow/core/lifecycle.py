"""``pyworkflow.core.cancel_workflow``: the 0.4 import path of ``pyworkflow.cancel_workflow``.

The implementation needs a runtime (``pyworkflow.api``), which sits above ``core`` in the layers,
so ``core`` does not import it: ``pyworkflow.api`` registers itself here when it is imported,
and importing anything under ``pyworkflow`` imports ``pyworkflow/__init__.py``, which imports
``pyworkflow.api`` first. This module never imports a layer above ``core``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

_cancel: Callable[..., Awaitable[bool]] | None = None


def register_cancel(implementation: Callable[..., Awaitable[bool]]) -> None:
    """Called by ``pyworkflow.api`` on import."""
    global _cancel
    _cancel = implementation


async def cancel_workflow(
    run_id: str,
    reason: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    storage: Any = None,
    runtime: Any = None,
) -> bool:
    """``pyworkflow.cancel_workflow`` (see there)."""
    if _cancel is None:  # pragma: no cover - pyworkflow/__init__.py imports pyworkflow.api
        raise RuntimeError("pyworkflow.api is not imported: import pyworkflow first")
    return await _cancel(run_id, reason, wait, timeout, storage, runtime)


__all__ = ["cancel_workflow", "register_cancel"]
