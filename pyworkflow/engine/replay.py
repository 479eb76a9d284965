"""Replaying a stored history against the current workflow code, with no storage and no I/O.

``replay_history`` rebuilds the run from its ``workflow.started`` event, feeds every event through
the same ``WorkflowInstance.apply`` path activations use, and checks that the code issues exactly
the recorded commands and ends the way the history ended. A mismatch raises
``NonDeterminismError`` with the position, the recorded and the issued call, and the code line.
"""

from __future__ import annotations

from typing import Any

from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.instance import MAX_NESTING_DEPTH, WorkflowInstance
from pyworkflow.model.events import Event, EventType, mentions
from pyworkflow.model.exceptions import CancellationError, NonDeterminismError
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.serialization import deserialize_exception, dumps, loads


def _run_from(events: list[Event], workflow_name: str) -> WorkflowRun:
    if not events or events[0].type is not EventType.WORKFLOW_STARTED:
        raise ValueError("a history starts with its workflow.started event")
    first = events[0]
    return WorkflowRun(
        run_id=first.run_id,
        workflow_name=workflow_name,
        status=RunStatus.RUNNING,
        created_at=first.timestamp,
        started_at=first.timestamp,
        input_args=first.data["args"],
        input_kwargs=first.data["kwargs"],
        nesting_depth=int(first.data.get("nesting_depth", 0)),
    )


async def replay_history(workflow_func: Any, events: list[Event]) -> Any:
    """Replay ``events`` against ``workflow_func``; return the workflow's replayed result.

    Raises ``NonDeterminismError`` when the code issues other commands than the history holds, or
    ends differently (returns another value, raises where the history completed, ...).
    """
    definition = workflow_definition_of(workflow_func)
    ordered = sorted(events, key=lambda e: e.sequence)
    limit = int(ordered[0].data.get("max_nesting_depth", MAX_NESTING_DEPTH)) if ordered else 0
    inst = WorkflowInstance(
        _run_from(ordered, definition.name), definition, max_nesting_depth=limit
    )
    try:
        inst.feed(ordered)
        return _check_ending(inst)
    finally:
        inst.teardown()


def _check_ending(inst: WorkflowInstance) -> Any:
    terminal = inst.terminal
    main = inst.main
    if terminal is None:
        return None  # the history ends while the run is still going: nothing more to compare
    if terminal.type is EventType.WORKFLOW_CONTINUED_AS_NEW:
        data = terminal.data
        if inst.continuation is None:
            _diverged(inst, "the workflow continued as new", "the code did not")
        elif False in (
            mentions(data, "args", inst.continuation[0]),
            mentions(data, "kwargs", inst.continuation[1]),
        ):
            recorded = (data.get("args", "(a digest)"), data.get("kwargs", "(a digest)"))
            _diverged(
                inst,
                f"continue_as_new with {recorded}",
                f"continue_as_new with {inst.continuation}",
            )
        return None
    if terminal.type is EventType.WORKFLOW_FAILED and terminal.data.get("imposed"):
        # The engine ended the run (max_duration, the event limit, the recovery budget) before
        # its code did: the code was waiting then, or had not run at all (a run lost before
        # its first activation); replayed without those limits it may now wait or end.
        raise deserialize_exception(terminal.data["exception"])
    if not main.done():
        _diverged(inst, f"the history ends with {terminal.type.value}", "the code is still waiting")
    if terminal.type is EventType.WORKFLOW_COMPLETED:
        if main.cancelled() or main.exception() is not None:
            exc = None if main.cancelled() else main.exception()
            _diverged(inst, "the workflow returned", f"the code raised {exc!r}")
        replayed = dumps(main.result())
        if mentions(terminal.data, "result", replayed) is False:
            recorded = terminal.data.get("result", "a value (kept in the run record)")
            _diverged(inst, f"the workflow returned {recorded}", f"the code returned {replayed}")
        return loads(replayed)
    if terminal.type is EventType.WORKFLOW_CANCELLED:
        exc = None if main.cancelled() else main.exception()
        if not isinstance(exc, CancellationError):
            _diverged(inst, "the workflow was cancelled", f"the code ended with {exc!r}")
        raise exc  # type: ignore[misc]
    if terminal.type is EventType.WORKFLOW_FAILED and not main.cancelled():
        exc = main.exception()
        if exc is None:
            _diverged(
                inst,
                f"the workflow failed with {terminal.data.get('error_type')}",
                f"the code returned {dumps(main.result())}",
            )
        raise exc  # type: ignore[misc]
    return None


def _diverged(inst: WorkflowInstance, expected: str, actual: str) -> None:
    message = (
        f"workflow {inst.workflow_name!r} run {inst.run_id} is not deterministic: its ending"
        f" differs from the history\n  expected: {expected} (recorded)\n  actual:   {actual}"
    )
    raise NonDeterminismError(message, len(inst.commands) + 1, expected, actual, None)


__all__ = ["replay_history"]
