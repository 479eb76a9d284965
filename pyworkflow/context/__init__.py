"""What running workflow and step code can reach: the current contexts, by contextvar.

The engine sets the workflow context while it steps a workflow's event loop and the step context
while a step body runs. Decorators and primitives only ask these; they never import the engine.
This package sits above the leaves (it serializes step checkpoints) and the data model, and must
never import anything above them (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from pydantic import BaseModel

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

if TYPE_CHECKING:  # the registry sits above this layer: only its types are named here
    from pyworkflow.core.registry import StepDefinition, WorkflowDefinition

# What a duration may be wherever the API takes one: "30s", "1h30m", seconds, a timedelta, or
# (for sleep) a future datetime.
Duration = str | int | float | timedelta | datetime


class WorkflowContext(Protocol):
    """What a running workflow can do. The engine's workflow instance implements it (and the
    simulator's reference model, with no engine at all)."""

    workflow_name: str

    @property
    def run_id(self) -> str: ...

    def call_step(
        self, step: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        """Issue a step command; returns an awaitable of its result."""
        ...

    def sleep(self, duration: Duration) -> Awaitable[None]:
        """Issue a durable sleep; returns an awaitable."""
        ...

    def hook(
        self,
        name: str,
        *,
        timeout: Duration | None = None,
        on_created: Callable[[str], Any] | None = None,
        payload_schema: type[BaseModel] | None = None,
        on_received: Callable[[Any], Any] | None = None,
    ) -> Awaitable[Any]:
        """Issue a hook command; returns an awaitable of the payload."""
        ...

    def now(self) -> datetime: ...

    def random(self) -> float: ...

    def uuid4(self) -> UUID: ...

    def set_step_context(self, ctx: StepContext | None) -> None: ...

    def enter_shield(self) -> None:
        """``shield()`` began: cancellation is deferred until the matching ``exit_shield``."""
        ...

    def exit_shield(self) -> None: ...

    def get_step_context(self) -> StepContext | None: ...

    def start_child(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        wait: bool,
    ) -> tuple[Awaitable[Any], str]:
        """Issue a child workflow command; returns the awaitable of its result and the child's
        run id."""
        ...

    def child_result(self, child_run_id: str) -> Awaitable[Any]:
        """``handle.result()``: an awaitable of a child's outcome."""
        ...

    def child_status(self, child_run_id: str) -> str:
        """What the log knows of a child: ``running``, ``completed``, ``failed``, ``cancelled``."""
        ...

    def cancel_child(self, child_run_id: str, reason: str | None) -> bool:
        """``handle.cancel()``: record the request (with the run's next write)."""
        ...

    def continue_as_new(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Awaitable[Any]:
        """End the run and start the next of its chain; the awaitable never resolves."""
        ...


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
    "Duration",
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
