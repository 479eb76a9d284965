"""The engine's activations (``advance``): replay, continue, commit, publish, block, finish.

An activation loads a run (or takes its cached instance plus only the events it has not seen),
replays, then continues past the end of the log until the workflow is blocked or finished:

1. step the workflow event loop until nothing is ready;
2. take one live action — a due sleep, an expired hook, a retry that is due, an inline step —
   turn it into events, apply them to the instance (the same ``apply`` replay uses), and commit
   before the next side effect; inline steps cost exactly one commit each;
3. when blocked, commit what is left with the run's status and its next wake-up, conditional on
   the sequence the activation has seen; only then publish commands (dispatched steps,
   ``on_created`` callbacks, the timer hint).

A conflicting commit discards the instance and runs the activation again from storage. This module
never imports a runtime or Celery: the runtime gives it a ``Clock`` and a ``TaskQueue``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger

from pyworkflow.core.registry import get_workflow
from pyworkflow.engine.attempts import StepAttempts, carry_inline_work, invoke_body
from pyworkflow.engine.blocking import Blocking
from pyworkflow.engine.cancellation import Cancellations
from pyworkflow.engine.children import (
    Children,
    cancel_notice,
    child_runs,
    continued_run,
    ending_notices,
    open_children,
)
from pyworkflow.engine.due import deadline_of, next_attempt, next_wake
from pyworkflow.engine.hooks import HookDelivery
from pyworkflow.engine.instance import MAX_NESTING_DEPTH, Command, WorkflowInstance
from pyworkflow.engine.leases import HANDED_BACK, RECOVERED, STARTING, STEP_EXECUTORS
from pyworkflow.engine.options import EngineOptions, StepInvoker
from pyworkflow.engine.outcome import Outcome
from pyworkflow.engine.ports import Clock, IdSource, RandomIds, TaskQueue
from pyworkflow.engine.recovery import Recovery, progress_made
from pyworkflow.engine.runs import RunLifecycle
from pyworkflow.engine.schedules import SCHEDULE_ID, ScheduleService
from pyworkflow.model.events import Event, EventType, ending_record, mention
from pyworkflow.model.exceptions import (
    CancellationError,
    EventLimitExceededError,
    HookAlreadyReceivedError,
    LeaseHeldError,
    SequenceConflictError,
    SerializationError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from pyworkflow.model.schemas import (
    IN_LOG,
    UNSET,
    Commit,
    Notice,
    RunStatus,
    WorkflowRun,
    _Unset,
)
from pyworkflow.observability.logging import lifecycle
from pyworkflow.serialization import dumps, error_fields, serialize_args
from pyworkflow.storage.base import StorageBackend

MAX_CONFLICT_RETRIES = 20


@dataclass(slots=True)
class _ChildHere:
    """A child run in its parent's activation (``Engine._child_here``): how it went."""

    parent_id: str
    child_id: str
    outcome: Outcome | None = None  # its first activation's, when that returned
    requeue: bool = False  # it failed there: its own activation is queued
    left: bool = False  # the child was left to its own activation: the parent's write blocks it


class _LeftToQueue(BaseException):  # noqa: N818 - a decision, not an error
    """A child in its parent's activation is about to write something but its ending (nothing
    of it is written): it stops there and goes to the queue (``Engine._child_here``). A
    ``BaseException`` so that the child's activation does not handle it as its own failure."""


class _JointWriteFailed(BaseException):
    """The parent's write, joined to its child's ending, failed: nothing was written. A
    ``BaseException`` so that the child's activation does not handle it as its own failure
    (no retry, no block recorded on a run that does not exist); the parent re-raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


@dataclass(slots=True)
class _Joint:
    """The write that creates a child run here, waiting for the child's first write
    (``Engine._child_here``); ``sequence``: its head once written."""

    commit: Commit
    sequence: int | None = None

    async def flush(self, storage: StorageBackend, child: Commit | None = None) -> int | None:
        """Write the waiting commit, then ``child`` (if any): one write where storage can
        (``joint_commits``); the child's head. A failure of the waiting commit's part raises
        ``_JointWriteFailed``."""
        try:
            if storage.joint_commits and child is not None:
                self.sequence, head = await storage.commit_many([self.commit, child])
                return head
            self.sequence = await storage.commit(self.commit)
        except Exception as exc:
            raise _JointWriteFailed(exc) from exc
        return await storage.commit(child) if child is not None else None


def _waited_child(inst: WorkflowInstance) -> str | None:
    """The child the workflow awaits now, started in this activation and not yet committed;
    None unless it is the only open command."""
    commands = [cmd for cmd in inst.open.values() if cmd.waiting]
    if len(commands) != 1:
        return None
    cmd = commands[0]
    if cmd.kind != "child" or not cmd.wait or cmd.recorded or cmd.child_run_id is None:
        return None
    return cmd.child_run_id


# What a cached instance assumes of its timer row once someone else wrote to the run: due, so
# the activation's closing commit rewrites it.
_TIMER_UNKNOWN = datetime.min.replace(tzinfo=UTC)


# An inline attempt, by (command id, attempt): its outcome events, or the task still running it.
_Carried = dict[tuple[str, int], "list[Event] | asyncio.Task[list[Event]]"]


# How long a run waits before a process is asked again to announce a hook that the process which
# last tried could not (its hook key is not the one that made the hook).
HOOK_KEY_RETRY = timedelta(minutes=5)


@dataclass(slots=True)
class _Activation:
    inst: WorkflowInstance
    running: dict[int, asyncio.Task[list[Event]]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)  # position -> attempt running
    # Inline attempts an earlier try of this activation ran but could not commit (it lost a
    # commit race to a step worker or a hook receipt): adopted, never run again.
    carried: _Carried = field(default_factory=dict)
    # Carried attempts whose start this try recorded up front (``_pin_carried``): their
    # outcome goes in without it.
    pinned: set[tuple[str, int]] = field(default_factory=set)


class Engine(
    RunLifecycle,
    StepAttempts,
    HookDelivery,
    Cancellations,
    Children,
    Recovery,
    ScheduleService,
    Blocking,
):
    """Runs activations of the runs in one storage backend. Shared by every runtime.

    Its other parts live in their own modules, one concept each: starting runs and waiting for
    their end (``runs.RunLifecycle``), step attempts (``attempts.StepAttempts``), hook tokens out
    and payloads in (``hooks.HookDelivery``), cancellation requests
    (``cancellation.Cancellations``), children and other runs (``children.Children``), timers
    and recovery (``recovery.Recovery``), schedules (``schedules.ScheduleService``). What is due
    when is in ``due``.
    """

    def __init__(
        self,
        storage: StorageBackend,
        clock: Clock,
        queue: TaskQueue,
        *,
        ids: IdSource | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.queue = queue
        self.ids = ids or RandomIds()
        self.options = options or EngineOptions()
        self.timer_listener: Callable[[str, datetime], None] | None = None
        # Told (run id, hook id, token) before each on_created call (the simulator's ledger).
        self.hook_listener: Callable[[str, str, str], None] | None = None
        self._hook_key: bytes | None = None  # resolved at the first hook (``hook_key``)
        self._cache: OrderedDict[str, WorkflowInstance] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._finished: dict[str, list[asyncio.Future[Outcome]]] = {}
        self.active: set[str] = set()
        self.executing: Counter[str] = Counter()  # run id -> its step attempts running here
        self.step_children: dict[int, int] = {}
        # Runs this engine just created by a commit (children, the next run of a chain): their
        # first activation here reads nothing back (as ``start_run``'s does with ``new_run``).
        self._born: OrderedDict[str, WorkflowRun] = OrderedDict()
        self.cancel_known: set[str] = set()
        self.cancel_watch: dict[str, int] = {}
        self.activation_seen: dict[str, int] = {}  # active run -> sequence its activation loaded
        # Runs holding on for a child running here (``_child_here``), and those children.
        self._holding_for_child: dict[str, _ChildHere] = {}
        self._held_by: dict[str, _ChildHere] = {}
        self._told_here: dict[str, Notice] = {}  # such a run -> its child's ending notice
        self._joining: dict[str, _Joint] = {}  # such a child -> the write its first one joins

    # -- activations ---------------------------------------------------------------------------

    async def advance(self, run_id: str, *, new_run: WorkflowRun | None = None) -> Outcome:
        """Run one activation of ``run_id``: replay, continue until blocked or finished, commit.

        ``new_run`` is the record ``start_run`` just created: the first activation of a new run
        then reads nothing back from storage.
        """
        if new_run is None and self._born:
            new_run = self._born.pop(run_id, None)
        lock = self._locks.get(run_id)
        if lock is None:
            lock = self._locks[run_id] = asyncio.Lock()
        try:
            async with lock:
                self.active.add(run_id)
                try:
                    return await self._advance(run_id, new_run)
                except LeaseHeldError as exc:
                    # Another activation is at work on the run: it sees whatever woke this one
                    # (its next commit conflicts with any event that arrived meanwhile).
                    logger.debug("activation of {} skipped: another activation holds it", run_id)
                    return Outcome(run_id, RunStatus.RUNNING, held_by=exc.holder or "?")
                except Exception as exc:
                    if self.options.block_unregistered or not isinstance(
                        exc, WorkflowNotFoundError
                    ):
                        await self.record_block(run_id, exc, seen=self.activation_seen.get(run_id))
                    raise
                finally:
                    self.active.discard(run_id)
                    self.activation_seen.pop(run_id, None)
        finally:
            # Released, and nobody waits for it (a woken waiter stays in _waiters until it
            # holds the lock): forget it, or an engine would keep a lock per run ever seen.
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(run_id, None)

    async def _advance(self, run_id: str, new_run: WorkflowRun | None) -> Outcome:
        carried: _Carried = {}
        try:
            for _ in range(MAX_CONFLICT_RETRIES):
                try:
                    return await self._activate(run_id, new_run, carried)
                except SequenceConflictError:
                    new_run = None
                    logger.debug("activation of {} lost a commit race; retrying", run_id)
            raise SequenceConflictError(
                f"run {run_id}: {MAX_CONFLICT_RETRIES} activations in a row lost the race"
            )
        finally:
            for work in carried.values():  # attempts the log no longer needs
                if isinstance(work, asyncio.Task):
                    work.cancel()

    async def _hand_back(self, run_id: str) -> None:
        """After an activation that held the run failed: leave the run to whoever comes next,
        now, rather than leased to this process until the lease runs out (the sweeper still
        recovers it then)."""
        now = self.clock.now()
        lease = (HANDED_BACK, now + self.options.lease_ttl)
        with contextlib.suppress(Exception):  # storage may be what failed: the lease expires
            await self.storage.commit(
                Commit(run_id=run_id, now=now, lease=lease, owner=self.options.owner)
            )

    async def _load(
        self, run_id: str, new_run: WorkflowRun | None, carried: _Carried | None = None
    ) -> WorkflowInstance | Outcome:
        """The run's instance, caught up with its log (or the ending of a finished run).
        ``carried``: inline attempts an earlier try ran, in flight for a cancellation request
        found in the log (their outcome is recorded before the workflow hears of it)."""
        if new_run is not None and run_id not in self._cache:
            fresh = WorkflowInstance(
                new_run,
                get_workflow(new_run.workflow_name),
                dispatch_steps=self.options.dispatch_steps,
                max_nesting_depth=self.options.max_nesting_depth,
            )
            fresh.sequence = new_run.last_sequence  # just workflow.started
            fresh.event_limit = self.options.event_limit
            fresh.loop.run_ready()
            return fresh
        cached = self._cache.pop(run_id, None)
        if cached is not None:
            try:
                news = await self.storage.get_events(run_id, after_sequence=cached.sequence)
                if carried:
                    cached.in_flight = {command_id for command_id, _ in carried}
                cached.feed(news)
                cached.in_flight = set()  # (a request in this feed has been delivered)
            except BaseException:
                cached.teardown()
                raise
            if news:
                # Another writer (a hook receipt, a step worker, a sweeper) also set the run's
                # timer, and may hold its lease.
                cached.timer = _TIMER_UNKNOWN
                cached.lease_owner = None
            return cached
        run = await self.storage.get_run(run_id)
        if run is None:
            raise WorkflowNotFoundError(f"no workflow run with id {run_id!r}")
        if run.status.is_terminal:
            return await self._outcome_of(run)
        # What this activation saw, before anything can fail: a block it records is
        # conditional on it (``engine.blocking``).
        self.activation_seen[run_id] = run.last_sequence
        definition = get_workflow(run.workflow_name)
        events = await self.storage.get_events(run_id)
        # The timer after the events: a writer that set it with an event this instance saw did
        # so before this read (a timer without its event would fail the next commit).
        timer = await self.storage.get_timer(run_id)
        inst = WorkflowInstance(
            _inputs_from_log(run, events),
            definition,
            dispatch_steps=self.options.dispatch_steps,
            max_nesting_depth=self.options.max_nesting_depth,
        )
        inst.status = run.status
        inst.blocked = run.error is not None
        inst.event_limit = self.options.event_limit
        if carried:
            inst.in_flight = {command_id for command_id, _ in carried}
        try:
            inst.timer = timer.fire_at if timer else None
            if events and "max_nesting_depth" in events[0].data:  # the limit it started under
                inst.max_nesting_depth = int(events[0].data["max_nesting_depth"])
            elif events:
                inst.max_nesting_depth = MAX_NESTING_DEPTH
            inst.feed(events)
            inst.in_flight = set()
        except BaseException:
            inst.teardown()
            raise
        return inst

    async def _activate(
        self, run_id: str, new_run: WorkflowRun | None, carried: _Carried
    ) -> Outcome:
        loaded = await self._load(run_id, new_run, carried)
        if isinstance(loaded, Outcome):
            return loaded
        inst = loaded
        if new_run is None:
            lifecycle("run {} resumed", run_id, run_id=run_id, workflow=inst.workflow_name)
        act = _Activation(inst, carried=carried)
        self.activation_seen[run_id] = inst.sequence  # (watched for cancellation meanwhile)
        try:
            if carried and inst.cancel_requested:
                self._pin_carried(act)
            outcome = await self._drive(act)
        except BaseException as exc:
            if isinstance(exc, SequenceConflictError):
                carry_inline_work(act)
            for task in act.running.values():
                task.cancel()
            inst.teardown()
            if (
                isinstance(exc, Exception)
                and not isinstance(exc, SequenceConflictError | LeaseHeldError)
                and inst.lease_owner == self.options.owner
            ):
                await self._hand_back(run_id)
            raise
        if outcome.status.is_terminal:
            inst.teardown()
            self.cancel_known.discard(run_id)
            self._notify_finished(outcome)
        else:
            self._cache_put(inst)
        return outcome

    def _cache_put(self, inst: WorkflowInstance) -> None:
        self._cache[inst.run_id] = inst
        while len(self._cache) > self.options.cache_size:
            _, old = self._cache.popitem(last=False)
            old.teardown()

    def evict(self, run_id: str | None = None) -> None:
        """Drop cached instances (one run, or all): the next activation replays from storage."""
        victims = [run_id] if run_id is not None else list(self._cache)
        for rid in victims:
            inst = self._cache.pop(rid, None)
            if inst is not None:
                inst.teardown()

    async def _drive(self, act: _Activation) -> Outcome:
        inst = act.inst
        deadline = deadline_of(inst.run)
        while True:
            inst.loop.run_ready()
            if inst.failure is not None:
                raise inst.failure
            if inst.terminal is not None:
                return await self._outcome_of_finished(inst)
            if inst.continuation is not None:
                return await self._continue_as_new(act)
            if inst.main.done():
                return await self._finish(act)
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                return await self._finish(
                    act,
                    WorkflowTimeoutError(
                        f"workflow {inst.workflow_name!r} ran past its max_duration"
                        f" ({inst.run.max_duration})"
                    ),
                    imposed=True,
                )
            if inst.sequence + len(inst.buffer) > self.options.event_limit:
                return await self._finish(
                    act,
                    EventLimitExceededError(
                        f"run {inst.run_id} recorded more than {self.options.event_limit} events"
                    ),
                    imposed=True,
                )
            if not await self._take_action(act, now):
                break
        return await self._block(act, deadline)

    async def _take_action(self, act: _Activation, now: datetime) -> bool:
        """Do the first due piece of live work; False when the workflow is blocked."""
        inst = act.inst
        ready_steps: list[tuple[Command, int]] = []
        due: Command | None = None  # the sleep, timer or hook expiry due first
        dispatch: tuple[Command, int] | None = None  # else the first attempt to dispatch
        for cmd in list(inst.open.values()):
            if not cmd.waiting:
                if cmd.position not in act.running:
                    inst.open.pop(cmd.position, None)
                continue
            kind = cmd.kind
            if kind == "child":
                continue  # its outcome arrives in the log (the child's notice)
            if kind == "sleep" or kind == "timer" or kind == "hook":
                # (What came due first goes first, as replay orders it: ``fires_first``.)
                wake = cmd.wake_at
                if wake is not None and wake <= now and (due is None or wake < due.wake_at):  # type: ignore[operator]
                    due = cmd
            elif dispatch is None and cmd.position not in act.running:
                attempt = next_attempt(cmd, now)
                if attempt is None:
                    continue
                if cmd.dispatched:
                    dispatch = (cmd, attempt)
                else:
                    ready_steps.append((cmd, attempt))
        if due is not None:
            assert due.wake_at is not None
            if await self._record_finished_before(act, ready_steps, due.wake_at):
                return True  # an inline attempt ended before it came due: heard first
            if due.kind == "hook":
                await self._expire_hook(inst, due)
            else:
                self._emit(inst, EventType.SLEEP_COMPLETED, {"command_id": due.command_id})
            return True
        if dispatch is not None:
            self._dispatch(act, *dispatch)
            return True
        if ready_steps and (inst.buffer or self._needs_lease(inst)):
            # What earlier steps did becomes durable before the next side effect starts.
            await self._commit(inst)
        if not ready_steps and not act.running:
            return await self._child_here(act)
        wake = next_wake(inst)
        if (
            ready_steps
            and not act.running
            and len(ready_steps) == 1
            and wake is None
            and not act.carried
        ):
            # The fast path: nothing else can come due while this step runs.
            cmd, attempt = ready_steps[0]
            self._record_step(inst, await self._run_inline(inst, cmd, attempt))
            return True
        for cmd, attempt in ready_steps:
            work = act.carried.pop((cmd.command_id, attempt), None)
            if isinstance(work, list):
                if self._fire_timer_due_first(inst, work):
                    act.carried[(cmd.command_id, attempt)] = work
                    return True
                self._record_attempt(act, work)  # ran before this activation lost a race
                return True
            if work is None:
                work = asyncio.ensure_future(self._run_inline(inst, cmd, attempt))
            else:
                # Still running from the try that lost the race: started, as ``_run_inline``
                # says (a retry it was, no longer pending: its wake-up must not spin the wait).
                cmd.lost_attempt = cmd.retry_pending = False
            act.running[cmd.position] = work
            act.attempts[cmd.position] = attempt
        if not act.running:
            return False
        # A sleep, a hook's expiry, a retry or the deadline may come due while steps run: the
        # workflow sees it then, as it would with its steps on workers.
        timeout = None if wake is None else max((wake - now).total_seconds(), 0.0)
        done, _ = await asyncio.wait(
            list(act.running.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            return True
        position = _first_to_end(act)
        if self._fire_timer_due_first(inst, act.running[position].result()):
            return True  # a timer came due before the attempt ended: it fired first
        self._record_attempt(act, act.running.pop(position).result())
        if act.running:
            await self._commit(inst)  # others may run long: do not hold this result back
        return True

    async def _record_finished_before(
        self, act: _Activation, ready_steps: list[tuple[Command, int]], when: datetime
    ) -> bool:
        """Record the inline attempt that ended first, if it ended before ``when`` (a timer or
        hook expiry due now): its outcome is heard first, as its time says."""
        first: tuple[datetime, int, tuple[str, int] | None] | None = None
        for position, task in act.running.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                end = task.result()[-1].timestamp
                if end is not None and end < when and (first is None or end < first[0]):
                    first = (end, position, None)
        for cmd, attempt in ready_steps:
            key = (cmd.command_id, attempt)
            work = act.carried.get(key)
            if isinstance(work, list):
                end = work[-1].timestamp
                if end is not None and end < when and (first is None or end < first[0]):
                    first = (end, cmd.position, key)  # ran before this activation lost a race
        if first is None:
            return False
        _, position, carried = first
        if carried is not None:
            work = act.carried.pop(carried)
            assert isinstance(work, list)
            self._record_attempt(act, work)
            return True
        self._record_attempt(act, act.running.pop(position).result())
        if act.running:
            await self._commit(act.inst)  # others may run long: do not hold this result back
        return True

    def _fire_timer_due_first(self, inst: WorkflowInstance, events: list[Event]) -> bool:
        """Fire the sleep or timer due before the outcome ``events`` of an attempt, if any:
        replay hears them in that order (``fires_first``)."""
        if not inst.logical_order:
            return False
        ending = events[-1]
        if ending.type is EventType.STEP_RETRYING or ending.timestamp is None:
            return False  # (a retry resolves nothing)
        timer = inst.timer_due_before(ending.timestamp)
        if timer is None:
            return False
        self._emit(inst, EventType.SLEEP_COMPLETED, {"command_id": timer.command_id})
        return True

    async def _child_here(self, act: _Activation) -> bool:
        """The fast path of a child workflow; False when the workflow is blocked.

        When the workflow waits on exactly one child it has just started and on nothing else
        (no step, sleep, hook expiry, retry or deadline can come due meanwhile), this activation
        runs the child's first activation itself, at once: no message, no other worker, and no
        activation of this run to hear how the child ended. The child runs before the write
        that creates it; until it writes, its code has done nothing but run (a crash loses
        nothing a replay does not do again). This run stays leased meanwhile. A child that
        ends without writing anything else (no step, no wait, no child of its own) joins its
        ending to that write (``_write_with_child``): one transaction where storage can
        (``joint_commits``), else this run's write first. Its ending reaches this run's log
        without a timer (should this process die, the sweeper resumes this run); the workflow
        takes it from the child's write (``Notice.placed``) or reads it back, and goes on. A
        child about to write anything but its ending (take its lease for a step, block, start
        a child) is stopped before it writes (``_LeftToQueue``): this run's write blocks it and
        the child goes to the queue, as every child did before. Its steps and waits are then
        its own (a worker lost in them is its loss; a cancellation of this run is not held up
        by them).
        """
        inst = act.inst
        if not self.options.inline_children or inst.spawned != 1 or act.carried:
            return False
        child_id = _waited_child(inst)
        if child_id is None or next_wake(inst) is not None:
            return False
        here = _ChildHere(inst.run_id, child_id)
        self._holding_for_child[inst.run_id] = self._held_by[child_id] = here
        try:
            await self._commit(
                inst, run_here=child_id, write=lambda commit: self._write_with_child(here, commit)
            )
        finally:
            self._holding_for_child.pop(inst.run_id, None)
            self._held_by.pop(child_id, None)
            told = self._told_here.pop(inst.run_id, None)
        if here.left:  # (this run's write blocked it: as storage has it now)
            inst.status, inst.lease_owner = RunStatus.SUSPENDED, None
            return False
        if here.outcome is None or not here.outcome.status.is_terminal:
            return False
        placed = None if told is None else told.placed
        if placed is not None and placed.sequence == inst.sequence + 1:
            news = [placed]  # (storage says where it put the child's ending: nothing else came)
        else:
            news = await self.storage.get_events(inst.run_id, after_sequence=inst.sequence)
        if len(news) != 1 or news[0].data.get("child_run_id") != child_id:
            # Someone else wrote to the run meanwhile (a hook receipt, a cancellation request):
            # it may have set the run's timer, and the next commit takes the run again.
            inst.timer = _TIMER_UNKNOWN
            inst.lease_owner = None
        inst.feed(news)
        return True

    async def _write_with_child(self, here: _ChildHere, commit: Commit) -> int:
        """``_commit``'s write for ``_child_here``: the child's first activation, whose ending
        writes ``commit`` too (``_Joint``); else ``commit`` alone (blocking this run when the
        child was left to the queue). Returns ``commit``'s head; raises what writing
        ``commit`` raised."""
        child_id = here.child_id
        record, first = next((r, f) for r, f in commit.runs_created if r.run_id == child_id)
        joint = self._joining[child_id] = _Joint(commit)
        try:
            try:
                here.outcome = await self.advance(
                    child_id, new_run=record.copy(last_sequence=len(first))
                )
            except _LeftToQueue:
                # The child goes on in an activation of its own: this run blocks instead of
                # waiting here (its write, not yet made, says so), and the child is queued.
                commit.status, commit.lease = RunStatus.SUSPENDED, None
                here.left = here.requeue = True
                self._holding_for_child.pop(here.parent_id, None)
            except _JointWriteFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - the child's own activations take over
                logger.debug("child {} failed in its parent's activation: {!r}", child_id, exc)
                here.requeue = True
            finally:
                self._joining.pop(child_id, None)
            if joint.sequence is None:  # the child wrote nothing: this write goes alone
                await joint.flush(self.storage)
        except _JointWriteFailed as failed:
            raise failed.error from None  # this run's write did not land
        if here.left:  # (its first activation there reads nothing back, like any child's)
            self._born[child_id] = record.copy(last_sequence=len(first))
            if len(self._born) > self.options.cache_size:
                self._born.popitem(last=False)
        if here.requeue:
            await self.queue.enqueue_activation(child_id)
        assert joint.sequence is not None
        return joint.sequence

    def _needs_lease(self, inst: WorkflowInstance) -> bool:
        """Whether a step must not start before a commit makes this worker the run's holder.

        Every inline step runs under this activation's own lease. Without it, a second
        activation (a duplicate message, a timer that fired again, a hook receipt's wake-up)
        could run the same step at the same time; and a lease left to someone who will not renew
        it (the caller that created the run, the sweeper that recovered it) expires mid-step, so
        a sweeper hands the run to a second activation. The commit that takes it (events or not)
        is conditional on the sequence and on nobody else holding the lease (``Commit.owner``),
        so it is also the proof that no other activation is at work on the run.
        """
        return inst.status is not RunStatus.RUNNING or inst.lease_owner != self.options.owner

    def _emit(self, inst: WorkflowInstance, event_type: EventType, data: dict[str, Any]) -> None:
        event = Event(run_id=inst.run_id, type=event_type, data=data, timestamp=self.clock.now())
        inst.buffer.append(event)
        inst.apply(event)

    def _dispatch(self, act: _Activation, cmd: Command, attempt: int) -> None:
        inst = act.inst
        # An attempt lost with its worker (``lost_attempt``) starts again with the same number,
        # recorded like any start: a later activation that replays the log sees it started
        # again, and does not publish it once more while the new one runs.
        cmd.lost_attempt = False
        assert cmd.step is not None
        args_json, kwargs_json = serialize_args(cmd.args, cmd.kwargs)
        data: dict[str, Any] = {
            "command_id": cmd.command_id,
            "step_name": cmd.step.name,
            "attempt": attempt,
            "dispatched": True,
        }
        first = inst.recorded.get(cmd.position)
        if first is not None and "args" in first.data and first.type is EventType.STEP_STARTED:
            # Stored once: the first attempt's step.started holds them (the worker reads them
            # there, ``attempts.step_inputs``); a later attempt mentions them.
            data.update(mention("args", args_json), **mention("kwargs", kwargs_json))
        else:
            data.update(args=args_json, kwargs=kwargs_json)
        if inst.step_context is not None:
            data["step_context"] = dumps(inst.step_context, what="the step context")
        if cmd.shielded:
            data["shielded"] = True  # the worker's check_cancellation() leaves it be
        self._emit(inst, EventType.STEP_STARTED, data)

    async def _run_inline(self, inst: WorkflowInstance, cmd: Command, attempt: int) -> list[Event]:
        assert cmd.step is not None
        # Started: not lost, and no retry is due any more (its wake-up must not cut the wait
        # for the running steps short; see _take_action).
        cmd.lost_attempt = cmd.retry_pending = False
        started = Event(
            run_id=inst.run_id,
            type=EventType.STEP_STARTED,
            data={"command_id": cmd.command_id, "step_name": cmd.step.name, "attempt": attempt},
            timestamp=self.clock.now(),
        )
        outcomes = await self.run_attempt(
            inst.run_id,
            cmd.command_id,
            cmd.step,
            cmd.args,
            cmd.kwargs,
            attempt,
            inst.step_context,
            cmd.shielded,
        )
        return [started, *outcomes]

    def _pin_carried(self, act: _Activation) -> None:
        """Record the start of every attempt an earlier try of this activation ran or left
        running, whose command this try's code has issued again, and wait for it here (when
        this try found a cancellation request: only then does it matter).

        That try lost a commit race; this one read the log again, and a cancellation request
        it found was held back for those attempts (``in_flight``: their outcome is recorded,
        then the code hears of it). A replay holds it back only for an attempt it finds started
        in the log, so the start goes in with this try's first write, and the attempt stays
        this activation's to record (``running``) even if the code stops waiting for it.
        """
        inst = act.inst
        for key, work in list(act.carried.items()):
            command_id, attempt = key
            position = int(command_id.rpartition(":")[2])
            if position > len(inst.commands):
                continue  # (not issued yet: taken up when it is, ``_take_action``)
            cmd = inst.commands[position - 1]
            if cmd.command_id != command_id or cmd.done or cmd.attempt >= attempt:
                continue
            if position in act.running or cmd.step is None:
                continue
            del act.carried[key]
            started = Event(
                run_id=inst.run_id,
                type=EventType.STEP_STARTED,
                data={"command_id": command_id, "step_name": cmd.step.name, "attempt": attempt},
                timestamp=self.clock.now(),
            )
            self._record_step(inst, [started])
            act.pinned.add(key)
            if isinstance(work, list):  # (ended: waits in ``running`` as a finished future)
                finished: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
                finished.set_result(work)
                work = finished  # type: ignore[assignment]
            act.running[position] = work  # type: ignore[assignment]
            act.attempts[position] = attempt

    def _record_attempt(self, act: _Activation, events: list[Event]) -> None:
        """``_record_step``, without the start ``_pin_carried`` recorded already."""
        first = events[0]
        if first.type is EventType.STEP_STARTED and act.pinned:
            key = (first.data["command_id"], first.data["attempt"])
            if key in act.pinned:
                act.pinned.discard(key)
                events = events[1:]
        self._record_step(act.inst, events)

    @staticmethod
    def _record_step(inst: WorkflowInstance, events: list[Event]) -> None:
        """Apply a finished attempt's events; they commit before the next side effect or block.

        Deferring the commit that far costs nothing in safety (a crash before it re-runs the
        attempt, as a crash during it would) and lets a step share its commit with what the
        workflow does next: one write per step, the last one carrying the workflow's ending.
        """
        for event in events:
            inst.buffer.append(event)
            inst.apply(event)

    async def _expire_hook(self, inst: WorkflowInstance, cmd: Command) -> None:
        self._emit(
            inst, EventType.HOOK_EXPIRED, {"command_id": cmd.command_id, "hook_id": cmd.hook_id}
        )
        try:
            await self._commit(inst, hook_expired=cmd.hook_id)
        except HookAlreadyReceivedError:
            # The payload won the race: replay from storage, where hook.received now is.
            raise SequenceConflictError(
                f"hook {cmd.hook_id} of {inst.run_id} was received"
            ) from None

    # -- commits -------------------------------------------------------------------------------

    async def _commit(
        self,
        inst: WorkflowInstance,
        *,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
        completed: bool = False,
        timer: datetime | None | _Unset = UNSET,
        lease: tuple[str, datetime] | None | _Unset = UNSET,
        hook_expired: str | None = None,
        notices: list[Notice] | None = None,
        continued: tuple[str, tuple[WorkflowRun, list[Event]]] | None = None,
        announce: bool = True,
        run_here: str | None = None,
        write: Callable[[Commit], Awaitable[int]] | None = None,
    ) -> None:
        """Commit the instance's buffered events with the given run-row changes (see
        ``Commit``); ``notices`` go to other runs in the same write, ``continued`` is the next
        run of the chain (its id and record) created by it. ``announce=False``: the follow-up
        commit of the hooks' announcements (no guard, no announcing again). ``run_here``: a
        child this commit creates that the caller activates itself (no message for it);
        ``write``: how to write it (``_child_here``), instead of ``storage.commit``."""
        if not completed and self._held_by and inst.run_id in self._held_by:
            # A child in its parent's activation about to write something but its ending: it
            # is left to its own activation (``_child_here``); nothing of it was written.
            raise _LeftToQueue(inst.run_id)
        now = self.clock.now()
        owner = self.options.owner
        if timer is None and inst.timer is None:
            # No timer row to clear, as far as this instance knows; a writer that set one since
            # also appended an event, so this commit is refused anyway (the sequence moved).
            timer = UNSET
        follow_up: datetime | None | _Unset = UNSET
        if announce and self._lets_go_unannounced(inst, status, lease, completed):
            # This commit lets go of the run while a hook's on_created has not been called:
            # its timer is due no later than lease_ttl from now, so that should this process
            # die before hook.announced is committed, the run is activated again and that
            # activation calls on_created (same token): at least once. A follow-up commit
            # records hook.announced and puts the timer this commit asked for back.
            follow_up = inst.timer if isinstance(timer, _Unset) else timer
            guard = now + self.options.lease_ttl
            if follow_up is None or follow_up > guard:
                timer = guard
        if status is None and (inst.status is not RunStatus.RUNNING or inst.lease_owner != owner):
            # The first commit of an activation takes the run (see _needs_lease).
            status = RunStatus.RUNNING
            lease = (owner, now + self.options.lease_ttl)
            if timer is UNSET and inst.timer is not None and inst.timer <= now:
                # The due timer that woke this activation (or a wake-up someone else set) is
                # served now: replace it, or it fires again once its claim runs out, in the
                # middle of a long step. While this activation holds the run, its lease is what
                # brings the run back should the process die.
                timer = next_wake(inst)
        if error is None:
            # Every commit of an activation says the run is not blocked (``engine.blocking``):
            # the same row update, and no block recorded elsewhere (a process with older code,
            # one that lacks the workflow) outlives an activation that got through.
            error = ""
        events = inst.buffer
        new_hooks = [event for event in events if event.type is EventType.HOOK_CREATED]
        hooks = await self._hooks_created(inst, new_hooks) if new_hooks else []
        notices = list(notices) if notices else []
        created: list[tuple[WorkflowRun, list[Event]]] = []
        continued_to = None
        if inst.spawned or continued is not None:  # (rare: keep the step's commit lean)
            if inst.spawned:
                created, told = child_runs(inst, events, self.options, now)
                notices += told
            if continued is not None:
                continued_to = continued[0]
                created.append(continued[1])
        commit = Commit(
            run_id=inst.run_id,
            events=events,
            expected_sequence=inst.sequence,
            now=now,
            status=status,
            result=result,
            error=error,
            completed_at=now if completed else None,
            timer=timer,
            lease=lease,
            hooks_created=[hook for hook, _, _ in hooks],
            hook_expired=hook_expired,
            recovery_attempts=0 if inst.losses_counted and progress_made(events) else None,
            owner=owner,
            runs_created=created,
            continued_to_run_id=continued_to,
            notices=notices,
            # A run that ends disposes the hooks it leaves waiting (storage skips the others).
            hooks_disposed=(
                [cmd.hook_id for cmd in inst.commands if cmd.kind == "hook" and cmd.hook_id]
                if completed
                else []
            ),
        )
        joint = self._joining.get(inst.run_id) if self._joining else None
        if write is not None:
            inst.sequence = await write(commit)
        elif joint is not None and joint.sequence is None:
            head = await joint.flush(self.storage, commit)  # the parent's write first
            assert head is not None
            inst.sequence = head
        else:
            inst.sequence = await self.storage.commit(commit)
        inst.blocked = False
        inst.spawned = 0
        inst.child_inputs.clear()
        if commit.recovery_attempts == 0:
            inst.losses_counted = False
        inst.buffer = []
        if status is not None:
            inst.status = status
        if not isinstance(lease, _Unset):
            inst.lease_owner = None if lease is None else lease[0]
        if not isinstance(timer, _Unset):
            inst.timer = timer
            if timer is not None and self.timer_listener is not None:
                self.timer_listener(inst.run_id, timer)
        for _, token, cmd in hooks:
            inst.hook_tokens[cmd.position] = token
        await self._publish(inst, events)
        if created or notices:
            await self._wake_others(created, notices, run_here)
        if announce and not completed and inst.unannounced():
            stuck = await self._announce(inst)
            if not isinstance(follow_up, _Unset):
                if stuck:
                    # A hook this process cannot tell the token of (its hook key is not the one
                    # that made it; logged): a process that can is asked again later, not every
                    # lease_ttl (``HOOK_KEY_RETRY``), unless the run has something due sooner.
                    retry = now + HOOK_KEY_RETRY
                    follow_up = retry if follow_up is None or follow_up > retry else follow_up
                await self._commit(inst, status=inst.status, timer=follow_up, announce=False)

    async def _wake_others(
        self,
        created: list[tuple[WorkflowRun, list[Event]]],
        notices: list[Notice],
        run_here: str | None = None,
    ) -> None:
        """After a commit that reached other runs: start the runs it created (children, the
        chain's next run) and wake the runs it told something (a parent, children to stop).
        Not ``run_here`` (its creator activates it), nor a parent holding on for its child here
        when told that child's ending (``_child_here``: it reads it itself)."""
        woken = {notice.run_id for notice in notices}
        for notice in notices:  # a request made here: steps running here know it at once
            if notice.event.type is EventType.CANCELLATION_REQUESTED:
                self._know_cancelled(notice.run_id)
        for run, first in created:
            if run.run_id == run_here:
                continue  # (its first activation has run: ``_child_here``)
            if run.run_id not in woken:  # (a log that holds only its first events)
                run.last_sequence = len(first)
                self._born[run.run_id] = run
                if len(self._born) > self.options.cache_size:
                    self._born.popitem(last=False)
            await self.queue.enqueue_activation(run.run_id)
        for notice in notices:
            held = self._holding_for_child.get(notice.run_id)
            if held is not None and notice.event.data.get("child_run_id") == held.child_id:
                self._told_here[notice.run_id] = notice  # (read by _child_here)
            else:
                await self.queue.enqueue_activation(notice.run_id)

    async def _publish(self, inst: WorkflowInstance, events: list[Event]) -> None:
        """After a commit: send what the committed events ask the outside world to do."""
        for event in events:
            if event.type is EventType.STEP_STARTED and event.data.get("dispatched"):
                await self.queue.enqueue_step(
                    inst.run_id, event.data["command_id"], event.data["attempt"]
                )

    async def _block(self, act: _Activation, deadline: datetime | None) -> Outcome:
        inst = act.inst
        now = self.clock.now()
        on_workers = any(
            cmd.kind == "step" and cmd.attempt > 0 and not cmd.retry_pending and cmd.waiting
            for cmd in inst.open.values()
        )
        wake = next_wake(inst, deadline)
        status = RunStatus.RUNNING if on_workers else RunStatus.SUSPENDED
        # Waiting on dispatched attempts, the run is kept alive by their executors.
        lease: tuple[str, datetime] | None = (
            (STEP_EXECUTORS, now + (self.options.dispatch_lease_ttl or self.options.lease_ttl))
            if on_workers
            else None
        )
        stale_timer = inst.timer is not None and inst.timer <= now
        new_holder = (lease[0] if lease is not None else None) != inst.lease_owner
        if (
            inst.buffer
            or status is not inst.status
            or wake != inst.timer
            or stale_timer
            or new_holder
            or inst.blocked  # (its code got through now: the commit clears the block)
        ):
            await self._commit(inst, status=status, timer=wake, lease=lease)
        if status is RunStatus.SUSPENDED:
            lifecycle(
                "run {} suspended (next wake-up {})",
                inst.run_id,
                "none: waiting for a hook or another run" if wake is None else wake.isoformat(),
                run_id=inst.run_id,
                workflow=inst.workflow_name,
            )
        return Outcome(inst.run_id, status)

    async def _finish(
        self, act: _Activation, error: BaseException | None = None, *, imposed: bool = False
    ) -> Outcome:
        """The workflow returned or raised (or hit a limit): record the terminal event.

        ``imposed``: the engine ends the run from outside its code (a limit), so replay must not
        expect the code to end there; the event says so (``imposed: true``).
        """
        outcome = await self._record_ending(act, error, imposed)
        schedule_id = act.inst.run.context.get(SCHEDULE_ID)
        if schedule_id is not None:
            await self.schedule_run_ended(str(schedule_id))
        return outcome

    async def _record_ending(
        self, act: _Activation, error: BaseException | None, imposed: bool
    ) -> Outcome:
        inst = act.inst
        for task in act.running.values():
            task.cancel()
        act.running.clear()
        main = inst.main
        if error is None and main.done():
            if main.cancelled():
                error = WorkflowError("the workflow's main task was cancelled")
            else:
                error = main.exception()
        result_json = None
        if error is None:
            try:
                result_json = dumps(main.result(), what="the workflow's return value")
            except SerializationError as exc:
                error = exc
        if error is None:
            assert result_json is not None
            # The value is stored once, in the run record (``WorkflowRun.result``); the log's
            # ending copies only a small one (``ending_record``); a parent hears it in its notice.
            self._emit(inst, EventType.WORKFLOW_COMPLETED, ending_record(result_json))
            await self._commit(
                inst,
                status=RunStatus.COMPLETED,
                result=result_json,
                completed=True,
                timer=None,
                lease=None,
                notices=self._ending_notices(inst, RunStatus.COMPLETED, {"result": result_json}),
            )
            lifecycle(
                "run {} completed", inst.run_id, run_id=inst.run_id, workflow=inst.workflow_name
            )
            return Outcome(inst.run_id, RunStatus.COMPLETED, result=result_json)
        if isinstance(error, CancellationError) and inst.cancel_requested and not imposed:
            # The request's CancellationError escaped the workflow: the run ends cancelled.
            cancelled: dict[str, Any] = {**error_fields(error), "reason": inst.cancel_reason}
            self._emit(inst, EventType.WORKFLOW_CANCELLED, cancelled)
            await self._commit(
                inst,
                status=RunStatus.CANCELLED,
                error=cancelled["error"],
                completed=True,
                timer=None,
                lease=None,
                notices=self._ending_notices(inst, RunStatus.CANCELLED, cancelled),
            )
            lifecycle(
                "run {} cancelled", inst.run_id, run_id=inst.run_id, workflow=inst.workflow_name
            )
            return Outcome(inst.run_id, RunStatus.CANCELLED, exception=cancelled["exception"])
        data: dict[str, Any] = error_fields(error)
        if imposed:
            data["imposed"] = True
        self._emit(inst, EventType.WORKFLOW_FAILED, data)
        await self._commit(
            inst,
            status=RunStatus.FAILED,
            error=data["error"],
            completed=True,
            timer=None,
            lease=None,
            notices=self._ending_notices(inst, RunStatus.FAILED, data),
        )
        lifecycle(
            "run {} failed: {}",
            inst.run_id,
            data["error"],
            run_id=inst.run_id,
            workflow=inst.workflow_name,
        )
        return Outcome(
            inst.run_id, RunStatus.FAILED, exception=data["exception"], error=data["error"]
        )

    def _ending_notices(
        self, inst: WorkflowInstance, status: RunStatus, data: dict[str, Any]
    ) -> list[Notice]:
        run = inst.run
        children = open_children(inst)
        if not children and run.parent_run_id is None:
            return []  # the common case: a root run with no children left running
        # A parent holding on for this child here (``_child_here``) is leased: no timer.
        held = self._holding_for_child.get(run.parent_run_id or "")
        wake = held is None or held.child_id != run.run_id
        return ending_notices(run, status, data, children, self.clock.now(), wake_parent=wake)

    async def _continue_as_new(self, act: _Activation) -> Outcome:
        """The code called ``continue_as_new``: end the run and create the next one of its
        chain in one write (a crash leaves either both or neither)."""
        inst = act.inst
        for task in act.running.values():
            task.cancel()
        act.running.clear()
        assert inst.continuation is not None
        next_id = self.ids.new_run_id()
        now = self.clock.now()
        following, started = continued_run(inst, next_id, now, self.options)
        args_json, kwargs_json = inst.continuation
        # The arguments are stored once, in the next run's workflow.started: mentioned here.
        data = {
            "continued_to_run_id": next_id,
            **mention("args", args_json),
            **mention("kwargs", kwargs_json),
        }
        self._emit(inst, EventType.WORKFLOW_CONTINUED_AS_NEW, data)
        # Its children do not carry over: they are cancelled like those of any run that ends.
        # A parent, on the other hand, knows the chain by its first run and hears from its end.
        reason = f"parent run {inst.run_id} ended ({RunStatus.CONTINUED_AS_NEW.value})"
        notices = [cancel_notice(child, reason, now) for child in open_children(inst)]
        if inst.cancel_requested:
            # Continued inside shield() with a request pending: the request goes on with the
            # chain (the next run's first durable call raises it), it is not dropped.
            notices.append(cancel_notice(next_id, inst.cancel_reason, now))
        await self._commit(
            inst,
            status=RunStatus.CONTINUED_AS_NEW,
            completed=True,
            timer=None,
            lease=None,
            notices=notices,
            continued=(next_id, (following, [started])),
        )
        return Outcome(inst.run_id, RunStatus.CONTINUED_AS_NEW)


def _first_to_end(act: _Activation) -> int:
    """The position of the finished inline attempt that ended first (the first issued among
    those that ended together); the first finished by position when one raised, as before."""
    finished = [(p, task) for p, task in act.running.items() if task.done()]
    if any(task.cancelled() or task.exception() is not None for _, task in finished):
        return min(p for p, _ in finished)
    ends = [(task.result()[-1].timestamp, p) for p, task in finished]
    if any(end is None for end, _ in ends):
        return min(p for _, p in ends)
    return min(ends)[1]


def _inputs_from_log(run: WorkflowRun, events: list[Event]) -> WorkflowRun:
    """``run`` with the arguments its ``workflow.started`` event recorded: the log is the one
    source of truth, and a run row whose copy differs (edited in the database) is reported and
    ignored."""
    if not events or events[0].type is not EventType.WORKFLOW_STARTED:
        return run
    data = events[0].data
    args, kwargs = data.get("args", run.input_args), data.get("kwargs", run.input_kwargs)
    if (args, kwargs) == (run.input_args, run.input_kwargs):
        return run
    if run.input_args == IN_LOG and run.input_kwargs == IN_LOG:  # (stored once: in the log)
        return run.copy(input_args=args, input_kwargs=kwargs)
    logger.warning(
        "run {}: the arguments in its run record differ from those its workflow.started event"
        " recorded; the event's are used (was the record edited?)",
        run.run_id,
    )
    return run.copy(input_args=args, input_kwargs=kwargs)


__all__ = [
    "HANDED_BACK",
    "RECOVERED",
    "STARTING",
    "STEP_EXECUTORS",
    "Engine",
    "EngineOptions",
    "Outcome",
    "StepInvoker",
    "invoke_body",
]
