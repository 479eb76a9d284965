"""Runs that manage runs: children, cancelling them, and a run's ending told to its parent.

Every write that reaches another run goes with the write that causes it (``Commit.runs_created``
and ``Commit.notices``), so nothing is lost or doubled between two writes:

- a ``child_workflow.started`` record and the child's run are one write (the child's id is the
  parent's id and the command's position: a replay names the same child);
- a child's terminal write appends ``child_workflow.completed|failed|cancelled`` to its parent's
  log and wakes it; storage keeps at most one per command (its completion key);
- a parent's terminal write (completed, failed, cancelled, continued) requests cancellation of
  every child its log does not know as ended; a ``handle.cancel()`` record does it for one child;
- ``continue_as_new`` ends a run and creates the next one in one write.

A child started from a step (``wait_for_completion=False``) is created by ``Children.start_child``:
its id comes from the step's id and a counter, so a retried attempt finds the children the
earlier attempt started rather than starting them again. Such a child is its parent's by lineage
(``parent_run_id``, depth, the step outcome's ``children``) but not by lifetime: the parent's code
cannot await it, so it is not cancelled when the parent ends. This module never runs workflow
code.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from pyworkflow.context import StepInfo
from pyworkflow.core.registry import get_workflow
from pyworkflow.engine.instance import WorkflowInstance, levels
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.outcome import chain_end, outcome_of
from pyworkflow.engine.ports import Clock, TaskQueue
from pyworkflow.engine.runs import build_run
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    MaxNestingDepthError,
    WorkflowAlreadyRunningError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from pyworkflow.model.schemas import Notice, RunStatus, WorkflowRun
from pyworkflow.serialization import serialize_args
from pyworkflow.storage.base import StorageBackend

# Keys of a child run's ``context``: the parent's command that started it, and the id the parent
# knows it by (the first run of its chain, should the child continue as new).
PARENT_COMMAND = "parent_command_id"
CHILD_RUN_ID = "child_run_id"

_ENDING_EVENTS = {
    RunStatus.COMPLETED: EventType.CHILD_WORKFLOW_COMPLETED,
    RunStatus.FAILED: EventType.CHILD_WORKFLOW_FAILED,
    RunStatus.CANCELLED: EventType.CHILD_WORKFLOW_CANCELLED,
}


def child_runs(
    inst: WorkflowInstance, events: list[Event], options: EngineOptions, now: datetime
) -> tuple[list[tuple[WorkflowRun, list[Event]]], list[Notice]]:
    """The runs and notices that ``events`` (about to be committed) ask for: a run for each
    ``child_workflow.started``, a cancellation request for each
    ``child_workflow.cancel_requested``. ``now`` is the clock's: the child's record and its
    lease start now, whatever the parent's logical time."""
    created: list[tuple[WorkflowRun, list[Event]]] = []
    notices: list[Notice] = []
    for event in events:
        data = event.data
        if event.type is EventType.CHILD_WORKFLOW_STARTED:
            definition = get_workflow(data["child_workflow_name"])
            inputs = inst.child_inputs.get(data["child_run_id"])
            if inputs is None:  # (an event built elsewhere: it must carry them)
                inputs = (data["args"], data["kwargs"])
            args_json, kwargs_json = inputs
            run, started = build_run(
                definition,
                data["child_run_id"],
                args_json,
                kwargs_json,
                now,
                options,
                parent_run_id=inst.run_id,
                nesting_depth=inst.run.nesting_depth + 1,
                context={PARENT_COMMAND: data["command_id"], CHILD_RUN_ID: data["child_run_id"]},
            )
            created.append((run, [started]))
        elif event.type is EventType.CHILD_WORKFLOW_CANCEL_REQUESTED and data.get("running"):
            notices.append(cancel_notice(data["child_run_id"], data.get("reason"), now))
    return created, notices


def cancel_notice(run_id: str, reason: str | None, now: datetime | None) -> Notice:
    """A request to stop ``run_id``: it reaches the live generation if the run continued."""
    event = Event(run_id, EventType.CANCELLATION_REQUESTED, {"reason": reason}, timestamp=now)
    return Notice(run_id, event, wake_at=now, follow_chain=True)


def ending_notices(
    run: WorkflowRun,
    status: RunStatus,
    data: dict[str, Any],
    open_children: list[str],
    now: datetime,
    *,
    wake_parent: bool = True,
) -> list[Notice]:
    """What a run's terminal write tells others: its parent how it ended (``data``: the
    terminal event's), and each child it leaves running that it must stop. ``wake_parent``:
    whether the parent's timer is set (not when the parent is held for this child, leased)."""
    reason = f"parent run {run.run_id} ended ({status.value})"
    notices = [cancel_notice(child, reason, now) for child in open_children]
    parent, command_id = run.parent_run_id, run.context.get(PARENT_COMMAND)
    ending = _ENDING_EVENTS.get(status)
    if parent is not None and command_id and ending is not None:
        told: dict[str, Any] = {
            "command_id": command_id,
            "child_run_id": run.context.get(CHILD_RUN_ID, run.run_id),
        }
        if ending is EventType.CHILD_WORKFLOW_COMPLETED:
            told["result"] = data.get("result")
        else:
            for key in ("error", "error_type", "exception", "reason"):
                if key in data:
                    told[key] = data[key]
        event = Event(parent, ending, told, timestamp=now)
        notices.append(Notice(parent, event, wake_at=now if wake_parent else None))
    return notices


def open_children(inst: WorkflowInstance) -> list[str]:
    """Children this run's code started (committed or about to be) whose end its log does not
    know. Children its steps started are not among them: the code never awaits them (it cannot),
    so they run on their own once started (their outcomes' ``children`` name them)."""
    return [
        child_id
        for child_id, cmd in inst.children.items()
        if cmd.child_status is None and (cmd.recorded or cmd.position)
    ]


def open_children_in(events: list[Event]) -> list[str]:
    """``open_children`` from a log alone (for endings written without replaying the code)."""
    started: dict[str, str] = {}
    for event in events:
        if event.type is EventType.CHILD_WORKFLOW_STARTED:
            started[event.data["command_id"]] = event.data["child_run_id"]
        elif event.type.value.startswith("child_workflow.") and event.completion_key:
            started.pop(event.data["command_id"], None)
    return list(started.values())


def continued_run(
    inst: WorkflowInstance, run_id: str, now: datetime, options: EngineOptions
) -> tuple[WorkflowRun, Event]:
    """The next run of ``inst``'s chain: same workflow, the continuation's arguments, an empty
    log; a child's place in its parent (and its depth) carries over."""
    assert inst.continuation is not None
    args_json, kwargs_json = inst.continuation
    run = inst.run
    return build_run(
        inst.definition,
        run_id,
        args_json,
        kwargs_json,
        now,
        options,
        continued_from_run_id=inst.run_id,
        parent_run_id=run.parent_run_id,
        nesting_depth=run.nesting_depth,
        context=dict(run.context),
    )


class Children:
    """The part of ``Engine`` that other runs' code reaches it through (a mixin: the engine
    provides the attributes): ``pyworkflow.context.runs.RunAccess``, handed to each step
    attempt as ``StepInfo.runs``. A step starts children with ``wait_for_completion=False``;
    the n-th child an attempt starts is ``<run id>.<step id>.<n>``, the same for every attempt,
    so a retried attempt finds the run the first one created instead of starting another."""

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue
    options: EngineOptions
    # id of a running attempt's StepInfo -> children it started so far (each attempt counts
    # its own: a duplicate delivery running the same attempt here names the same children)
    step_children: dict[int, int]

    if TYPE_CHECKING:

        async def request_cancellation(self, run_id: str, reason: str | None = None) -> bool: ...

    async def start_child(
        self, parent: Any, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, str]:
        info: StepInfo = parent
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"child workflow {definition.name!r}: {exc}") from None
        args_json, kwargs_json = serialize_args(args, kwargs)
        key = id(info)
        count = self.step_children[key] = self.step_children.get(key, 0) + 1
        parent_id = info.run_id
        child_id = f"{parent_id}.{info.step_id.replace(':', '-')}.{count}"
        run = await self.storage.get_run(parent_id)
        if run is None:
            raise WorkflowNotFoundError(f"no workflow run with id {parent_id!r}")
        if run.nesting_depth >= self.options.max_nesting_depth:
            raise MaxNestingDepthError(
                f"run {parent_id} (nesting depth {run.nesting_depth}) cannot start child"
                f" workflow {definition.name!r}: children nest at most"
                f" {levels(self.options.max_nesting_depth)} deep"
            )
        child, started = build_run(
            definition,
            child_id,
            args_json,
            kwargs_json,
            self.clock.now(),
            self.options,
            parent_run_id=parent_id,
            nesting_depth=run.nesting_depth + 1,
            context={CHILD_RUN_ID: child_id},
        )
        try:
            await self.storage.create_run(child, [started])
        except WorkflowAlreadyRunningError:
            return child_id, parent_id  # an earlier attempt of this step created it
        await self.queue.enqueue_activation(child_id)
        return child_id, parent_id

    async def chain_end(self, run_id: str) -> WorkflowRun:
        """The run ``run_id`` names, or the last run of its chain if it continued as new."""
        run = await self.storage.get_run(run_id)
        if run is None:
            raise WorkflowNotFoundError(f"no workflow run with id {run_id!r}")
        return await chain_end(self.storage, run)

    async def run_status(self, run_id: str) -> str:
        return (await self.chain_end(run_id)).status.value

    async def run_result(self, run_id: str, timeout: float | None) -> Any:
        """Poll storage until the run (its chain's end) has ended; storage errors meanwhile are
        waited out like a run still going (until ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        poll = 0.01
        while True:
            try:
                run = await self.chain_end(run_id)
                ended = (await outcome_of(self.storage, run)) if run.status.is_terminal else None
            except WorkflowNotFoundError:
                raise
            except Exception as exc:  # noqa: BLE001 - storage hiccups: keep waiting
                logger.debug("waiting for run {}: storage error {!r}; polling on", run_id, exc)
                ended, run = None, None
            if ended is not None:
                return ended.value()
            if deadline is not None and loop.time() >= deadline:
                status = run.status.value if run is not None else "unknown"
                raise WorkflowTimeoutError(
                    f"run {run_id} did not finish within {timeout}s (status: {status})"
                )
            wait = poll if deadline is None else max(min(poll, deadline - loop.time()), 0)
            await asyncio.sleep(wait)
            poll = min(poll * 2, 0.5)

    async def cancel_run(self, run_id: str, reason: str | None) -> bool:
        return await self.request_cancellation((await self.chain_end(run_id)).run_id, reason)


__all__ = [
    "CHILD_RUN_ID",
    "PARENT_COMMAND",
    "Children",
    "cancel_notice",
    "child_runs",
    "continued_run",
    "ending_notices",
    "open_children",
    "open_children_in",
]
