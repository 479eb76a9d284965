"""Child workflows (``start_child_workflow``, ``ChildWorkflowHandle``) and ``continue_as_new``.

A child is a run of its own (its own log, leases, retries) that its parent starts and, by
default, waits for. Inside a workflow every call here is durable: the child's creation is
recorded with the parent's next write and its id is the parent's id and the call's position, so
a replay names the same child; its outcome arrives in the parent's log exactly once. Inside a
step, ``wait_for_completion=False`` starts a child whose id is stable across the step's attempts.

``continue_as_new(*args, **kwargs)`` ends the run and starts a new run of the same workflow with
those arguments and an empty history, in one write; it never returns.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyworkflow.context import current_step_info, current_workflow
from pyworkflow.context.runs import RunAccess, default_run_access
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.model.exceptions import ChildWorkflowError

_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class ChildWorkflowHandle:
    """A child run started with ``wait_for_completion=False``.

    In the parent workflow each method is replay-safe: ``result`` waits durably (raising
    ``CancellationError`` if the parent is cancelled meanwhile, outside ``shield()``),
    ``get_status``/``is_running``/``is_terminal`` answer from the parent's log, ``cancel``
    records the request in the parent's log. Anywhere else they read and write storage.
    """

    def __init__(
        self,
        child_run_id: str,
        child_workflow_name: str,
        parent_run_id: str | None = None,
        *,
        access: RunAccess | None = None,
    ) -> None:
        self.child_run_id = child_run_id
        self.child_workflow_name = child_workflow_name
        self.parent_run_id = parent_run_id
        self._access = access

    def __repr__(self) -> str:
        return (
            f"ChildWorkflowHandle(child_run_id={self.child_run_id!r},"
            f" child_workflow_name={self.child_workflow_name!r},"
            f" parent_run_id={self.parent_run_id!r})"
        )

    def _in_parent(self) -> Any:
        """The parent workflow's context when this code runs in the parent workflow."""
        ctx = current_workflow()
        if ctx is not None and ctx.run_id == self.parent_run_id:
            return ctx
        return None

    def _outside(self) -> RunAccess:
        if self._access is not None:
            return self._access
        info = current_step_info()
        if info is not None and info.runs is not None:
            return info.runs  # type: ignore[no-any-return]
        return default_run_access()

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the child to end: its result, or ``ChildWorkflowFailedError`` in the parent
        (the child's own error elsewhere). ``timeout`` in seconds (``asyncio.TimeoutError`` in
        a workflow, ``WorkflowTimeoutError`` elsewhere)."""
        ctx = self._in_parent()
        if ctx is None:
            return await self._outside().run_result(self.child_run_id, timeout)
        waiter = ctx.child_result(self.child_run_id)
        if timeout is None:
            return await waiter
        return await asyncio.wait_for(waiter, timeout)

    async def get_status(self) -> str:
        """``running``, ``completed``, ``failed`` or ``cancelled`` (outside the parent: the
        child's run status value, of its chain's last run if it continued as new)."""
        ctx = self._in_parent()
        if ctx is not None:
            status: str = ctx.child_status(self.child_run_id)
            return status
        return await self._outside().run_status(self.child_run_id)

    async def is_running(self) -> bool:
        return not await self.is_terminal()

    async def is_terminal(self) -> bool:
        return await self.get_status() in _TERMINAL

    async def cancel(self, reason: str | None = None) -> bool:
        """Ask the child to stop; True when the request was made (the child had not ended)."""
        ctx = self._in_parent()
        if ctx is not None:
            return bool(ctx.cancel_child(self.child_run_id, reason))
        return await self._outside().cancel_run(self.child_run_id, reason)


async def start_child_workflow(
    workflow_func: Any, *args: Any, wait_for_completion: bool = True, **kwargs: Any
) -> Any:
    """Start ``workflow_func`` as a child of the running workflow.

    With ``wait_for_completion=True`` returns the child's result or raises
    ``ChildWorkflowFailedError``; with ``False`` returns a ``ChildWorkflowHandle`` at once.
    Children nest at most 3 levels deep (``MaxNestingDepthError``). From a step only
    ``wait_for_completion=False`` works (a step cannot suspend).
    """
    definition = workflow_definition_of(workflow_func)
    ctx = current_workflow()
    if ctx is not None:
        future, child_id = ctx.start_child(definition, args, kwargs, wait=wait_for_completion)
        if wait_for_completion:
            return await future
        if isinstance(future, asyncio.Future) and future.done() and future.exception():
            return await future  # refused (the run is being cancelled): CancellationError here
        return ChildWorkflowHandle(child_id, definition.name, ctx.run_id)
    info = current_step_info()
    if info is None or info.runs is None:
        raise ChildWorkflowError(
            "start_child_workflow() can only be called inside a workflow or a step"
            " (use pyworkflow.start() to start a run from application code)"
        )
    if wait_for_completion:
        raise ChildWorkflowError(
            f"start_child_workflow({definition.name!r}) in step {info.step_name!r}: a step"
            " cannot wait for a child (it cannot suspend); pass wait_for_completion=False and"
            " keep the handle, or start the child from the workflow"
        )
    access: RunAccess = info.runs
    child_id, parent_id = await access.start_child(info, definition, args, kwargs)
    return ChildWorkflowHandle(child_id, definition.name, parent_id, access=access)


async def continue_as_new(*args: Any, **kwargs: Any) -> Any:
    """End this run and continue as a new run of the same workflow with these arguments (an
    empty history; ``continued_from_run_id``/``continued_to_run_id`` link the two). Never
    returns. Only inside a workflow."""
    ctx = current_workflow()
    if ctx is None:
        raise RuntimeError("continue_as_new() can only be called inside a workflow")
    return await ctx.continue_as_new(args, kwargs)


__all__ = ["ChildWorkflowHandle", "continue_as_new", "start_child_workflow"]
