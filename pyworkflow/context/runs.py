"""What code outside a workflow's event loop may do with other runs: ``RunAccess``.

A ``ChildWorkflowHandle`` used outside a workflow (in a step, or in application code) reads and
cancels its child through one of these. Inside a step the engine hands one over with the
attempt (``StepInfo.runs``, over the engine's own storage, which also starts children from the
step); elsewhere ``pyworkflow.api`` registers one over the configured storage when it is
imported (``register_run_access``): the runtime sits above this layer, so it is never imported
from here.
"""

from __future__ import annotations

from typing import Any, Protocol


class RunAccess(Protocol):
    async def start_child(
        self, parent: Any, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, str]:
        """Start a child of the run ``parent`` (a ``StepInfo``) names; returns
        ``(child run id, parent run id)``."""
        ...

    async def run_status(self, run_id: str) -> str:
        """The run's status value; a run that continued as new answers for its chain's end."""
        ...

    async def run_result(self, run_id: str, timeout: float | None) -> Any:
        """Wait for the run (its chain's end) to finish; its result, or raise its error."""
        ...

    async def cancel_run(self, run_id: str, reason: str | None) -> bool: ...

    def cancel_requested(self, run_id: str) -> bool:
        """Whether the run is known to be asked to stop (``StepInfo.check_cancellation``)."""
        ...


_registered: RunAccess | None = None


def register_run_access(access: RunAccess) -> None:
    """Called by ``pyworkflow.api`` on import."""
    global _registered
    _registered = access


def default_run_access() -> RunAccess:
    if _registered is None:  # pragma: no cover - pyworkflow/__init__.py imports pyworkflow.api
        raise RuntimeError("pyworkflow.api is not imported: import pyworkflow first")
    return _registered


__all__ = ["RunAccess", "default_run_access", "register_run_access"]
