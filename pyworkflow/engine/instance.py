"""A workflow instance: one run's workflow coroutine, its event loop, and its command table.

The instance is a pure state machine over the run's log. Events go in through ``apply`` (the
same way whether they come from storage during replay or were just committed by a live
activation), and workflow code issues commands through the ``WorkflowContext`` methods. The
instance never does I/O: the activation (``engine/activation.py``) decides what to run, commits,
and feeds the committed events back in. That one path for replay and live execution is what makes
a replayed run issue exactly the commands the original did.

Invariants:
- ``commands[p]`` is the command workflow code issued at position ``p`` (1-based, call order).
- ``recorded[p]`` is the id the log recorded at position ``p``; an issued command must match it.
- ``sequence`` is the last log sequence the instance has seen (committed by anyone).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import os
import random
import sys
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyworkflow.context import StepContext, set_current_workflow
from pyworkflow.core.registry import StepDefinition, WorkflowDefinition
from pyworkflow.engine.loop import WorkflowEventLoop
from pyworkflow.model.events import Event, EventType, mention
from pyworkflow.model.exceptions import (
    CancellationError,
    ChildWorkflowFailedError,
    CorruptHistoryError,
    HookExpiredError,
    MaxNestingDepthError,
    NonDeterminismError,
    SerializationError,
)
from pyworkflow.model.schemas import WorkflowRun
from pyworkflow.serialization import (
    deserialize_args,
    deserialize_exception,
    is_damaged,
    loads,
    serialize_args,
)
from pyworkflow.utils.duration import parse_duration, resolve_wake_time

_COMMAND_RECORDS = frozenset(
    {
        EventType.STEP_STARTED,
        EventType.SLEEP_STARTED,
        EventType.HOOK_CREATED,
        EventType.CHILD_WORKFLOW_STARTED,
        EventType.CHILD_WORKFLOW_CANCEL_REQUESTED,
    }
)
# How deep children nest by default: a root run is depth 0, its children 1, and so on.
MAX_NESTING_DEPTH = 3
# ``workflow.started`` of a run whose resolutions apply in logical time (``fires_first``): every
# run started by this release. A run started before it replays in log order, as it ran.
LOGICAL_ORDER = "logical_order"
# A command's record followed at once by its resolution: the common shapes replay takes at once.
_STEP_STARTED, _STEP_COMPLETED = EventType.STEP_STARTED, EventType.STEP_COMPLETED
_SLEEP_STARTED, _SLEEP_COMPLETED = EventType.SLEEP_STARTED, EventType.SLEEP_COMPLETED
# Events that change command state but wake no workflow code.
_PASSIVE = _COMMAND_RECORDS | {
    EventType.STEP_RETRYING,
    EventType.WORKFLOW_INTERRUPTED,
    EventType.HOOK_ANNOUNCED,
}
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__))


@dataclass(slots=True)
class Command:
    """A durable call issued by workflow code, and what the run knows of its outcome."""

    position: int
    command_id: str
    kind: str  # "step" | "sleep" | "timer" | "hook" | "child" | "cancel"
    name: str
    future: asyncio.Future[Any] | None = None
    handle: asyncio.TimerHandle | None = None
    done: bool = False
    recorded: bool = False  # the log holds its command record
    wake_at: datetime | None = None  # sleep/timer due time, hook expiry, or step retry time
    location: str | None = None
    # steps
    step: StepDefinition | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0  # the last attempt the log recorded as started (0: none yet)
    retry_pending: bool = False  # the last attempt failed and a retry waits for wake_at
    lost_attempt: bool = False  # the attempt in flight was lost with its worker (interrupted)
    dispatched: bool = False
    # hooks
    hook_id: str | None = None
    payload_schema: Any = None
    on_created: Any = None
    # children
    child_run_id: str | None = None
    wait: bool = True  # start_child_workflow(wait_for_completion=...)
    child_status: str | None = None  # "completed" | "failed" | "cancelled" once known
    # cancellation
    shielded: bool = False  # issued inside ``shield()``: a cancellation request leaves it be
    cancel_on_outcome: bool = False  # running when cancelled: its outcome is recorded, then
    # the workflow gets CancellationError at its await instead of the result

    @property
    def waiting(self) -> bool:
        """Still expecting an outcome that someone will deliver (not done, not abandoned)."""
        if self.done:
            return False
        if self.kind == "timer":
            return self.handle is not None and not self.handle.cancelled()
        return self.future is not None and not self.future.cancelled()


def describe(command_id: str) -> str:
    kind, _, rest = command_id.partition(":")
    name = rest.rpartition(":")[0]
    return f"{kind} {name!r} ({command_id})" if name else f"{kind} ({command_id})"


def _user_location() -> str | None:
    """The innermost frame of user code on the stack: ``file:line in function``."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith((_PACKAGE_DIR, _ASYNCIO_DIR)):
            return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _ts(event: Event) -> float:
    return event.epoch_seconds()


class WorkflowInstance:
    """The live state of one run's workflow code; see the module docstring."""

    def __init__(
        self,
        run: WorkflowRun,
        definition: WorkflowDefinition,
        *,
        dispatch_steps: bool = False,
        max_nesting_depth: int = MAX_NESTING_DEPTH,
    ) -> None:
        self.run_id = run.run_id
        self.workflow_name = run.workflow_name
        self.run = run
        self.definition = definition
        self.dispatch_steps = dispatch_steps
        started = run.started_at or run.created_at or datetime.now(UTC)
        self.started_at = started
        try:  # (before the loop exists: nothing to tear down when this fails)
            args, kwargs = deserialize_args(run.input_args, run.input_kwargs)
        except (SerializationError, ValueError, TypeError) as exc:
            if is_damaged(exc):
                why = str(exc)
                raise CorruptHistoryError(run.run_id, 1, "workflow.started", "args", why) from None
            raise
        self.loop = WorkflowEventLoop(self, started.timestamp())  # type: ignore[abstract]
        self.commands: list[Command] = []
        self.open: dict[int, Command] = {}  # issued, not resolved; in position (issue) order
        self.status = run.status  # the run row's status as of our last commit
        self.lease_owner = run.lease_owner  # the run row's lease owner, as far as we know
        # Whether the run row counts lost workers that no commit of ours has reset yet.
        self.losses_counted = run.recovery_attempts > 0
        self.timer: datetime | None = None  # the run's timer row as of our last commit
        self.recorded: dict[int, Event] = {}
        self._replay: list[Event] | None = None  # the events ``feed`` is applying, if any
        self._cursor = 0
        self._max_recorded = 0
        self.sequence = 0
        self.buffer: list[Event] = []  # command records issued but not yet committed
        self.announced: set[int] = set()  # positions of hooks whose on_created has been called
        self._announcing: dict[int, Command] = {}  # hooks issued with an on_created
        self.hook_tokens: dict[int, str] = {}  # tokens of the hooks this instance created
        # Cancellation: requested (the log holds cancellation.requested), and how many
        # ``shield()`` blocks the code is inside. While requested and unshielded, every durable
        # call raises CancellationError; commands waiting when the request arrived get it too.
        self.cancel_requested = False
        self.cancel_reason: str | None = None
        self.shield_depth = 0
        # Steps an earlier try of this activation ran inline but could not commit: in flight
        # as far as a cancellation request is concerned (their outcome is recorded first).
        self.in_flight: set[str] = set()
        # Children: by child run id; ``spawned`` counts child records not committed yet (the
        # activation turns them into runs and notices); ``result_waiters`` are the futures of
        # ``handle.result()`` calls, with whether each was issued inside a shield.
        self.max_nesting_depth = max_nesting_depth
        self.children: dict[str, Command] = {}
        self.spawned = 0
        # The arguments of the children recorded since the last commit (``children.child_runs``
        # writes them into each child's workflow.started; the parent's event mentions them).
        self.child_inputs: dict[str, tuple[str, str]] = {}
        self.result_waiters: list[tuple[asyncio.Future[Any], bool]] = []
        # continue_as_new: the next run's (args JSON, kwargs JSON) once the code asked for it,
        # and the future the code awaits (it gets CancellationError if a request arrives first).
        self.continuation: tuple[str, str] | None = None
        self._continuing: tuple[asyncio.Future[Any], bool] | None = None
        # What stops replay: code that differs from its log, or a log that cannot be read.
        self.failure: NonDeterminismError | CorruptHistoryError | SerializationError | None = None
        self.terminal: Event | None = None
        # The run record says it is blocked (``engine.blocking``): the next commit clears that.
        self.blocked = False
        # Resolutions apply in logical time (``fires_first``); off for a run whose
        # workflow.started says nothing of it (started by a release before this rule).
        self.logical_order = True
        # The sleeps and loop timers issued, by due time (those done or abandoned are dropped
        # as they reach the top): what ``timer_due_before`` asks, without a scan of ``open``.
        self._timers: list[tuple[datetime, int, Command]] = []
        self._completed_ahead: set[str] | None = None  # see ``_fire_early``
        # The engine's ``event_limit``: timers fired early stop short of it (``feed``).
        self.event_limit: int | None = None
        self.step_context: StepContext | None = None
        self._rng: random.Random | None = None  # seeded from the run id on first use
        self._closed = False
        context = contextvars.copy_context()
        context.run(set_current_workflow, self)
        self.main: asyncio.Task[Any] = self.loop.create_task(
            self._main(definition.func, args, kwargs), context=context
        )

    @staticmethod
    async def _main(func: Callable[..., Coroutine[Any, Any, Any]], args: Any, kwargs: Any) -> Any:
        return await func(*args, **kwargs)

    # -- the clock and the event buffer --------------------------------------------------------

    def logical_now(self) -> datetime:
        return datetime.fromtimestamp(self.loop.time(), UTC)

    def _record(self, event_type: EventType, data: dict[str, Any]) -> None:
        self.buffer.append(
            Event(run_id=self.run_id, type=event_type, data=data, timestamp=self.logical_now())
        )

    # -- feeding the log in --------------------------------------------------------------------

    def feed(self, events: list[Event]) -> None:
        """Apply events from storage in order (replay, or catching up a cached instance)."""
        recorded, records = self.recorded, _COMMAND_RECORDS
        commands = self.commands
        for event in events:
            if event.type in records:
                position = int(event.data["command_id"].rpartition(":")[2])
                if position not in recorded:
                    recorded[position] = event
                    if position > self._max_recorded:
                        self._max_recorded = position
                    if position <= len(commands) and event.type is _STEP_STARTED:
                        # Issued before its start reached this instance (catching up): started,
                        # as ``_issue`` says of a command whose start it finds in the log.
                        cmd = commands[position - 1]
                        if cmd.attempt == 0 and cmd.command_id == event.data["command_id"]:
                            cmd.attempt = int(event.data.get("attempt", 1))
        self._replay, self._cursor, self._completed_ahead = events, 0, None
        try:
            while self._cursor < len(events):
                event = events[self._cursor]
                self._cursor += 1
                if event.sequence <= self.sequence:
                    continue
                if self.open and self.logical_order and event.type in _RESOLVERS:
                    early = self.fires_first(event)
                    if early is not None:
                        # A timer was due before this resolution: it fires first, its code
                        # runs, and the resolution comes back round (another may be due).
                        self._cursor -= 1
                        self._fire_early(early)
                        if self.loop.has_ready:
                            self.loop.run_ready()
                        if self.failure is not None:
                            raise self.failure
                        limit = self.event_limit
                        if limit is not None and self.sequence + len(self.buffer) > limit:
                            # Code firing timers without end (a poll loop, a result come
                            # late): the activation ends the run at the limit (it sees
                            # the count), so what is left of the log need not be applied.
                            self.sequence = events[-1].sequence
                            return
                        continue
                self.apply(event)
                self.sequence = event.sequence
                if self.loop.has_ready:
                    self.loop.run_ready()
                if self.failure is not None:
                    raise self.failure
        finally:
            self._replay = None
        self.check_recorded_issued()

    def _resolve_from_history(self, cmd: Command) -> None:
        """During replay, resolve ``cmd`` at once when the log says it is resolved next.

        Equivalent to the original run, where the issuing task blocked and the loop idled until
        this very resolution arrived: nothing else was ready (the ready queue is empty now) and no
        other resolution came first (it is the next one in the log). Only events that run no
        workflow code (command records, retries) lie in between; they are applied on the way.
        Resolved this way, ``await`` on the future returns without a trip through the loop, which
        makes replaying a long sequential history several times cheaper.
        """
        events = self._replay
        if events is None or self.loop.has_ready:
            return
        index = self._cursor
        if index + 1 < len(events):
            # The common cases, spelled out: this step's record then its result, or this
            # sleep's record then its completion.
            first, second = events[index], events[index + 1]
            ftype, stype = first.type, second.type
            if (
                (ftype is _STEP_STARTED and stype is _STEP_COMPLETED)
                or (ftype is _SLEEP_STARTED and stype is _SLEEP_COMPLETED)
            ) and first.sequence > self.sequence:
                command_id = cmd.command_id
                started, completed = first.data, second.data
                if (
                    started["command_id"] == command_id
                    and completed["command_id"] == command_id
                    and not self._waits_for_timer(cmd, second)
                ):
                    if ftype is _STEP_STARTED:
                        attempt = int(started.get("attempt", 1))
                        if attempt > cmd.attempt:
                            cmd.attempt = attempt
                        cmd.retry_pending = False
                    self.sequence = second.sequence
                    self.loop.advance_time(second.epoch_seconds())
                    cmd.done = True
                    self.open.pop(cmd.position, None)
                    _RESOLVERS[second.type](self, cmd, second)
                    self._cursor = index + 2
                    return
        while index < len(events):
            event = events[index]
            etype = event.type
            if etype in _RESOLVERS and not _attempt_failure(event):
                if event.data["command_id"] != cmd.command_id:
                    return
                break
            if etype not in _PASSIVE and not _attempt_failure(event):
                return
            index += 1
        else:
            return
        if self._waits_for_timer(cmd, events[index]):
            return  # (``feed`` fires the timer, then applies the resolution)
        command_id = cmd.command_id
        for event in events[self._cursor : index + 1]:
            if event.sequence <= self.sequence:
                continue
            self.sequence = event.sequence
            etype = event.type
            if etype is EventType.STEP_STARTED and event.data["command_id"] == command_id:
                # This command's own record: its id was checked when the code issued it.
                cmd.attempt = max(cmd.attempt, int(event.data.get("attempt", 1)))
                cmd.retry_pending = False
            elif etype in _RESOLVERS and not _attempt_failure(event):  # the one found above
                self.loop.advance_time(_ts(event))
                cmd.done = True
                self.open.pop(cmd.position, None)
                _RESOLVERS[etype](self, cmd, event)
            else:
                self.apply(event)
        self._cursor = index + 1

    def _note_record(self, position: int, event: Event) -> None:
        if position not in self.recorded:
            self.recorded[position] = event
            if position > self._max_recorded:
                self._max_recorded = position

    def apply(self, event: Event) -> None:
        """Apply one event's effect on commands. Resolutions wake workflow code (run_ready)."""
        etype = event.type
        data = event.data
        if etype in _COMMAND_RECORDS:
            position = _position(data["command_id"])
            self._note_record(position, event)
            if position <= len(self.commands):
                cmd = self.commands[position - 1]
                self._verify(cmd, data["command_id"])
                cmd.recorded = True
                if etype is EventType.STEP_STARTED:
                    cmd.attempt = max(cmd.attempt, int(data.get("attempt", 1)))
                    # A start after an interruption supersedes the attempt it lost. (Replaying,
                    # the command may look started at the interruption already: its code issued
                    # it from the recorded start, further on in the log.)
                    cmd.retry_pending = cmd.lost_attempt = False
            return
        if etype is EventType.STEP_FAILED and data.get("retrying"):
            return  # an attempt's failure: the step.retrying that follows says what comes next
        if etype is EventType.STEP_RETRYING:
            cmd = self._issued(event)
            cmd.attempt = max(cmd.attempt, int(data["attempt"]))
            cmd.retry_pending = True
            cmd.lost_attempt = False  # (the attempt ended: nothing of it is in flight)
            cmd.wake_at = datetime.fromisoformat(data["resume_at"])
            return
        if etype in _RESOLVERS:
            cmd = self._issued(event)
            if cmd.done:
                return
            self.loop.advance_time(_ts(event))
            cmd.done = True
            self.open.pop(cmd.position, None)
            _RESOLVERS[etype](self, cmd, event)
            return
        if etype is EventType.HOOK_ANNOUNCED:
            self.announced.add(_position(data["command_id"]))
            return
        if etype is EventType.WORKFLOW_STARTED:
            self.logical_order = bool(data.get(LOGICAL_ORDER))
            return
        if etype is EventType.CANCELLATION_REQUESTED:
            if not self.cancel_requested:
                self.cancel_requested = True
                self.cancel_reason = data.get("reason")
                self._deliver_cancellation()
            return
        if etype is EventType.WORKFLOW_INTERRUPTED:
            self.losses_counted = True
            for cmd in self.open.values():
                if cmd.kind == "step" and cmd.attempt > 0 and not cmd.retry_pending:
                    cmd.lost_attempt = True
            return
        if etype.value.startswith("workflow."):
            if etype in (
                EventType.WORKFLOW_COMPLETED,
                EventType.WORKFLOW_FAILED,
                EventType.WORKFLOW_CANCELLED,
                EventType.WORKFLOW_CONTINUED_AS_NEW,
            ):
                self.terminal = event
            return

    # -- logical time ---------------------------------------------------------------------------

    def fires_first(self, event: Event) -> Command | None:
        """The timer that must fire before ``event`` is applied, if any.

        Resolutions apply in logical time: a sleep or loop timer due before a resolution fires
        before it, whatever order their events reached the log in. Another writer appends a
        dispatched step's outcome, a hook's payload or a child's ending when it has it; a
        timer's firing is appended by the activation it wakes, which can come late (its message
        lost, its worker gone). Without this rule ``wait_for(step(), 20)`` could return a result
        that took 30 s. The activation that fires such a timer records its firing after the
        resolution (``_fire_early``), so replay, which applies the same rule, meets it there
        and skips it. A resolution's logical time is its event's timestamp, or the due time of
        the timer or hook expiry it is.
        """
        data = event.data
        if _attempt_failure(event):
            return None
        position = _position(data["command_id"])
        if position > len(self.commands):
            return None  # (``apply`` says why)
        cmd = self.commands[position - 1]
        if cmd.done or cmd.command_id != data["command_id"]:
            return None
        if not self._timers:
            return None  # (no sleep or timer issued: the common case)
        return self._due_timer(cmd, event)

    def _waits_for_timer(self, cmd: Command, event: Event) -> bool:
        """Whether resolving ``cmd`` with ``event`` now would pass a timer due before it."""
        return bool(self._timers) and self.logical_order and self._due_timer(cmd, event) is not None

    def _due_timer(self, cmd: Command, event: Event) -> Command | None:
        at = cmd.wake_at
        if at is None or event.type not in (_SLEEP_COMPLETED, EventType.HOOK_EXPIRED):
            at = event.timestamp
            if at is None:
                return None
        # (A sleep's own due time is ``at``: it is never due before itself.)
        return self.timer_due_before(at)

    def timer_due_before(self, at: datetime) -> Command | None:
        """The waiting sleep or loop timer due first (the first issued among those due
        together), if it is due before ``at``."""
        timers = self._timers
        while timers:
            wake, _, cmd = timers[0]
            if cmd.done or not cmd.waiting:
                heapq.heappop(timers)  # (done, or abandoned for good: a cancelled future)
                continue
            return cmd if wake < at else None
        return None

    def _fire_early(self, cmd: Command) -> None:
        """Fire ``cmd`` at its due time, ahead of the resolution ``feed`` is at. Its firing is
        recorded unless the log holds it further on (then that event finds it done)."""
        assert cmd.wake_at is not None
        cmd.done = True
        self.open.pop(cmd.position, None)
        self.loop.advance_time(cmd.wake_at.timestamp())
        self._wake_sleeper(cmd)
        events, ahead = self._replay, self._completed_ahead
        if events is not None and ahead is None:
            # The firings the log holds (those before the cursor are of timers done already).
            ahead = self._completed_ahead = {
                str(event.data.get("command_id"))
                for event in events
                if event.type is _SLEEP_COMPLETED
            }
        command_id = cmd.command_id
        if ahead is None or command_id not in ahead:
            # (Unstamped: storage stamps it as it appends it.)
            self.buffer.append(
                Event(run_id=self.run_id, type=_SLEEP_COMPLETED, data={"command_id": command_id})
            )

    def _issued(self, event: Event) -> Command:
        command_id = event.data["command_id"]
        position = _position(command_id)
        if position > len(self.commands):
            self._fail(
                position,
                expected=describe(command_id),
                actual="nothing (the code has not issued this command)",
                location=None,
                detail=f"the history has {event.type.value} for it",
            )
            raise self.failure  # type: ignore[misc]
        cmd = self.commands[position - 1]
        self._verify(cmd, command_id)
        if self.failure is not None:
            raise self.failure
        return cmd

    # -- resolutions ---------------------------------------------------------------------------

    def _stored(self, event: Event, name: str, decode: Callable[[Any], Any] = loads) -> Any:
        """The value field ``name`` of ``event`` recorded, or ``_UNREADABLE`` when it cannot be
        read: then ``failure`` says why and the command stays unresolved, so the workflow's
        code never sees it. Damaged text (``is_damaged``) is a ``CorruptHistoryError`` (the
        engine ends the run); a value unreadable only here (a class not imported, pickling
        off, a changed model) fails the activation, and the run waits for a process that can
        read it."""
        try:
            return decode(event.data[name])
        except (SerializationError, ValueError, TypeError, KeyError) as exc:
            if self.failure is None:
                where = f"run {self.run_id}, event {event.sequence} ({event.type.value})"
                if is_damaged(exc):
                    self.failure = CorruptHistoryError(
                        self.run_id, event.sequence, event.type.value, name, str(exc)
                    )
                else:
                    self.failure = SerializationError(f"{where}, field {name!r}: {exc}")
            return _UNREADABLE

    def _resolve_step_completed(self, cmd: Command, event: Event) -> None:
        future = cmd.future
        if future is not None and not future.done():
            if cmd.cancel_on_outcome:
                future.set_exception(self._cancellation())
                return
            try:  # (inline: the hot path of every replayed step)
                value = loads(event.data["result"])
            except (SerializationError, ValueError, TypeError, KeyError):
                value = self._stored(event, "result")  # says why; _UNREADABLE
            if value is not _UNREADABLE:
                future.set_result(value)

    def _resolve_step_failed(self, cmd: Command, event: Event) -> None:
        if cmd.future is not None and not cmd.future.done():
            if cmd.cancel_on_outcome:
                cmd.future.set_exception(self._cancellation())
            elif (
                error := self._stored(event, "exception", deserialize_exception)
            ) is not _UNREADABLE:
                cmd.future.set_exception(error)

    def _resolve_child(self, cmd: Command, event: Event) -> None:
        etype, data = event.type, event.data
        cmd.child_status = etype.value.rpartition(".")[2]
        future = cmd.future
        if future is None or future.done():
            return
        if etype is EventType.CHILD_WORKFLOW_COMPLETED:
            if (value := self._stored(event, "result")) is not _UNREADABLE:
                future.set_result(value)
            return
        child_id = data.get("child_run_id", cmd.child_run_id)
        ended = "was cancelled" if etype is EventType.CHILD_WORKFLOW_CANCELLED else "failed"
        error = data.get("error") or ended
        future.set_exception(
            ChildWorkflowFailedError(
                f"child workflow {cmd.name!r} (run {child_id}) {ended}: {error}",
                child_run_id=child_id,
                child_workflow_name=cmd.name,
                error_type=data.get("error_type"),
                error_message=data.get("error"),
            )
        )

    # -- cancellation --------------------------------------------------------------------------

    def _cancellation(self) -> CancellationError:
        reason = f": {self.cancel_reason}" if self.cancel_reason else ""
        return CancellationError(f"workflow run {self.run_id} was cancelled{reason}")

    def _deliver_cancellation(self) -> None:
        """The request arrived: every unshielded command the code waits on gets
        ``CancellationError`` now, except a step attempt in flight, which gets it once its
        outcome is recorded (a step that ran is never lost)."""
        for waiter, shielded in self.result_waiters:
            if not shielded and not waiter.done():
                waiter.set_exception(self._cancellation())
        if self._continuing is not None and not self._continuing[1]:
            # The run has not ended yet: the code waits in continue_as_new, a durable call like
            # any other, so the request is delivered there (a replay applies it at the same
            # place in the log, after the call).
            future = self._continuing[0]
            self._continuing, self.continuation = None, None
            if not future.done():
                future.set_exception(self._cancellation())
        for cmd in list(self.open.values()):
            if cmd.shielded or not cmd.waiting or cmd.kind == "timer":
                continue
            if cmd.kind == "child" and not cmd.wait:
                continue  # nobody awaits it here: handle.result() has its own waiter
            if cmd.kind == "step" and (
                # (In flight: an attempt an earlier try of the activation runs. Not a retry the
                # log does not show started: a replay would not hold the request back for it.)
                not cmd.retry_pending
                and (cmd.attempt > 0 or cmd.command_id in self.in_flight)
            ):
                cmd.cancel_on_outcome = True
                continue
            self._cancel_command(cmd)

    def _cancel_command(self, cmd: Command) -> None:
        cmd.done = True
        self.open.pop(cmd.position, None)
        if cmd.future is not None and not cmd.future.done():
            cmd.future.set_exception(self._cancellation())

    def _refused(self, cmd: Command) -> bool:
        """A durable call issued while cancellation is requested and no shield is up: its future
        raises ``CancellationError`` and nothing is recorded for it."""
        if not self.cancel_requested or cmd.shielded or not cmd.position:
            return False
        self._cancel_command(cmd)
        return True

    def enter_shield(self) -> None:
        self.shield_depth += 1

    def exit_shield(self) -> None:
        self.shield_depth -= 1

    def _resolve_sleep(self, cmd: Command, event: Event) -> None:  # noqa: ARG002
        self._wake_sleeper(cmd)

    def _wake_sleeper(self, cmd: Command) -> None:
        if cmd.kind == "timer":
            handle = cmd.handle
            if handle is not None and not handle.cancelled():
                callback, args = handle._callback, handle._args  # type: ignore[attr-defined]
                self.loop.call_soon(callback, *args, context=handle._context)  # type: ignore[attr-defined]
        elif cmd.future is not None and not cmd.future.done():
            cmd.future.set_result(None)

    def _resolve_hook_received(self, cmd: Command, event: Event) -> None:
        if cmd.future is None or cmd.future.done():
            return
        payload = self._stored(event, "payload")
        if payload is _UNREADABLE:
            return
        schema = cmd.payload_schema
        if schema is not None and not isinstance(payload, schema):
            payload = schema.model_validate(payload)
        cmd.future.set_result(payload)

    def _resolve_hook_expired(self, cmd: Command, event: Event) -> None:  # noqa: ARG002
        if cmd.future is not None and not cmd.future.done():
            cmd.future.set_exception(
                HookExpiredError(f"hook {cmd.name!r} expired before a payload arrived")
            )

    # -- non-determinism -----------------------------------------------------------------------

    def _verify(self, cmd: Command, recorded_id: str) -> None:
        if cmd.command_id != recorded_id and self.failure is None:
            self._fail(
                cmd.position,
                expected=describe(recorded_id),
                actual=describe(cmd.command_id),
                location=cmd.location,
            )

    def _fail(
        self,
        position: int,
        *,
        expected: str,
        actual: str,
        location: str | None,
        detail: str = "",
    ) -> None:
        where = f"\n  at:       {location}" if location else ""
        extra = f"\n  ({detail})" if detail else ""
        message = (
            f"workflow {self.workflow_name!r} run {self.run_id} is not deterministic:"
            f" command {position} differs from the history\n"
            f"  expected: {expected} (recorded)\n"
            f"  actual:   {actual} (issued by the code){where}{extra}"
        )
        self.failure = NonDeterminismError(message, position, expected, actual, location)

    def check_recorded_issued(self) -> None:
        """Once the code is blocked: every recorded command must have been issued."""
        issued = len(self.commands)
        if self.failure is None and self._max_recorded > issued:
            missing = min(p for p in self.recorded if p > issued)
            if not self.loop.has_ready:
                self._fail(
                    missing,
                    expected=describe(self.recorded[missing].data["command_id"]),
                    actual="nothing (the code no longer issues it)",
                    location=None,
                )
        if self.failure is not None:
            raise self.failure

    # -- issuing commands (called by workflow code, on the workflow loop) ----------------------

    def _issue(self, kind: str, name: str) -> Command:
        if self._closed:
            # Commands issued while an instance is torn down are ignored: they never resolve.
            return Command(0, "", kind, name, future=self.loop.create_future())
        position = len(self.commands) + 1
        command_id = f"{kind}:{name}:{position}" if name else f"{kind}:{position}"
        cmd = Command(position, command_id, kind, name, shielded=self.shield_depth > 0)
        self.commands.append(cmd)
        self.open[position] = cmd
        recorded = self.recorded.get(position)
        if recorded is not None:
            cmd.recorded = True
            if recorded.data["command_id"] != command_id and self.failure is None:
                cmd.location = _user_location()
                self._verify(cmd, recorded.data["command_id"])
            if recorded.type is EventType.STEP_STARTED:
                cmd.attempt = int(recorded.data.get("attempt", 1))
        return cmd

    def call_step(
        self, definition: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        cmd = self._issue("step", definition.name)
        cmd.future = self.loop.create_future()
        if self._refused(cmd):
            return cmd.future
        cmd.step = definition
        cmd.args = args
        cmd.kwargs = kwargs
        cmd.dispatched = self.dispatch_steps and not definition.force_local
        if cmd.recorded:
            self._resolve_from_history(cmd)
        return cmd.future

    def sleep(self, duration: Any) -> asyncio.Future[None]:
        resume_at = resolve_wake_time(duration, self.logical_now())
        cmd = self._issue("sleep", "")
        cmd.future = self.loop.create_future()
        if self._refused(cmd):
            return cmd.future
        self._start_timer(cmd, resume_at)
        if cmd.recorded:
            self._resolve_from_history(cmd)
        return cmd.future

    def loop_timer(
        self,
        when: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self.loop, context)
        cmd = self._issue("timer", "")
        cmd.handle = handle
        self._start_timer(cmd, datetime.fromtimestamp(max(when, self.loop.time()), UTC))
        return handle

    def _start_timer(self, cmd: Command, resume_at: datetime) -> None:
        recorded = self.recorded.get(cmd.position)
        if recorded is not None and recorded.data["command_id"] == cmd.command_id:
            cmd.wake_at = datetime.fromisoformat(recorded.data["resume_at"])
        else:
            cmd.wake_at = resume_at
        if cmd.position:
            heapq.heappush(self._timers, (cmd.wake_at, cmd.position, cmd))
        if recorded is not None and recorded.data["command_id"] == cmd.command_id:
            return
        if not cmd.recorded and cmd.position:
            self._record(
                EventType.SLEEP_STARTED,
                {"command_id": cmd.command_id, "resume_at": resume_at.isoformat()},
            )

    def hook(
        self,
        name: str,
        *,
        timeout: Any = None,
        on_created: Any = None,
        payload_schema: Any = None,
        on_received: Any = None,  # noqa: ARG002 - applied by the primitive, in workflow code
    ) -> asyncio.Future[Any]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a hook needs a non-empty name, got {name!r}")
        expires_at = None if timeout is None else self.logical_now() + parse_duration(timeout)
        cmd = self._issue("hook", name)
        cmd.future = self.loop.create_future()
        if self._refused(cmd):
            return cmd.future
        cmd.hook_id = f"hook-{cmd.position}"
        cmd.payload_schema = payload_schema
        cmd.on_created = on_created
        recorded = self.recorded.get(cmd.position)
        if recorded is not None and recorded.data["command_id"] == cmd.command_id:
            raw = recorded.data.get("expires_at")
            cmd.wake_at = datetime.fromisoformat(raw) if raw else None
            if on_created is not None and recorded.data.get("announce"):
                # (A hook recorded without ``announce`` had its on_created called after the
                # commit, by an engine older than hook.announced: not called again.)
                self._announcing[cmd.position] = cmd
        else:
            if on_created is not None and cmd.position:
                self._announcing[cmd.position] = cmd
            cmd.wake_at = expires_at
            if cmd.position:
                data: dict[str, Any] = {
                    "command_id": cmd.command_id,
                    "hook_id": cmd.hook_id,
                    "name": name,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                }
                if on_created is not None:
                    data["announce"] = True
                self._record(EventType.HOOK_CREATED, data)
        if cmd.recorded:
            self._resolve_from_history(cmd)
        return cmd.future

    def start_child(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        wait: bool,
    ) -> tuple[asyncio.Future[Any], str]:
        """Issue a child workflow command; returns the future of the child's result (or
        ``ChildWorkflowFailedError``) and the child's run id: this run's id and the command's
        position, so the same call on replay names the same child, and two calls two."""
        if self.run.nesting_depth >= self.max_nesting_depth:
            raise MaxNestingDepthError(
                f"workflow {self.workflow_name!r} (run {self.run_id}, nesting depth"
                f" {self.run.nesting_depth}) cannot start child workflow {definition.name!r}:"
                f" children nest at most {levels(self.max_nesting_depth)} deep"
            )
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"child workflow {definition.name!r}: {exc}") from None
        args_json, kwargs_json = serialize_args(args, kwargs)
        cmd = self._issue("child", definition.name)
        cmd.wait = wait
        future = cmd.future = self.loop.create_future()
        if not wait:
            future.add_done_callback(_retrieve)
        cmd.child_run_id = f"{self.run_id}.c{cmd.position}"
        if self._refused(cmd):
            return future, cmd.child_run_id
        if cmd.position:
            self.children[cmd.child_run_id] = cmd
        recorded = self.recorded.get(cmd.position)
        if recorded is not None and recorded.data["command_id"] == cmd.command_id:
            cmd.child_run_id = recorded.data["child_run_id"]
            self.children[cmd.child_run_id] = cmd
        elif cmd.position:
            self._record(
                EventType.CHILD_WORKFLOW_STARTED,
                {
                    "command_id": cmd.command_id,
                    "child_run_id": cmd.child_run_id,
                    "child_workflow_name": definition.name,
                    # Stored once, in the child's workflow.started: mentioned here.
                    **mention("args", args_json),
                    **mention("kwargs", kwargs_json),
                },
            )
            self.child_inputs[cmd.child_run_id] = (args_json, kwargs_json)
            self.spawned += 1
        if cmd.recorded and wait:
            self._resolve_from_history(cmd)
        return future, cmd.child_run_id

    def _child(self, child_run_id: str) -> Command:
        cmd = self.children.get(child_run_id)
        if cmd is None:
            raise ValueError(f"run {self.run_id} started no child workflow {child_run_id!r}")
        return cmd

    def child_result(self, child_run_id: str) -> asyncio.Future[Any]:
        """``handle.result()`` in the workflow: a waiter on the child's outcome, cancelled like
        any durable call it waits on (unless issued inside ``shield()``)."""
        cmd = self._child(child_run_id)
        waiter: asyncio.Future[Any] = self.loop.create_future()
        shielded = self.shield_depth > 0
        if self.cancel_requested and not shielded:
            waiter.set_exception(self._cancellation())
            return waiter
        live = [(w, s) for w, s in self.result_waiters if not w.done()]
        live.append((waiter, shielded))
        self.result_waiters = live
        assert cmd.future is not None

        def copy(done: asyncio.Future[Any]) -> None:
            if waiter.done():
                return
            if done.cancelled():
                waiter.cancel()
            elif done.exception() is not None:
                waiter.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                waiter.set_result(done.result())

        if cmd.future.done():
            copy(cmd.future)
        else:
            cmd.future.add_done_callback(copy)
        return waiter

    def child_status(self, child_run_id: str) -> str:
        """What this run's log knows of a child: ``running``, or how it ended."""
        return self._child(child_run_id).child_status or "running"

    def cancel_child(self, child_run_id: str, reason: str | None) -> bool:
        """``handle.cancel()`` in the workflow: a durable command whose record, committed with
        the run's next write, carries the request to the child. True when the log knew the child
        as still running."""
        child = self._child(child_run_id)
        running = child.child_status is None
        cmd = self._issue("cancel", child.name)
        cmd.done = True
        self.open.pop(cmd.position, None)
        recorded = self.recorded.get(cmd.position)
        if recorded is not None and recorded.data["command_id"] == cmd.command_id:
            return bool(recorded.data.get("running", running))
        if cmd.position:
            self._record(
                EventType.CHILD_WORKFLOW_CANCEL_REQUESTED,
                {
                    "command_id": cmd.command_id,
                    "child_run_id": child_run_id,
                    "reason": reason,
                    "running": running,
                },
            )
            self.spawned += 1
        return running

    def continue_as_new(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """End this run and start a new one of the same workflow with ``args``: the activation
        does both in one write. The returned future never resolves (the call never returns)."""
        try:
            self.definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"continue_as_new of {self.workflow_name!r}: {exc}") from None
        encoded = serialize_args(args, kwargs)
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.cancel_requested and self.shield_depth == 0:
            future.set_exception(self._cancellation())
        elif self.continuation is None and not self._closed:
            self.continuation = encoded
            self._continuing = (future, self.shield_depth > 0)
        return future

    def command(self, command_id: str) -> Command:
        return self.commands[_position(command_id) - 1]

    def now(self) -> datetime:
        return self.logical_now()

    def _random(self) -> random.Random:
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(f"pyworkflow:{self.run_id}")
        return rng

    def random(self) -> float:
        return self._random().random()

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._random().getrandbits(128), version=4)

    def set_step_context(self, ctx: StepContext | None) -> None:
        expected = self.definition.context_class
        if ctx is not None and expected is not None and not isinstance(ctx, expected):
            raise TypeError(
                f"workflow {self.workflow_name!r} takes a {expected.__name__} step context"
                f" (context_class), got {type(ctx).__name__}"
            )
        self.step_context = ctx

    def get_step_context(self) -> StepContext | None:
        return self.step_context

    # -- what the activation asks --------------------------------------------------------------

    def next_wake(self) -> datetime | None:
        """The earliest time something this run waits on becomes due (sleeps, expiries, retries)."""
        earliest: datetime | None = None
        for cmd in self.open.values():
            if cmd.wake_at is None or not cmd.waiting:
                continue
            if cmd.kind == "step" and not cmd.retry_pending:
                continue
            if earliest is None or cmd.wake_at < earliest:
                earliest = cmd.wake_at
        return earliest

    def unannounced(self) -> list[Command]:
        """Hooks waiting for a payload whose ``on_created`` has not been called (as far as the
        log knows): the activation calls it while it holds the run, then records
        ``hook.announced``."""
        announcing = self._announcing
        if not announcing:
            return []
        for position, cmd in list(announcing.items()):
            if position in self.announced or not cmd.waiting:
                del announcing[position]
        return list(announcing.values())

    def teardown(self) -> None:
        """Cancel the workflow's tasks; commands issued while they unwind are ignored."""
        if self._closed:
            return
        self._closed = True
        for task in list(self.loop.tasks):
            if not task.done():
                task.cancel()
        for _ in range(10):
            if not self.loop.has_ready:
                break
            self.loop.run_ready()
        self.loop.close()
        # The commands, their futures and the loop point back at this instance: let go of
        # them now, so reference counting frees a finished run instead of the cyclic GC.
        self.commands = []
        self.open = {}
        self.buffer = []
        self._announcing = {}
        self._timers = []


def _attempt_failure(event: Event) -> bool:
    """A failed attempt that a retry follows (``step.failed`` with ``retrying``): passive."""
    return event.type is EventType.STEP_FAILED and bool(event.data.get("retrying"))


def _position(command_id: str) -> int:
    return int(command_id.rpartition(":")[2])


def levels(depth: int) -> str:
    """``3 levels``, ``1 level``: the nesting limit in an error message."""
    return f"{depth} level" if depth == 1 else f"{depth} levels"


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an outcome nobody may await as seen (no "exception was never retrieved")."""
    if not future.cancelled():
        future.exception()


_UNREADABLE = object()  # what ``WorkflowInstance._stored`` gives for a value it cannot read

_RESOLVERS: dict[EventType, Callable[[WorkflowInstance, Command, Event], None]] = {
    EventType.STEP_COMPLETED: WorkflowInstance._resolve_step_completed,
    EventType.STEP_FAILED: WorkflowInstance._resolve_step_failed,
    EventType.SLEEP_COMPLETED: WorkflowInstance._resolve_sleep,
    EventType.HOOK_RECEIVED: WorkflowInstance._resolve_hook_received,
    EventType.HOOK_EXPIRED: WorkflowInstance._resolve_hook_expired,
    EventType.CHILD_WORKFLOW_COMPLETED: WorkflowInstance._resolve_child,
    EventType.CHILD_WORKFLOW_FAILED: WorkflowInstance._resolve_child,
    EventType.CHILD_WORKFLOW_CANCELLED: WorkflowInstance._resolve_child,
}

__all__ = ["LOGICAL_ORDER", "MAX_NESTING_DEPTH", "Command", "WorkflowInstance", "describe"]
