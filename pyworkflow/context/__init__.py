"""What running workflow and step code can reach: the current contexts, by contextvar.

The engine sets the workflow context while it steps a workflow's event loop and the step context
while a step body runs. Decorators and primitives only ask these; they never import the engine.
This package sits above the leaves (it serializes step checkpoints) and the data model, and must
never import anything above them (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from pyworkflow.context.step_context import (
    StepContext,
    StepInfo,
    current_step_info,
    delete_step_checkpoint,
    get_step_context,
    get_step_info,
    has_step_context,
    load_step_checkpoint,
    save_step_checkpoint,
    set_step_context,
    step_scope,
)


class WorkflowContext(Protocol):
    """What a running workflow can do. The engine's workflow instance implements it."""

    run_id: str
    workflow_name: str

    def call_step(self, step: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Issue a step command; returns an awaitable of its result."""

    def sleep(self, duration: Any) -> Any:
        """Issue a durable sleep; returns an awaitable."""

    def hook(
        self,
        name: str,
        *,
        timeout: Any = None,
        on_created: Any = None,
        payload_schema: Any = None,
        on_received: Any = None,
    ) -> Any:
        """Issue a hook command; returns an awaitable of the payload."""

    def now(self) -> datetime: ...

    def random(self) -> float: ...

    def uuid4(self) -> UUID: ...

    def set_step_context(self, ctx: StepContext | None) -> None: ...

    def get_step_context(self) -> StepContext | None: ...


_current_workflow: ContextVar[WorkflowContext | None] = ContextVar(
    "pyworkflow_workflow", default=None
)


def current_workflow() -> WorkflowContext | None:
    """The workflow context of the running workflow code, or None outside workflows."""
    return _current_workflow.get()


def set_current_workflow(ctx: WorkflowContext | None) -> Any:
    """Set the workflow context; returns the token to reset it with."""
    return _current_workflow.set(ctx)


def reset_current_workflow(token: Any) -> None:
    _current_workflow.reset(token)


def in_workflow() -> bool:
    return _current_workflow.get() is not None


__all__ = [
    "StepContext",
    "StepInfo",
    "WorkflowContext",
    "current_step_info",
    "current_workflow",
    "delete_step_checkpoint",
    "get_step_context",
    "get_step_info",
    "has_step_context",
    "in_workflow",
    "load_step_checkpoint",
    "reset_current_workflow",
    "save_step_checkpoint",
    "set_current_workflow",
    "set_step_context",
    "step_scope",
]
