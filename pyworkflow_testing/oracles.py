"""Oracles: what must hold of every simulated run, whatever the faults did.

- the log is well formed: contiguous sequence from 1, ``workflow.started`` first, nothing after a
  terminal event, at most one completion per completion key, no sleep completed before its
  ``resume_at``, no retry started before its ``resume_at``, no hook expired before its time, and
  the run row agrees with the log;
- replaying the final log from scratch issues the same commands and ends the same way;
- liveness: once faults stop, every run finishes (or waits only on hooks nobody answered);
- the run agrees with the reference model (``reference.py``: the workflow function as plain
  asyncio code, no engine): same ending (result, or error type and message), and no step attempt
  both ran started earlier than the model started it, nor much later when no fault struck.

Each check returns a list of plain-language violations (empty when all is well).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pyworkflow.engine.replay import replay_history
from pyworkflow.model.events import TERMINAL_EVENT_TYPES, Event, EventType
from pyworkflow.model.exceptions import NonDeterminismError
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.serialization import loads
from pyworkflow_testing.reference import ReferenceOutcome

LATE_BOUND = timedelta(minutes=5)
_TOLERANCE = timedelta(microseconds=1)  # timestamps are stored to the microsecond
_HINT = (
    " (an engine bug, or workflow code that is not deterministic: randomness, the clock or"
    " global state read outside pyworkflow.random()/now())"
)

_STATUS_OF_END = {
    EventType.WORKFLOW_COMPLETED: RunStatus.COMPLETED,
    EventType.WORKFLOW_FAILED: RunStatus.FAILED,
    EventType.WORKFLOW_CANCELLED: RunStatus.CANCELLED,
    EventType.WORKFLOW_CONTINUED_AS_NEW: RunStatus.CONTINUED_AS_NEW,
}


_UNMODELLED = frozenset(
    {
        EventType.CANCELLATION_REQUESTED,
        EventType.CHILD_WORKFLOW_STARTED,
        EventType.WORKFLOW_CONTINUED_AS_NEW,
    }
)


def _at(raw: Any) -> datetime | None:
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def well_formed(run: WorkflowRun, events: list[Event]) -> list[str]:
    """Structural checks of one run's log against itself and its run row."""
    problems: list[str] = []
    if [e.sequence for e in events] != list(range(1, len(events) + 1)):
        problems.append("the sequence numbers are not contiguous from 1")
    if not events or events[0].type is not EventType.WORKFLOW_STARTED:
        problems.append("the log does not start with workflow.started")
    keys: set[str] = set()
    started: dict[str, datetime | None] = {}  # sleep / hook command id -> due time
    retry_at: dict[tuple[str, int], datetime | None] = {}
    terminal: Event | None = None
    # Attempts started since the last workflow.interrupted: only a lost worker makes the engine
    # record the same attempt again (an inline step re-run after the recovery).
    attempts: set[tuple[str, int]] = set()
    for event in events:
        if event.type is EventType.WORKFLOW_INTERRUPTED:
            attempts.clear()
        elif event.type is EventType.STEP_STARTED:
            attempt = (event.data.get("command_id", ""), int(event.data.get("attempt", 1)))
            if attempt in attempts:
                problems.append(
                    f"{attempt[0]} attempt {attempt[1]} started twice (second at event"
                    f" {event.sequence}) with no lost worker in between"
                )
            attempts.add(attempt)
        if terminal is not None:
            problems.append(f"event {event.sequence} ({event.type.value}) after the terminal event")
        key = event.completion_key
        if key is not None:
            if key in keys:
                problems.append(f"{key} recorded twice (second at event {event.sequence})")
            keys.add(key)
        problems += _timing(event, started, retry_at)
        if event.type in TERMINAL_EVENT_TYPES:
            terminal = event
    if terminal is not None and run.status is not _STATUS_OF_END[terminal.type]:
        problems.append(f"the log ends with {terminal.type.value} but the run is {run.status}")
    if terminal is None and run.status.is_terminal:
        problems.append(f"the run is {run.status} but its log has no terminal event")
    if run.last_sequence != len(events):
        problems.append(f"the run row says {run.last_sequence} events, the log has {len(events)}")
    return problems


def _timing(
    event: Event,
    started: dict[str, datetime | None],
    retry_at: dict[tuple[str, int], datetime | None],
) -> list[str]:
    data, etype, when = event.data, event.type, event.timestamp
    command = data.get("command_id", "")
    if etype is EventType.SLEEP_STARTED:
        started[command] = _at(data.get("resume_at"))
    elif etype is EventType.HOOK_CREATED:
        started[command] = _at(data.get("expires_at"))
    elif etype is EventType.STEP_RETRYING:
        retry_at[(command, int(data["attempt"]))] = _at(data.get("resume_at"))
    elif etype in (EventType.SLEEP_COMPLETED, EventType.HOOK_EXPIRED):
        due = started.get(command)
        if command not in started:
            return [f"{etype.value} for {command} without its start"]
        if due is not None and when is not None and when < due:
            return [f"{command} fired early: at {when.isoformat()}, due {due.isoformat()}"]
    elif etype is EventType.STEP_STARTED:
        attempt = int(data.get("attempt", 1))
        if attempt > 1:
            if (command, attempt - 1) not in retry_at:
                return [f"{command} attempt {attempt} started without a retry of {attempt - 1}"]
            due = retry_at[(command, attempt - 1)]
            if due is not None and when is not None and when < due:
                return [f"{command} attempt {attempt} started before its retry time"]
    return []


async def replays_the_same(workflow: Any, events: list[Event]) -> list[str]:
    """Replaying the log from scratch must issue the recorded commands and end the same way."""
    try:
        await replay_history(workflow, events)
    except NonDeterminismError as exc:
        return [f"replay from scratch diverges: {exc}"]
    except Exception:  # noqa: BLE001 - a failed or cancelled run re-raises its error on replay
        ends = (EventType.WORKFLOW_FAILED, EventType.WORKFLOW_CANCELLED)
        if not events or events[-1].type not in ends:
            raise
    return []


def family(runs: dict[str, WorkflowRun], logs: dict[str, list[Event]]) -> list[str]:
    """Across runs: children and chains (``runs``/``logs`` by run id, every run stored).

    - every child is recorded exactly once in its parent (``child_workflow.started`` naming it),
      and every child its parent recorded exists, with the parent's id;
    - a child's ending reached its parent as it is: the outcome in the parent's log matches how
      the child's chain ended (a parent that ended first hears nothing, and that is fine);
    - no orphan: a child whose parent has ended has ended too (checked once faults stopped;
      children started from steps run on their own);
    - every chain is linear: a run that continued names one next run, which names it back, and
      no two runs continue from the same run.
    """
    problems: list[str] = []
    started: dict[str, list[tuple[str, Event]]] = {}  # child id -> (parent id, record)
    told: dict[tuple[str, str], Event] = {}  # (parent id, child id) -> its outcome in the parent
    for run_id, events in logs.items():
        for event in events:
            if event.type is EventType.CHILD_WORKFLOW_STARTED:
                started.setdefault(event.data["child_run_id"], []).append((run_id, event))
            elif event.type in _CHILD_ENDINGS:
                pair = (run_id, event.data["child_run_id"])
                if pair in told:
                    problems.append(
                        f"child {pair[1]}'s ending reached its parent {run_id} twice (events"
                        f" {told[pair].sequence} and {event.sequence})"
                    )
                told[pair] = event
    for child_id, records in sorted(started.items()):
        if len(records) > 1:
            problems.append(f"child {child_id} is recorded {len(records)} times in its parent")
        parent_id = records[0][0]
        child = runs.get(child_id)
        if child is None:
            problems.append(f"run {parent_id} recorded child {child_id}, which does not exist")
        elif child.parent_run_id != parent_id:
            problems.append(f"child {child_id} names {child.parent_run_id} as its parent")
    successors: dict[str, list[str]] = {}
    for run_id, run in sorted(runs.items()):
        if run.continued_from_run_id is not None:
            successors.setdefault(run.continued_from_run_id, []).append(run_id)
        if run.status is RunStatus.CONTINUED_AS_NEW:
            following = runs.get(run.continued_to_run_id or "")
            if following is None:
                problems.append(f"run {run_id} continued as new, but its next run does not exist")
            elif following.continued_from_run_id != run_id:
                problems.append(f"run {run_id} continued as {following.run_id}, which disowns it")
        if run.parent_run_id is None or run.continued_from_run_id is not None:
            continue
        parent = runs.get(run.parent_run_id)
        child_id = run.context.get("child_run_id", run_id)
        records = started.get(child_id, [])
        if parent is None:
            problems.append(f"child {run_id} has no parent run {run.parent_run_id}")
            continue
        if not records and run.context.get("parent_command_id"):
            problems.append(f"child {run_id} is not recorded in its parent {parent.run_id}")
        end = _chain_end(run, runs)
        managed = bool(run.context.get("parent_command_id"))  # not a step's: see engine.children
        if managed and parent.status.is_terminal and not end.status.is_terminal:
            problems.append(
                f"orphan: child {child_id} is {end.status.value} though its parent"
                f" {parent.run_id} ended {parent.status.value}"
            )
        outcome = told.get((parent.run_id, child_id))
        if outcome is not None:
            problems += _agrees(child_id, outcome, end)
    for run_id, nexts in sorted(successors.items()):
        if len(nexts) > 1:
            problems.append(f"run {run_id} has {len(nexts)} next runs: {sorted(nexts)}")
    return problems


_CHILD_ENDINGS = {
    EventType.CHILD_WORKFLOW_COMPLETED: RunStatus.COMPLETED,
    EventType.CHILD_WORKFLOW_FAILED: RunStatus.FAILED,
    EventType.CHILD_WORKFLOW_CANCELLED: RunStatus.CANCELLED,
}


def chain_end_of(run: WorkflowRun, runs: dict[str, WorkflowRun]) -> WorkflowRun:
    """The last run of ``run``'s chain among ``runs`` (``run`` itself if it did not continue)."""
    return _chain_end(run, runs)


def _chain_end(run: WorkflowRun, runs: dict[str, WorkflowRun]) -> WorkflowRun:
    seen = {run.run_id}
    while run.continued_to_run_id is not None and run.continued_to_run_id not in seen:
        following = runs.get(run.continued_to_run_id)
        if following is None:
            break
        seen.add(following.run_id)
        run = following
    return run


def _agrees(child_id: str, outcome: Event, end: WorkflowRun) -> list[str]:
    expected = _CHILD_ENDINGS[outcome.type]
    if end.status is not expected:
        return [
            f"the parent heard child {child_id} {expected.value}, but it ended"
            f" {end.status.value}"
        ]
    if expected is RunStatus.COMPLETED and outcome.data.get("result") != end.result:
        return [
            f"the parent heard child {child_id} return {outcome.data.get('result')}, but it"
            f" returned {end.result}"
        ]
    return []


def finished(run: WorkflowRun, waiting_hooks: int) -> list[str]:
    """Liveness: a run is done, or suspended waiting only for hooks nobody answered."""
    if run.status.is_terminal:
        return []
    blocked = run.blocked
    if blocked is not None:
        # (the message carries the divergence: expected, actual, the code line)
        return [f"the run is blocked ({blocked.kind}): {blocked.message}"]
    if run.status is RunStatus.SUSPENDED and waiting_hooks > 0:
        return []
    return [f"the run did not finish once faults stopped (status {run.status})"]


def unmodelled(events: list[Event]) -> bool:
    """Whether the log holds what no reference model does (a cancellation request from outside,
    a child started, a chain continued): then the model is no yardstick, and need not run."""
    return any(event.type in _UNMODELLED for event in events)


def agrees_with_reference(
    run: WorkflowRun, events: list[Event], model: ReferenceOutcome, *, faults: bool
) -> list[str]:
    """The run against what its workflow function does with no engine (``run_reference``).

    ``faults``: whether any fault struck the simulation. Faults delay work (a lost message comes
    back after the visibility timeout), so a step may start later than in the model then, never
    earlier; with no fault it starts at most ``LATE_BOUND`` later (a message may wait that long
    for a worker busy with other runs' steps).
    """
    ending = events[-1] if events else None
    if ending is not None and ending.data.get("imposed"):
        return []  # an engine limit (the recovery budget, the event limit) decided this ending
    if model.other_runs or unmodelled(events):
        # Cancelled from outside, or managing other runs (children, a chain): the model, which
        # nobody cancels and which runs no other run, is no yardstick.
        return []
    problems = _ending_problems(run, ending, model)
    if problems:
        return problems
    started = {
        (str(e.data.get("command_id")), int(e.data.get("attempt", 1))): e.timestamp
        for e in events
        if e.type is EventType.STEP_STARTED
    }
    problems += _asked_problems(events, model)
    for start in model.step_starts:
        command_id = f"step:{start.step_name}:{start.position}"
        at = started.get((command_id, start.attempt))
        if at is None:
            # Not necessarily wrong: which of two racing calls resolves first (``asyncio.wait``)
            # may depend on when a worker's result reaches the run, which the model cannot know.
            continue
        if at < start.at:
            problems.append(
                f"{command_id} attempt {start.attempt} started early: at {at.isoformat()},"
                f" without an engine at {start.at.isoformat()}"
            )
        elif at - start.at > LATE_BOUND and not faults:
            problems.append(
                f"{command_id} attempt {start.attempt} started late with no fault to delay it:"
                f" at {at.isoformat()}, without an engine at {start.at.isoformat()}"
            )
    return problems[:3]


_ASKED_AT = {
    EventType.SLEEP_STARTED: "resume_at",
    EventType.HOOK_CREATED: "expires_at",
    EventType.STEP_RETRYING: "resume_at",
}


def _asked_problems(events: list[Event], model: ReferenceOutcome) -> list[str]:
    """Every sleep, timer, hook timeout and retry delay the engine scheduled is the one the code
    (or the step's retry policy) asked for: the log agrees with itself whatever the engine did
    to a duration (rounded it, read it in the wrong unit), so the model is the yardstick."""
    problems = []
    for event in events:
        field_name = _ASKED_AT.get(event.type)
        due = _at(event.data.get(field_name)) if field_name else None
        if due is None or event.timestamp is None:
            continue
        attempt = int(event.data["attempt"]) if event.type is EventType.STEP_RETRYING else 0
        command_id = str(event.data.get("command_id"))
        asked = model.asked.get((command_id, attempt))
        if asked is None:
            continue
        duration, instant = asked
        scheduled = due - event.timestamp
        if abs(scheduled - duration) > _TOLERANCE and abs(due - instant) > _TOLERANCE:
            what = f"{command_id} retry after attempt {attempt}" if attempt else command_id
            problems.append(
                f"{what} was scheduled {scheduled.total_seconds():g}s ahead (due"
                f" {due.isoformat()}); the code asked for {duration.total_seconds():g}s"
            )
    return problems


def _ending_problems(run: WorkflowRun, ending: Event | None, model: ReferenceOutcome) -> list[str]:
    if run.status is RunStatus.COMPLETED:
        result = loads(run.result) if run.result is not None else None
        if model.status == "completed" and model.result == result:
            return []
        return [f"it returned {result!r}; without an engine {_describe(model)}{_HINT}"]
    if run.status is RunStatus.FAILED and ending is not None:
        error_type, error = ending.data.get("error_type"), ending.data.get("error")
        if (
            model.status == "failed"
            and model.error_type == error_type
            and model.error_message == error
        ):
            return []
        return [
            f"it failed with {error_type}: {error}; without an engine {_describe(model)}{_HINT}"
        ]
    if not run.status.is_terminal and model.status != "blocked":
        return [f"it is still {run.status}; without an engine {_describe(model)}"]
    return []


def _describe(model: ReferenceOutcome) -> str:
    if model.status == "completed":
        return f"it returns {model.result!r}"
    if model.status == "failed":
        return f"it fails with {model.error_type}: {model.error_message}"
    return f"it is blocked ({model.error_message})"


__all__ = ["agrees_with_reference", "finished", "replays_the_same", "unmodelled", "well_formed"]
