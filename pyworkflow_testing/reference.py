"""A reference model of a workflow: its function run as plain asyncio code, with no engine at all.

The simulator's other oracles compare a faulty run of the engine with a fault-free run of the same
engine, so an engine bug that is wrong the same way with and without faults passes them.
``run_reference`` instead runs the workflow function on a private ``VirtualTimeEventLoop`` (on a
thread of its own) behind a ``WorkflowContext`` of this module, and reports what a correct engine
would record: the outcome, every step attempt and every timer, on virtual time from
``started_at``. The caller runs step bodies (``invoke_step``, mocks included) and answers hooks
(``hook_answer``).

Commands are numbered as the engine numbers them: 1, 2, ... in call order across steps, durable
sleeps, hooks and the loop timers of workflow code (``asyncio.sleep``, ``call_later``, timeouts),
so positions match the engine's command ids (``step:<name>:<pos>``, ``sleep:<pos>``,
``timer:<pos>``, ``hook:<name>:<pos>``). Arguments, results and payloads are round-tripped through
``pyworkflow.serialization`` where the engine records them (JSON is JSON). A step's error is
rebuilt the way the engine's contract says it is delivered (``as_delivered``), without the codec's
exception code: a codec that loses an error's type or arguments loses it in every run alike, and
only a model that does not share that code sees it.

This module must never import the engine (``pyworkflow.engine.*``) or storage: a reference that
shared the engine's code would share its bugs. It never reads the wall clock and never does I/O.
Step bodies must be async and must not wait on threads (the virtual loop cannot wait for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import math
import os
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from pyworkflow.context import (
    StepContext,
    StepInfo,
    current_workflow,
    set_current_workflow,
    step_scope,
)
from pyworkflow.core.registry import StepDefinition, WorkflowDefinition
from pyworkflow.model.exceptions import (
    HookExpiredError,
    SerializationError,
    StepTimeoutError,
    WorkflowError,
    WorkflowTimeoutError,
)
from pyworkflow.primitives.hooks import call_on_created
from pyworkflow.serialization import (
    RemoteError,
    deserialize_args,
    dumps,
    error_type_name,
    loads,
    serialize_args,
)
from pyworkflow.utils.duration import parse_duration, resolve_wake_time
from pyworkflow_testing.fate import WorkerCrash
from pyworkflow_testing.identity import count_read, count_use
from pyworkflow_testing.loop import SimulationDeadlock, VirtualTimeEventLoop

MAX_LOST_WORKERS = 100  # a body that always takes its worker down (``world.lose_worker``)
MAX_LOOP_ITERATIONS = 1_000_000  # a step body spinning on asyncio.sleep(0) must not hang us
_WAITS_FOREVER = "nothing can run and nothing is scheduled: it waits for what nobody will bring"
_MICROSECOND = timedelta(microseconds=1)

StepInvoker = Callable[[StepDefinition, tuple[Any, ...], dict[str, Any], StepInfo], Awaitable[Any]]
# A hook's answer: when its payload arrives (an instant, or how long after the hook was made)
# and the payload; None when nobody answers it.
HookAnswer = Callable[[int, str], tuple[datetime | timedelta, Any] | None]


@dataclass
class StepStart:
    """One attempt of a step command, and the virtual time it began."""

    position: int
    step_name: str
    attempt: int
    at: datetime


@dataclass
class ReferenceOutcome:
    """What the workflow should do. For ``blocked``, ``error_message`` says why it is blocked."""

    status: str  # "completed" | "failed" | "blocked"
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    step_starts: list[StepStart] = field(default_factory=list)
    sleeps: list[tuple[int, datetime, datetime]] = field(default_factory=list)
    # What the code asked for, as the engine records it: the duration of every sleep and timer
    # (``(command id, 0)``), hook timeout (``(command id, 0)``) and retry delay (``(command id,
    # failed attempt)``), and the instant it resolves to.
    asked: dict[tuple[str, int], tuple[timedelta, datetime]] = field(default_factory=dict)
    ended_at: datetime | None = None
    # A step started or asked about another run (a child): the model follows no other run, so it
    # is no yardstick for this one.
    other_runs: bool = False


class _ReferenceLoop(VirtualTimeEventLoop):
    """The private loop. Loop timers set by workflow code are commands; runs are bounded.

    Invariant: a timer is numbered iff it is set while the current workflow is ``workflow``
    (workflow code and the tasks it starts); this module's own waits use ``call_at_untracked``.
    """

    def __init__(self, max_seconds: float, max_iterations: int) -> None:
        super().__init__()
        self.workflow: _ReferenceWorkflow | None = None
        self.max_seconds = max_seconds
        self.iterations_left = max_iterations
        self.halted: str | None = None  # why the run was cut short, if it was
        # Every task made on this loop: ``asyncio.all_tasks(loop)`` walks every task of the
        # process (a simulation's too), a fifth of the reference model's time in a big check.
        self.tasks: list[asyncio.Task[Any]] = []

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        task = super().create_task(coro, name=name, context=context)
        self.tasks.append(task)
        return task

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        owner = self.workflow
        if owner is not None and owner.is_current():
            owner.note_timer(when)
        return super().call_at(when, callback, *args, context=context)

    def call_at_untracked(self, when: float, callback: Callable[..., Any], *args: Any) -> None:
        super().call_at(when, callback, *args)

    def _run_once(self) -> None:
        self.iterations_left -= 1
        super()._run_once()
        if self.iterations_left < 0:
            self.halted = "the run took more than its budget of event loop iterations"
        elif self.time() > self.max_seconds:
            self.halted = "the run went on past max_time"
        if self.halted is not None:
            self.stop()


def _settle(
    future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _received_payload(payload: Any, schema: Any) -> Any:
    """The payload as the workflow gets it: validated and serialized at receipt, then decoded."""
    if schema is not None:
        model = payload if isinstance(payload, schema) else schema.model_validate(payload)
        payload = model.model_dump(mode="json")
    decoded = loads(dumps(payload, what="a hook payload"))
    if schema is not None and not isinstance(decoded, schema):
        decoded = schema.model_validate(decoded)
    return decoded


class _ReferenceRuns:
    """The ``RunAccess`` steps get in the model: a child started from a step gets the id the
    engine would give it (so the step returns what it would), and the outcome is marked as one
    the model cannot vouch for; anything that reads another run is not modelled."""

    def __init__(self) -> None:
        self.touched = False
        self.counts: dict[tuple[str, str, int], int] = {}

    async def start_child(
        self,
        parent: Any,
        definition: Any,  # noqa: ARG002
        args: tuple[Any, ...],  # noqa: ARG002
        kwargs: dict[str, Any],  # noqa: ARG002
    ) -> tuple[str, str]:
        self.touched = True
        key = (parent.run_id, parent.step_id, parent.attempt)
        count = self.counts[key] = self.counts.get(key, 0) + 1
        return f"{parent.run_id}.{parent.step_id.replace(':', '-')}.{count}", parent.run_id

    async def run_status(self, run_id: str) -> str:  # noqa: ARG002
        self.touched = True
        raise _NotModelled("other runs")

    async def run_result(self, run_id: str, timeout: float | None) -> Any:  # noqa: ARG002
        self.touched = True
        raise _NotModelled("other runs")

    async def cancel_run(self, run_id: str, reason: str | None) -> bool:  # noqa: ARG002
        self.touched = True
        raise _NotModelled("other runs")

    def cancel_requested(self, run_id: str) -> bool:  # noqa: ARG002
        return False  # nobody cancels the model


class _NotModelled(BaseException):  # noqa: N818 - a signal that ends a model run, not an error
    """The model reached a call it does not model (a child, a continuation): its run ends
    there, unseen by workflow code's ``except Exception``."""


class _ReferenceCheckpoints:
    """The model's step checkpoints (``save_step_checkpoint``), kept for its run as storage keeps
    a run's: a retry or a lost worker's next attempt loads what an earlier one saved."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], str] = {}

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        self.saved[(run_id, step_id)] = data

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        return self.saved.get((run_id, step_id))

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        self.saved.pop((run_id, step_id), None)


@dataclass(eq=False, repr=False)  # (its repr would show the run id, uncounted)
class _ReferenceWorkflow:
    """The ``WorkflowContext`` of a reference run; records what the run does."""

    loop: _ReferenceLoop
    rid: str  # the run id (``run_id``: user code's reads of it are counted)
    workflow_name: str
    started_at: datetime
    invoke_step: StepInvoker
    hook_answer: HookAnswer
    max_duration: timedelta | None
    positions: int = 0  # the last command position issued
    step_context: StepContext | None = None
    step_starts: list[StepStart] = field(default_factory=list)
    sleeps: list[tuple[int, datetime, datetime]] = field(default_factory=list)
    asked: dict[tuple[str, int], tuple[timedelta, datetime]] = field(default_factory=dict)
    timed_out: bool = False  # the workflow's max_duration passed
    rng: random.Random = field(init=False)
    runs: _ReferenceRuns = field(init=False)
    checkpoints: _ReferenceCheckpoints = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"pyworkflow:{self.rid}")
        self.runs = _ReferenceRuns()
        self.checkpoints = _ReferenceCheckpoints()

    @property
    def run_id(self) -> str:
        """The run id: a value the seed drew, so user code's reads are counted (sweeps share
        models only where none were: ``identity``)."""
        count_read()
        return self.rid

    # -- virtual time ------------------------------------------------------------------------

    def at(self, seconds: float) -> datetime:
        return self.started_at + timedelta(microseconds=round(seconds * 1_000_000))

    def seconds(self, when: datetime) -> float:
        return (when - self.started_at) // _MICROSECOND / 1_000_000

    def now(self) -> datetime:
        return self.at(self.loop.time())

    def _wake_at(self, when: datetime, callback: Callable[..., Any], *args: Any) -> None:
        self.loop.call_at_untracked(self.seconds(when), callback, *args)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` outside workflow code (as the engine runs step bodies and callbacks)."""
        self.loop.create_task(coro, context=contextvars.Context())  # (the loop holds it)

    # -- commands ----------------------------------------------------------------------------

    def is_current(self) -> bool:
        return current_workflow() is self

    def _issue(self) -> int:
        self.positions += 1
        return self.positions

    def note_timer(self, when: float) -> None:
        """A loop timer set by workflow code: the engine makes it a durable ``timer`` command."""
        now = self.loop.time()
        position, start, due = self._issue(), self.at(now), self.at(max(when, now))
        self.sleeps.append((position, start, due))
        self.asked[(f"timer:{position}", 0)] = (due - start, due)

    def call_step(
        self, step: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        self._spawn(self._run_step(self._issue(), step, args, kwargs, future))
        return future

    async def _run_step(
        self,
        position: int,
        definition: StepDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: asyncio.Future[Any],
    ) -> None:
        try:  # the arguments as a worker gets them (a step's boundary)
            args, kwargs = deserialize_args(*serialize_args(args, kwargs))
        except SerializationError as exc:
            _settle(future, error=exc)
            return
        attempt = 1
        while not future.done():  # a cancelled call starts no more attempts
            self.step_starts.append(StepStart(position, definition.name, attempt, self.now()))
            step_id = f"step:{definition.name}:{position}"
            info = StepInfo(
                self.rid,
                step_id,
                definition.name,
                attempt,
                self.step_context,
                self.checkpoints,
                self.runs,
            )
            try:
                with step_scope(info):
                    result = await self._attempt(definition, args, kwargs, info)
                    text = dumps(result, what=f"the result of step {definition.name!r}")
            except Exception as exc:  # noqa: BLE001 - every step failure is retried or delivered
                delay = (
                    None
                    if isinstance(exc, SerializationError)
                    else definition.retry.decide(exc, attempt)
                )
                if delay is None:
                    _settle(future, error=as_delivered(exc))
                    return
                retry: asyncio.Future[None] = self.loop.create_future()
                self.asked[(step_id, attempt)] = (delay, self.now() + delay)
                self._wake_at(self.now() + delay, _settle, retry)
                await retry
                attempt += 1
                continue
            _settle(future, loads(text))

    async def _attempt(
        self,
        definition: StepDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        info: StepInfo,
    ) -> Any:
        seconds = None if definition.timeout is None else definition.timeout.total_seconds()
        scope = None if seconds is None else asyncio.timeout(seconds)  # (None: no timeout)
        try:
            async with scope or contextlib.nullcontext():
                for _ in range(MAX_LOST_WORKERS):
                    try:
                        return await self.invoke_step(definition, args, kwargs, info)
                    except WorkerCrash:
                        continue  # the body took its worker down: the engine runs it again
                raise WorkflowError(f"step {definition.name!r} lost its worker every time")
        except TimeoutError:
            if scope is not None and scope.expired():
                raise StepTimeoutError(
                    f"step {definition.name!r} timed out after {seconds}s"
                ) from None
            raise

    def sleep(self, duration: Any) -> asyncio.Future[None]:
        now = self.now()
        due = resolve_wake_time(duration, now)
        position = self._issue()
        self.sleeps.append((position, now, due))
        self.asked[(f"sleep:{position}", 0)] = (due - now, due)
        future: asyncio.Future[None] = self.loop.create_future()
        self._wake_at(due, _settle, future)
        return future

    def hook(
        self,
        name: str,
        *,
        timeout: Any = None,
        on_created: Any = None,
        payload_schema: Any = None,
        on_received: Any = None,  # noqa: ARG002 - the primitive applies it, in workflow code
    ) -> asyncio.Future[Any]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a hook needs a non-empty name, got {name!r}")
        now = self.now()
        expires_at = None if timeout is None else now + parse_duration(timeout)
        position = self._issue()
        if expires_at is not None:
            self.asked[(f"hook:{name}:{position}", 0)] = (expires_at - now, expires_at)
        future: asyncio.Future[Any] = self.loop.create_future()
        if on_created is not None:
            # Shaped as a real one (the run id, the hook, a secret): a value made of the run id,
            # whatever the code makes of it (sweeps share no model that handed one out).
            count_use()
            self._spawn(_announce(on_created, f"{self.rid}:hook-{position}:reference"))
        answer = self.hook_answer(position, name)
        arrives = None
        if answer is not None:
            arrives = now + answer[0] if isinstance(answer[0], timedelta) else answer[0]
        if (
            answer is not None
            and arrives is not None
            and (expires_at is None or arrives < expires_at)
        ):
            try:
                payload = _received_payload(answer[1], payload_schema)
            except (SerializationError, ValidationError):
                pass  # refused at receipt, as the engine refuses it: nothing is delivered
            else:
                self._wake_at(max(arrives, now), _settle, future, payload)
                return future
        if expires_at is not None:
            self._wake_at(expires_at, _expire, future, name)
        return future

    # -- the rest of the WorkflowContext protocol ----------------------------------------------

    def random(self) -> float:
        count_use()  # (a stream seeded by the run id; ``pyworkflow.random()`` counts it too)
        return self.rng.random()

    def uuid4(self) -> uuid.UUID:
        count_use()
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def set_step_context(self, ctx: StepContext | None) -> None:
        self.step_context = ctx

    def get_step_context(self) -> StepContext | None:
        return self.step_context

    def enter_shield(self) -> None:
        """Nothing to defer: the model never cancels (runs that were are not compared)."""

    def exit_shield(self) -> None:
        """See ``enter_shield``."""

    # Runs that start children or continue as new are other runs' business: the model does not
    # follow them, and the oracle does not compare such runs (their logs say so).

    def start_child(
        self,
        definition: Any,  # noqa: ARG002
        args: tuple[Any, ...],  # noqa: ARG002
        kwargs: dict[str, Any],  # noqa: ARG002
        *,
        wait: bool,  # noqa: ARG002
    ) -> tuple[Any, str]:
        raise _NotModelled("child workflows")

    def child_result(self, child_run_id: str) -> Any:  # noqa: ARG002
        raise _NotModelled("child workflows")

    def child_status(self, child_run_id: str) -> str:  # noqa: ARG002
        raise _NotModelled("child workflows")

    def cancel_child(self, child_run_id: str, reason: str | None) -> bool:  # noqa: ARG002
        raise _NotModelled("child workflows")

    def continue_as_new(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:  # noqa: ARG002
        raise _NotModelled("continue_as_new")

    def time_out(self) -> None:
        self.timed_out = True
        self.loop.stop()


def _expire(future: asyncio.Future[Any], name: str) -> None:
    _settle(future, error=HookExpiredError(f"hook {name!r} expired before a payload arrived"))


def as_delivered(exc: BaseException) -> BaseException:
    """A failed step's error as the workflow gets it, by the engine's contract rather than by its
    codec (so a codec that loses the type or the arguments shows): the same class rebuilt from
    its arguments (as data, the way they cross a process boundary) and its attributes; or
    ``RemoteError(type, message)`` when the class cannot be imported by name, or its arguments
    cannot cross, or it refuses them."""
    cls = type(exc)
    name, message = error_type_name(exc), _text_of(exc)
    if not _importable(cls):
        return RemoteError(name, message)
    try:
        args = tuple(loads(dumps(list(exc.args), what="exception arguments")))
    except SerializationError:
        return RemoteError(name, message)
    try:
        rebuilt = cls(*args)
    except Exception:  # noqa: BLE001 - built the way pickle does it, then
        try:
            rebuilt = cls.__new__(cls, *args)
            rebuilt.args = args
        except Exception:  # noqa: BLE001 - then it cannot be rebuilt at all
            return RemoteError(name, message)
    for attribute, value in vars(exc).items():
        with contextlib.suppress(Exception):
            setattr(rebuilt, attribute, loads(dumps(value, what="an exception attribute")))
    return rebuilt


def _importable(cls: type) -> bool:
    try:
        found: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - not importable by name, whatever the reason
        return False
    return found is cls


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails
        return f"<unprintable {type(exc).__qualname__}>"


async def _announce(on_created: Callable[[str], Any], token: str) -> None:
    with contextlib.suppress(Exception):  # a callback must not break the run
        await call_on_created(on_created, token)


async def _main(func: Callable[..., Coroutine[Any, Any, Any]], args: Any, kwargs: Any) -> Any:
    return await func(*args, **kwargs)


def _ending(
    wf: _ReferenceWorkflow, main: asyncio.Task[Any], halted: str | None
) -> ReferenceOutcome:
    outcome = ReferenceOutcome(
        "blocked",
        step_starts=list(wf.step_starts),
        sleeps=list(wf.sleeps),
        asked=dict(wf.asked),
        other_runs=wf.runs.touched,
    )
    error: BaseException | None = None
    if not main.done():
        if not wf.timed_out or wf.max_duration is None:
            outcome.error_message = halted
            return outcome
        error = WorkflowTimeoutError(
            f"workflow {wf.workflow_name!r} ran past its max_duration"
            f" ({wf.max_duration.total_seconds()}s)"
        )
    elif main.cancelled():
        error = WorkflowError("the workflow's main task was cancelled")
    else:
        error = main.exception()
    outcome.ended_at = wf.now()
    if error is None:
        try:
            outcome.result = loads(dumps(main.result(), what="the workflow's return value"))
            outcome.status = "completed"
            return outcome
        except SerializationError as exc:
            error = exc
    outcome.status, outcome.error_type = "failed", error_type_name(error)
    outcome.error_message = str(error) or type(error).__name__
    return outcome


def _shut_down(loop: _ReferenceLoop) -> None:
    """Cancel what is left (workflow code may wait in ``finally``: bounded) and close."""
    loop.iterations_left, loop.max_seconds, loop.halted = 10_000, math.inf, None
    tasks = [task for task in loop.tasks if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def _drive(wf: _ReferenceWorkflow, main_coro: Coroutine[Any, Any, Any]) -> ReferenceOutcome:
    """On the reference's own thread: run the workflow to its end, or until it is blocked."""
    loop = wf.loop
    try:
        context = contextvars.Context()
        context.run(set_current_workflow, wf)
        main = loop.create_task(main_coro, context=context)
        main.add_done_callback(lambda _: loop.stop())
        if wf.max_duration is not None:
            loop.call_at_untracked(wf.max_duration.total_seconds(), wf.time_out)
        with contextlib.suppress(SimulationDeadlock):  # nothing can run, nothing is scheduled
            loop.run_forever()
        return _ending(wf, main, loop.halted or _WAITS_FOREVER)
    finally:
        _shut_down(loop)


@dataclass(frozen=True)
class ReferenceCall:
    """The arguments of one ``run_reference`` (for ``run_references``)."""

    workflow_func: Callable[..., Coroutine[Any, Any, Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    run_id: str
    started_at: datetime
    invoke_step: StepInvoker
    hook_answer: HookAnswer
    max_time: timedelta = timedelta(days=365)
    max_iterations: int = MAX_LOOP_ITERATIONS


async def run_reference(
    workflow_func: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    run_id: str,
    started_at: datetime,
    invoke_step: StepInvoker,
    hook_answer: HookAnswer,
    max_time: timedelta = timedelta(days=365),
    max_iterations: int = MAX_LOOP_ITERATIONS,
) -> ReferenceOutcome:
    """Run ``workflow_func(*args, **kwargs)`` as run ``run_id`` started at ``started_at``.

    Runs synchronously on a thread of its own and blocks the caller's loop meanwhile (it is all
    virtual time): a ``VirtualTimeEventLoop`` calling this must not see time pass, and could not
    wait for a thread anyway. Raises ``SerializationError`` for arguments ``start`` refuses.
    """
    call = ReferenceCall(
        workflow_func,
        args,
        kwargs,
        run_id,
        started_at,
        invoke_step,
        hook_answer,
        max_time,
        max_iterations,
    )
    return (await run_references([call]))[0]


async def run_references(calls: list[ReferenceCall]) -> list[ReferenceOutcome]:
    """``run_reference`` for each of ``calls``, all in one trip to the reference thread (a trip
    costs about as much as a small workflow's whole model)."""
    return _reference_thread().submit(_drive_all, calls).result()


def _prepare(call: ReferenceCall) -> tuple[_ReferenceWorkflow, Coroutine[Any, Any, Any]]:
    workflow_func = call.workflow_func
    definition = getattr(workflow_func, "__pyworkflow_workflow__", None)
    if not isinstance(definition, WorkflowDefinition):  # a plain async function will do
        definition = WorkflowDefinition(getattr(workflow_func, "__name__", "?"), workflow_func)
    args, kwargs = deserialize_args(*serialize_args(call.args, call.kwargs))  # as start does
    started_at = call.started_at
    started = (started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)).astimezone(UTC)
    loop = _ReferenceLoop(call.max_time.total_seconds(), call.max_iterations)
    wf = loop.workflow = _ReferenceWorkflow(
        loop,
        call.run_id,
        definition.name,
        started,
        call.invoke_step,
        call.hook_answer,
        definition.max_duration,
    )
    return wf, _main(definition.func, args, kwargs)


# How ``drive_references`` gets the model of the call at an index: it is handed the index and a
# function that runs the model (the caller may know the outcome already, or watch the run).
EachModel = Callable[[int, Callable[[], ReferenceOutcome]], ReferenceOutcome]


def drive_references(
    calls: list[ReferenceCall], each: EachModel | None = None
) -> list[ReferenceOutcome]:
    """``run_reference`` for each of ``calls`` from synchronous code: on this thread when no
    event loop runs on it (no trip to the reference thread), else on the reference thread.
    ``each``: called in order for every call instead of running its model (``EachModel``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _drive_all(calls, each)
    return _reference_thread().submit(_drive_all, calls, each).result()


def _drive_all(calls: list[ReferenceCall], each: EachModel | None = None) -> list[ReferenceOutcome]:
    """Each model in turn (one event loop open at a time)."""
    if each is None:
        return [_drive(*_prepare(call)) for call in calls]
    return [
        each(index, lambda call=call: _drive(*_prepare(call)))  # type: ignore[misc]
        for index, call in enumerate(calls)
    ]


_thread_lock = threading.Lock()
_thread: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the thread)


def _reference_thread() -> ThreadPoolExecutor:
    """The one thread references of this process run on (a thread each cost a start and join per
    run checked); a forked child gets its own."""
    global _thread
    with _thread_lock:
        if _thread is None or _thread[0] != os.getpid():
            _thread = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="pyworkflow-ref"))
        return _thread[1]


__all__ = [
    "MAX_LOOP_ITERATIONS",
    "ReferenceCall",
    "ReferenceOutcome",
    "StepStart",
    "drive_references",
    "run_reference",
    "run_references",
]
