"""The mutants of the bug zoo: each brings back one real failure class of a durable engine.

A mutant is a small patch applied with pytest's ``monkeypatch`` for one test, so the library is
untouched. Its docstring names the bug; ``scenario`` names the scenario (``scenarios.py``) that
makes the bug likely to show. Patches go through the names the code looks up at run time (a
module attribute, a method, an entry of a dispatch table), never by editing source.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cronsim import CronSim

from pyworkflow.engine import activation, attempts, hooks, instance, schedules
from pyworkflow.engine.activation import Engine, _Activation
from pyworkflow.engine.children import ending_notices
from pyworkflow.engine.instance import WorkflowInstance
from pyworkflow.engine.outcome import Outcome
from pyworkflow.model import events as events_module
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    DuplicateCompletionError,
    RunFinishedError,
    SequenceConflictError,
    WorkflowAlreadyRunningError,
)
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec
from pyworkflow.model.schemas import UNSET, Commit, RunStatus
from pyworkflow.serialization import codec, serialize_args
from pyworkflow.storage import base, memory
from pyworkflow.utils import slots
from pyworkflow_testing.world import SimBroker, World

Patch = Callable[[pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Mutant:
    name: str
    scenario: str
    patch: Patch

    @property
    def bug(self) -> str:
        return (self.patch.__doc__ or "").strip().splitlines()[0]


MUTANTS: dict[str, Mutant] = {}


def mutant(scenario: str) -> Callable[[Patch], Patch]:
    def register(patch: Patch) -> Patch:
        MUTANTS[patch.__name__] = Mutant(patch.__name__, scenario, patch)
        return patch

    return register


# -- storage --------------------------------------------------------------------------------------


@mutant("fanout_dispatched")
def completion_recorded_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage no longer rejects a second event with a recorded completion key.

    Duplicate deliveries of a dispatched step run it on two workers at once; both record it.
    """

    def keys_unchecked(run_id: str, events: list[Event], recorded: set[str]) -> list[str]:
        del run_id, recorded
        return [key for key in (event.completion_key for event in events) if key is not None]

    monkeypatch.setattr(memory, "_new_completion_keys", keys_unchecked)


@mutant("race_dispatched")
def two_appends_same_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage appends whatever the log head: the conditional commit is gone.

    Two activations of one run that saw the same head both append; the loser never replays.
    """

    def number_unconditionally(commit: Commit, head: int, now: datetime) -> list[Event]:
        commit.expected_sequence = None
        return base.number_events(commit, head, now)

    monkeypatch.setattr(memory, "number_events", number_unconditionally)


@mutant("order")
def hook_received_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage no longer enforces one payload per hook: no pending check on receipt, and a
    ``hook.received`` is not a completion it keeps unique.

    Left is the engine's read-then-write check, which two concurrent receipts of one payload (a
    webhook delivered twice) both pass.
    """

    def anything_goes(run_id: str, hook_id: str, status: Any) -> None:
        del run_id, hook_id, status

    keys_checked = memory._new_completion_keys

    def receipts_not_keyed(run_id: str, events: list[Event], recorded: set[str]) -> list[str]:
        others = [event for event in events if event.type is not EventType.HOOK_RECEIVED]
        return keys_checked(run_id, others, recorded)

    monkeypatch.setattr(memory, "check_hook_pending", anything_goes)
    monkeypatch.setattr(memory, "_new_completion_keys", receipts_not_keyed)


# -- timers ---------------------------------------------------------------------------------------


@mutant("stamps")
def timer_fired_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's due checks run five minutes fast: a sleep completes before its resume_at."""
    take_action = Engine._take_action

    async def fast_clock(self: Engine, act: _Activation, now: datetime) -> bool:
        return await take_action(self, act, now + timedelta(minutes=5))

    monkeypatch.setattr(Engine, "_take_action", fast_clock)


@mutant("order")
def timer_fired_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replayed instance forgets that a completed sleep is done, and fires it again.

    The sleep's future resolves (the workflow moves on) but its command stays open and due.
    """
    resolve_sleep = WorkflowInstance._resolve_sleep

    def resolve_and_forget(self: WorkflowInstance, cmd: instance.Command, event: Event) -> None:
        resolve_sleep(self, cmd, event)
        if self._replay is not None:  # only while feeding the log in
            cmd.done = False
            self.open[cmd.position] = cmd

    monkeypatch.setitem(instance._RESOLVERS, EventType.SLEEP_COMPLETED, resolve_and_forget)


@mutant("order")
def retry_before_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed step's next attempt starts at once instead of after its retry delay."""

    def next_attempt(cmd: instance.Command, now: datetime) -> int | None:
        del now  # the bug: cmd.wake_at, the retry time, is never compared with it
        if cmd.attempt == 0:
            return 1
        if cmd.retry_pending:
            return cmd.attempt + 1
        if cmd.lost_attempt:
            return cmd.attempt
        return None

    monkeypatch.setattr(activation, "next_attempt", next_attempt)


@mutant("order")
def timer_claimed_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage hands out timers due within the next minute: the run is woken before its sleep is
    due, finds nothing to do, and the claim then keeps the timer from firing when it is due."""
    claim = memory.MemoryStore.claim_due_timers

    def early(self: memory.MemoryStore, now: datetime, limit: int, claim_for: timedelta) -> Any:
        return claim(self, now + timedelta(minutes=1), limit, claim_for)

    monkeypatch.setattr(memory.MemoryStore, "claim_due_timers", early)


@mutant("order")
def sleep_resume_at_rounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sleep's ``resume_at`` is rounded down to a whole second: the log agrees with itself
    (nothing completes before its recorded ``resume_at``), but the run sleeps less than asked."""
    resolve = instance.resolve_wake_time

    def rounded(duration: Any, now: datetime) -> datetime:
        return resolve(duration, now).replace(microsecond=0)

    monkeypatch.setattr(instance, "resolve_wake_time", rounded)


@mutant("order")
def retry_delay_in_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry delay is read in the wrong unit (milliseconds for seconds): the next attempt is
    due a thousand times too soon, and the log, recording that due time, agrees with itself."""
    failure_events = Engine._failure_events

    def too_soon(self: Engine, *args: Any) -> list[Event]:
        events = failure_events(self, *args)
        for event in events:
            if event.type is EventType.STEP_RETRYING and event.timestamp is not None:
                delay = datetime.fromisoformat(event.data["resume_at"]) - event.timestamp
                event.data["resume_at"] = (event.timestamp + delay / 1000).isoformat()
        return events

    monkeypatch.setattr(Engine, "_failure_events", too_soon)


# -- delivery ------------------------------------------------------------------------------------


@mutant("order_dispatched")
def ack_before_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers ack a message when they take it: a worker that dies mid-delivery loses it."""
    crash = World._crash

    def crash_and_lose(self: World, index: int, message: Any) -> None:
        del message  # acked already: the broker will not bring it back
        crash(self, index, None)

    monkeypatch.setattr(World, "_crash", crash_and_lose)


_completion_writer: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "zoo_completion_writer", default=False
)


def _as_completion_writer(method: Callable[..., Any]) -> Callable[..., Any]:
    async def writing(*args: Any, **kwargs: Any) -> Any:
        token = _completion_writer.set(True)
        try:
            return await method(*args, **kwargs)
        finally:
            _completion_writer.reset(token)

    return writing


def _completions_set_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hook receipts and step workers commit without ``timer=now``."""

    def commit_without_timer(*args: Any, **kwargs: Any) -> Commit:
        if _completion_writer.get():
            kwargs["timer"] = UNSET
        return Commit(*args, **kwargs)

    # The completion writers: hook receipts (engine.hooks) and step workers (engine.attempts).
    monkeypatch.setattr(hooks, "Commit", commit_without_timer)
    monkeypatch.setattr(attempts, "Commit", commit_without_timer)
    monkeypatch.setattr(Engine, "receive_hook", _as_completion_writer(Engine.receive_hook))
    monkeypatch.setattr(Engine, "execute_step", _as_completion_writer(Engine.execute_step))


@mutant("order")
def enqueue_lost_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Completion writers set no wake-up timer, and the broker loses their enqueue.

    Only the enqueue after a committed hook payload or step result was waking the run.
    """
    _completions_set_no_timer(monkeypatch)
    enqueue = SimBroker.enqueue_activation

    async def lossy(self: SimBroker, run_id: str) -> None:
        if not _completion_writer.get():
            await enqueue(self, run_id)

    monkeypatch.setattr(SimBroker, "enqueue_activation", lossy)


@mutant("order_inline")
def completion_timer_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Completion writers set no wake-up timer (the engine half of enqueue_lost_after_commit)."""
    _completions_set_no_timer(monkeypatch)


# -- concurrency ---------------------------------------------------------------------------------


class _NoLock:
    """An ``asyncio.Lock`` look-alike that lets everyone in."""

    _waiters = None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None

    def locked(self) -> bool:
        return False


class _NoLocks(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        del key, default
        return _NoLock()


@mutant("fanout_dispatched")
def leases_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two activations of one run at once: no per-run lock, and commits are unconditional."""
    init = Engine.__init__

    def init_without_locks(self: Engine, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._locks = _NoLocks()

    def unconditional(*args: Any, **kwargs: Any) -> Commit:
        kwargs["expected_sequence"] = None
        return Commit(*args, **kwargs)

    monkeypatch.setattr(Engine, "__init__", init_without_locks)
    monkeypatch.setattr(activation, "Commit", unconditional)


@mutant("race_dispatched")
def cache_not_invalidated(monkeypatch: pytest.MonkeyPatch) -> None:
    """An activation that lost a commit race keeps its cached instance (and its lost events)."""

    async def activate(self: Engine, run_id: str, new_run: Any, carried: Any) -> Outcome:
        loaded = await self._load(run_id, new_run)
        if isinstance(loaded, Outcome):
            return loaded
        act = _Activation(loaded, carried=carried)
        try:
            outcome = await self._drive(act)
        except SequenceConflictError:
            for task in act.running.values():
                task.cancel()
            self._cache_put(loaded)  # the bug: it still believes in its lost commit
            raise
        except BaseException:
            for task in act.running.values():
                task.cancel()
            loaded.teardown()
            raise
        if outcome.status.is_terminal:
            loaded.teardown()
            self._notify_finished(outcome)
        else:
            self._cache_put(loaded)
        return outcome

    monkeypatch.setattr(Engine, "_activate", activate)


@mutant("stamps_inline")
def inline_result_not_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An inline step's result waits for the activation's last commit, past the next side effect.

    A crash during the next step loses the first one's result: it runs again, out of order.
    """
    commit = Engine._commit

    async def defer_plain_commits(self: Engine, inst: WorkflowInstance, **kwargs: Any) -> None:
        if not kwargs:
            return  # the commits "before the next side effect" carry no run-row change
        await commit(self, inst, **kwargs)

    monkeypatch.setattr(Engine, "_commit", defer_plain_commits)


# -- duplicate side effects ----------------------------------------------------------------------


@mutant("long_inline")
def lease_not_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage lets any activation's commit take a run's lease: only the sequence is checked.

    A retry timer fires again while the activation it woke runs a long step (its claim ran out);
    a second worker's event-less commit takes the run and runs the step again, with no fault.
    """
    check_lease = base.check_lease

    def anyone_may_take(commit: Commit, *args: Any) -> None:
        check_lease(replace(commit, owner=None), *args)

    monkeypatch.setattr(memory, "check_lease", anyone_may_take)


@mutant("stamps")
def step_result_from_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step results are memoised per (step, arguments) in the process: a repeated call is served
    its first result, recorded as completed, without running the body."""
    run_attempt = Engine.run_attempt
    cache: dict[str, Event] = {}

    async def cached(
        self: Engine, run_id: str, command_id: str, definition: Any, *rest: Any
    ) -> Event:
        args, kwargs = rest[0], rest[1]
        key = repr((run_id, definition.name, serialize_args(args, kwargs)))
        hit = cache.get(key)
        if hit is not None and hit.type is EventType.STEP_COMPLETED:
            data = {**hit.data, "command_id": command_id, "attempt": rest[2]}
            return Event(run_id=run_id, type=hit.type, data=data, timestamp=self.clock.now())
        event = await run_attempt(self, run_id, command_id, definition, *rest)
        cache[key] = event
        return event

    monkeypatch.setattr(Engine, "run_attempt", cached)


# -- replay --------------------------------------------------------------------------------------


@mutant("fanout_dispatched")
def retry_counter_reset_on_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold-loaded instance ignores the attempt numbers of replayed step.started/retrying.

    The attempt count restarts at the first recorded attempt after every cold load.
    """
    feed, apply = WorkflowInstance.feed, WorkflowInstance.apply
    cold: set[int] = set()

    def feed_marking_cold(self: WorkflowInstance, events: list[Event]) -> None:
        if self.sequence == 0:
            cold.add(id(self))
        try:
            feed(self, events)
        finally:
            cold.discard(id(self))

    def apply_forgetting_attempts(self: WorkflowInstance, event: Event) -> None:
        kinds = (EventType.STEP_STARTED, EventType.STEP_RETRYING)
        if id(self) not in cold or event.type not in kinds:
            apply(self, event)
            return
        position = int(event.data["command_id"].rpartition(":")[2])
        cmd = self.commands[position - 1] if position <= len(self.commands) else None
        before = cmd.attempt if cmd is not None else 0
        apply(self, event)
        if cmd is not None and before:
            cmd.attempt = before

    monkeypatch.setattr(WorkflowInstance, "feed", feed_marking_cold)
    monkeypatch.setattr(WorkflowInstance, "apply", apply_forgetting_attempts)


@mutant("stamps")
def step_results_by_argument_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step calls are identified by a hash of their arguments instead of their call position.

    A second call of a step with the same arguments gets the first call's result, unrun.
    """
    call_step = WorkflowInstance.call_step
    calls: weakref.WeakKeyDictionary[WorkflowInstance, dict[str, Any]] = weakref.WeakKeyDictionary()

    def call_by_hash(
        self: WorkflowInstance, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        digest = hashlib.sha256(repr((definition.name, serialize_args(args, kwargs))).encode())
        by_hash = calls.setdefault(self, {})
        key = digest.hexdigest()
        if key not in by_hash:
            by_hash[key] = call_step(self, definition, args, kwargs)
        return by_hash[key]

    monkeypatch.setattr(WorkflowInstance, "call_step", call_by_hash)


# -- determinism ---------------------------------------------------------------------------------


@mutant("stamps")
def run_ids_bypass_id_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine names new runs with ``uuid4()`` instead of its ``IdSource`` port."""
    start_run = Engine.start_run

    async def start_with_uuid(self: Engine, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("run_id", None)
        kwargs["run_id"] = kwargs["run_id"] or f"run_{uuid.uuid4().hex[:16]}"
        return await start_run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "start_run", start_with_uuid)


# -- hooks announced, results matched, budgets ---------------------------------------------------


@mutant("onboard")
def on_created_after_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_created`` is called after the commit that suspends the run, as one more thing to
    publish: a crash between the two loses the call, and nothing ever makes it again."""

    def never_hold(self: Engine, *args: Any) -> bool:
        del self, args
        return False

    publish = Engine._publish

    async def publish_and_announce(
        self: Engine, inst: WorkflowInstance, events: list[Event]
    ) -> None:
        await publish(self, inst, events)
        if any(event.type is EventType.HOOK_CREATED for event in events):
            await self._announce(inst)

    monkeypatch.setattr(Engine, "_lets_go_unannounced", never_hold)
    monkeypatch.setattr(Engine, "_publish", publish_and_announce)


@mutant("twins")
def step_result_matched_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's outcome goes to the first open call of that step, not to the call at the
    position its command id names: parallel identical calls get each other's results."""
    issued = WorkflowInstance._issued

    def by_name(self: WorkflowInstance, event: Event) -> instance.Command:
        cmd = issued(self, event)
        if cmd.kind != "step" or event.type is EventType.STEP_RETRYING:
            return cmd
        for other in self.open.values():  # in issue order
            if other.kind == "step" and other.name == cmd.name and not other.done:
                return other
        return cmd

    monkeypatch.setattr(WorkflowInstance, "_issued", by_name)


@mutant("checkout")
def exception_args_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The codec stores an exception without its arguments: every step error comes back as a
    ``RemoteError``, with and without faults alike, so only a model without the engine sees it."""
    encode = codec._encode_exception

    def without_args(exc: BaseException) -> dict[str, Any]:
        encoded = encode(exc)
        encoded.pop("args", None)
        return encoded

    monkeypatch.setattr(codec, "_encode_exception", without_args)


@mutant("shielded")
def shield_forgets_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving a ``shield()`` drops a cancellation request that arrived inside it: the run
    carries on as if nobody had asked it to stop."""
    exit_shield = WorkflowInstance.exit_shield

    def forgetful(self: WorkflowInstance) -> None:
        exit_shield(self)
        if self.shield_depth == 0:
            self.cancel_requested = False

    monkeypatch.setattr(WorkflowInstance, "exit_shield", forgetful)


# -- interleaving --------------------------------------------------------------------------------


@mutant("onboard")
def idempotency_check_then_create(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine looks the idempotency key up, then creates the run; storage no longer refuses
    a second run with a key it holds. Atomic only while nothing runs between the two calls:
    two starts with one key at once (a client retrying its request) make two runs."""
    start_run = Engine.start_run

    async def check_then_create(
        self: Engine, definition: Any, args: Any, kwargs: Any, **options: Any
    ) -> Any:
        key = options.get("idempotency_key")
        if key is not None:
            existing = await self.storage.get_run_by_idempotency_key(key)
            if existing is not None:
                return existing, False
        return await start_run(self, definition, args, kwargs, **options)

    create_run = memory.MemoryStore.create_run

    def key_not_checked(self: memory.MemoryStore, run: Any, events: Any, now: datetime) -> Any:
        key = run.idempotency_key
        self._idempotency.pop(key, None)  # the bug: the last run created takes the key
        return create_run(self, run, events, now)

    monkeypatch.setattr(Engine, "start_run", check_then_create)
    monkeypatch.setattr(memory.MemoryStore, "create_run", key_not_checked)


# -- runs that manage runs ----------------------------------------------------------------------


@mutant("family")
def child_outcome_told_after_the_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's ending reaches its parent (and its children's cancellations reach them) in a
    second write after its terminal one: a crash or a storage error between the two loses it,
    and the parent waits for ever."""
    commit = Engine._commit

    async def tell_afterwards(self: Engine, inst: Any, **changes: Any) -> None:
        notices = changes.pop("notices", None) or []
        await commit(self, inst, **changes)
        for notice in notices:
            event = notice.event.copy_for(notice.run_id)
            told = Commit(notice.run_id, [event], now=self.clock.now(), timer=notice.wake_at)
            try:
                await self.storage.commit(told)
            except (RunFinishedError, DuplicateCompletionError):
                continue
            await self.queue.enqueue_activation(notice.run_id)

    monkeypatch.setattr(Engine, "_commit", tell_afterwards)


@mutant("family")
def child_outcome_delivered_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished child tells its parent again whenever a message activates it (a duplicate
    delivery), and storage no longer keeps a child's ending unique in its parent's log."""
    outcome_of = Engine._outcome_of
    key_of = events_module.completion_key

    def child_endings_unkeyed(event_type: EventType, data: dict[str, Any]) -> str | None:
        if event_type.value.startswith("child_workflow."):
            return None
        return key_of(event_type, data)

    async def tell_again(self: Engine, run: Any) -> Outcome:
        if run.parent_run_id is not None and run.status.is_terminal:
            data = {"result": run.result, "error": run.error}
            for notice in ending_notices(run, run.status, data, [], self.clock.now()):
                event = notice.event.copy_for(notice.run_id)
                with contextlib.suppress(RunFinishedError):
                    await self.storage.commit(Commit(notice.run_id, [event], now=self.clock.now()))
        return await outcome_of(self, run)

    monkeypatch.setattr(events_module, "completion_key", child_endings_unkeyed)
    monkeypatch.setattr(Engine, "_outcome_of", tell_again)


@mutant("family")
def child_id_from_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child's id is a hash of its workflow and arguments, not its parent's command: the same
    call made twice names one child, and the second start collides with the first."""
    start_child = WorkflowInstance.start_child

    def by_arguments(
        self: WorkflowInstance, definition: Any, args: Any, kwargs: Any, *, wait: bool
    ) -> Any:
        future, child_id = start_child(self, definition, args, kwargs, wait=wait)
        cmd = self.children.pop(child_id, None)
        if cmd is None:
            return future, child_id
        digest = hashlib.sha1(repr((definition.name, args, kwargs)).encode()).hexdigest()[:10]
        hashed = f"{self.run_id}.{digest}"
        cmd.child_run_id = hashed
        self.children[hashed] = cmd
        for event in self.buffer:
            if event.data.get("command_id") == cmd.command_id:
                event.data["child_run_id"] = hashed
        return future, hashed

    monkeypatch.setattr(WorkflowInstance, "start_child", by_arguments)


@mutant("family")
def parent_end_leaves_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that ends tells its parent but no longer cancels its own unfinished children: they
    outlive it (a child waiting on a hook nobody answers waits for ever)."""
    ending = Engine._ending_notices

    def parent_only(self: Engine, inst: Any, status: Any, data: dict[str, Any]) -> Any:
        return [
            notice
            for notice in ending(self, inst, status, data)
            if notice.event.type is not EventType.CANCELLATION_REQUESTED
        ]

    monkeypatch.setattr(Engine, "_ending_notices", parent_only)


@mutant("family")
def child_created_after_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent records ``child_workflow.started``, then creates the child in a second write:
    a crash or a storage error between the two leaves a recorded child that does not exist."""
    child_runs = activation.child_runs
    publish = Engine._publish
    deferred: list[tuple[Any, list[Event]]] = []

    def record_only(inst: Any, events: list[Event], options: Any, now: datetime) -> Any:
        created, notices = child_runs(inst, events, options, now)
        deferred.extend(created)
        return [], notices

    async def create_afterwards(self: Engine, inst: Any, events: list[Event]) -> None:
        await publish(self, inst, events)
        while deferred:
            run, first = deferred.pop(0)
            with contextlib.suppress(WorkflowAlreadyRunningError):
                await self.storage.create_run(run, first)
            await self.queue.enqueue_activation(run.run_id)

    monkeypatch.setattr(activation, "child_runs", record_only)
    monkeypatch.setattr(Engine, "_publish", create_afterwards)


@mutant("chain")
def chain_link_before_the_new_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``continue_as_new`` writes the old run's end and its link first, then creates the next
    run in a second write: a crash or a storage error between the two leaves a chain without
    its next run."""
    deferred: list[tuple[Any, list[Event]]] = []

    def link_only(*args: Any, **fields: Any) -> Commit:
        if fields.get("continued_to_run_id"):
            deferred.extend(fields.get("runs_created") or [])
            fields["runs_created"] = []
        return Commit(*args, **fields)

    continue_as_new = Engine._continue_as_new

    async def then_create(self: Engine, act: _Activation) -> Outcome:
        outcome = await continue_as_new(self, act)
        while deferred:
            run, first = deferred.pop(0)
            await self.storage.create_run(run, first)
            await self.queue.enqueue_activation(run.run_id)
        return outcome

    monkeypatch.setattr(activation, "Commit", link_only)
    monkeypatch.setattr(Engine, "_continue_as_new", then_create)


# -- schedules ------------------------------------------------------------------------------------


@mutant("schedules")
def schedule_written_without_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schedule's slot is claimed by a plain write, not a compare-and-set on its revision: a
    scheduler that stalled holding an old read writes it back over what happened since, and the
    slots it rolled back fire (or count) again."""

    def unconditional(
        self: memory.MemoryStore, schedule: Schedule, expected_revision: int
    ) -> Schedule | None:
        found = self._schedules.get(schedule.schedule_id)
        if found is None:
            return None
        stored = schedule.copy()
        stored.revision = max(found[0].revision, expected_revision) + 1
        self._put_schedule(stored, stored.poll_at)
        return stored.copy()

    monkeypatch.setattr(memory.MemoryStore, "update_schedule", unconditional)


@mutant("schedules")
def cron_slots_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cron slots are computed in UTC instead of the schedule's time zone: a 09:00 Prague job
    runs at 10:00 or 11:00 local time."""

    def in_utc(expression: str, spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
        del spec
        for moment in CronSim(expression, after.astimezone(UTC)):
            yield moment.astimezone(UTC)

    monkeypatch.setattr(slots, "_cron_after", in_utc)


@mutant("schedules")
def due_slots_by_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a slot is due is decided by the wall clock rather than the engine's clock: on
    any clock but the machine's (the simulator's, a test's) slots come due at the wrong time or
    never."""
    due_slots = schedules.due_slots

    def by_wall_clock(schedule: Schedule, now: datetime) -> tuple[list[datetime], int]:
        del now
        return due_slots(schedule, datetime.now(UTC))

    monkeypatch.setattr(schedules, "due_slots", by_wall_clock)


@mutant("schedules")
def skipped_slot_still_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``skip`` overlap policy counts a slot as skipped but starts its run all the same."""
    plan = schedules.plan

    def skip_and_start(
        schedule: Schedule, now: datetime, statuses: dict[str, RunStatus | None]
    ) -> schedules.Plan:
        if schedule.overlap_policy is not OverlapPolicy.SKIP:
            return plan(schedule, now, statuses)
        skipping = plan(schedule, now, statuses)
        allowing = plan(replace_policy(schedule, OverlapPolicy.ALLOW_ALL), now, statuses)
        allowing.schedule.overlap_policy = OverlapPolicy.SKIP
        allowing.schedule.skipped_runs = skipping.schedule.skipped_runs
        return allowing

    monkeypatch.setattr(schedules, "plan", skip_and_start)


@mutant("schedules")
def failed_runs_counted_as_successful(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduled run that ended failed (or cancelled) is counted in ``successful_runs``."""
    settle = schedules.settle

    def all_successful(schedule: Schedule, statuses: dict[str, RunStatus | None]) -> bool:
        ended = {
            run_id: RunStatus.COMPLETED if status is not None and status.is_terminal else status
            for run_id, status in statuses.items()
        }
        return settle(schedule, ended)

    monkeypatch.setattr(schedules, "settle", all_successful)


@mutant("schedules")
def decided_run_left_uncreated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run decided on but not created (its scheduler died between the two writes) waits for
    the schedule's next slot instead of being created at the next poll."""
    poll_time = schedules.poll_time

    def ignoring_starting(schedule: Schedule, now: datetime) -> datetime | None:
        starting, schedule.starting = schedule.starting, {}
        try:
            return poll_time(schedule, now)
        finally:
            schedule.starting = starting

    monkeypatch.setattr(schedules, "poll_time", ignoring_starting)


@mutant("schedules")
def cancel_other_never_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cancel_other`` starts the new run but its request to stop the running one is lost
    (made before the decision was written, by a scheduler that then died, say)."""

    async def forget(self: Engine, schedule: Schedule, run_id: str) -> None:
        del self, schedule, run_id

    monkeypatch.setattr(Engine, "_cancel_for", forget)


def replace_policy(schedule: Schedule, policy: OverlapPolicy) -> Schedule:
    changed = schedule.copy()
    changed.overlap_policy = policy
    return changed


@mutant("family")
def child_ending_sets_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child's ending is appended to its parent's log without setting the parent's timer, as
    if every parent held on for its child in its own activation (``Engine._child_here``): when
    the message that wakes the parent is lost, nothing ever wakes it."""

    def without_timer(*args: Any, **kwargs: Any) -> Any:
        kwargs["wake_parent"] = False
        return ending_notices(*args, **kwargs)

    monkeypatch.setattr(activation, "ending_notices", without_timer)
