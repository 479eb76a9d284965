"""``Simulation``: run workflows on the real engine, on virtual time, under seeded faults.

The simulation lives on its own ``VirtualTimeEventLoop``, run on a thread that every simulation
of the process shares (one call at a time); the async methods hand work to that thread and wait
for it, so they can be awaited from any event loop
(a pytest-asyncio test, a script). While no method runs, virtual time stands still.

Everything a simulation does is recorded as a script (starts, hook payloads, runs to idle), so
``check()`` can run the same script again: without faults (the result must not change) and with
the same seed (the log must be byte-identical). With ``trace=True`` it also records what happened
where and when (``trace.Trace``), and ``write_report`` draws it as one HTML page.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import random
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pyworkflow.core.registry import (
    StepDefinition,
    WorkflowDefinition,
    get_workflow,
    list_steps,
    list_workflows,
    workflow_definition_of,
)
from pyworkflow.engine.hooks import make_token
from pyworkflow.engine.outcome import Outcome, chain_end, outcome_of
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    HookPayloadError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    WorkflowError,
)
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec, ScheduleStatus
from pyworkflow.model.schemas import Hook, HookStatus, RunStatus, WorkflowRun
from pyworkflow_testing.checking import Checks, FaultFreeEndings, SimulationFailure
from pyworkflow_testing.collector import fewer_collections
from pyworkflow_testing.fate import scripted_action
from pyworkflow_testing.faults import Faults
from pyworkflow_testing.loop import VirtualTimeEventLoop
from pyworkflow_testing.schedule_oracles import History
from pyworkflow_testing.shrink import Tape
from pyworkflow_testing.timewarp import warped
from pyworkflow_testing.trace import CANCEL, HOOK, SCRIPT, START, Trace
from pyworkflow_testing.world import EPOCH, World

if TYPE_CHECKING:
    from pyworkflow_testing.report import RunLog

T = TypeVar("T")

DEFAULT_LIVENESS = timedelta(days=30)

_thread_lock = threading.Lock()
_thread: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the thread)


def _simulation_thread() -> ThreadPoolExecutor:
    """The one thread every simulation of this process runs on, started on first use.

    Simulations are stepped one call at a time, so they can share it: a thread per simulation
    cost a thread start and join per seed of a sweep (two with the same-seed rerun). A forked
    child gets a thread of its own (the parent's does not exist there).
    """
    global _thread
    with _thread_lock:
        if _thread is None or _thread[0] != os.getpid():
            _thread = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="pyworkflow-sim"))
        return _thread[1]


def simulation_thread_exists() -> bool:
    """Whether this process has its simulation thread (some simulation was built here)."""
    with _thread_lock:
        return _thread is not None and _thread[0] == os.getpid()


def stop_simulation_thread() -> None:
    """End this process's simulation thread (the next simulation starts another): a process
    about to fork one child per seed must have no thread of its own running
    (``sweep.run_seed_isolated``)."""
    global _thread
    with _thread_lock:
        if _thread is not None and _thread[0] == os.getpid():
            _thread[1].shutdown(wait=True)
        _thread = None


_running = threading.Lock()  # held while any simulation runs (``Simulation._run_here``)
_inside = threading.local()  # ``active``: this thread is running a simulation now


def _refuse_reentry(coro: Coroutine[Any, Any, Any]) -> None:
    """Code running inside a simulation (a step, a workflow, a mock) cannot drive one: it
    would wait for itself."""
    if getattr(_inside, "active", False):
        coro.close()
        raise RuntimeError(
            "a simulation cannot be driven from code running inside a simulation"
            " (a step, a workflow or a mock): it would wait for itself"
        )


def _user_modules() -> set[str]:
    """The modules of every registered workflow and step: their clocks run on virtual time."""
    modules = {d.func.__module__ for d in list_steps().values()}
    modules |= {d.func.__module__ for d in list_workflows().values()}
    return modules


# Why a payload is refused: a script that caught one goes on, and so does its rerun.
_REFUSED_PAYLOAD = (
    HookNotFoundError,
    HookExpiredError,
    HookAlreadyReceivedError,
    HookPayloadError,
)


@dataclass
class _Action:
    kind: str  # "start" | "hook" | "cancel" | "schedule" | "run_for" | "wait_hook" | "idle"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    key: str | None = None  # a start's idempotency key
    # What the action raised when the script performed it (a payload refused as the hook had
    # expired, say, which the script caught): a rerun whose payload is refused goes on likewise.
    raised: type[BaseException] | None = None


class SimRun:
    """A run started in a simulation."""

    def __init__(self, sim: Simulation, index: int, run_id: str) -> None:
        self.sim = sim
        self.index = index
        self.run_id = run_id

    async def record(self) -> WorkflowRun:
        run = await self.sim._call(self.sim.world.storage.inner.get_run(self.run_id))
        assert run is not None
        return run

    async def status(self) -> RunStatus:
        return (await self.record()).status

    async def events(self) -> list[Event]:
        return await self.sim._call(self.sim.world.storage.inner.get_events(self.run_id))

    async def result(self) -> Any:
        """The run's return value; raises its error if it failed, or if it is not finished. A run
        that continued as new answers for its chain."""
        # One trip to the simulation's thread (each costs about as much as a delivery).
        return (await self.sim._call(self._outcome())).value()

    async def _outcome(self) -> Outcome:
        storage = self.sim.world.storage.inner
        run = await storage.get_run(self.run_id)
        assert run is not None
        run = await chain_end(storage, run)  # a chain's result is its last run's
        if not run.status.is_terminal:
            raise RuntimeError(f"run {self.run_id} has not finished (status {run.status})")
        return await outcome_of(storage, run)

    def __repr__(self) -> str:
        return f"SimRun({self.index}, {self.run_id})"


class Simulation(Checks):
    """A seeded simulation of workflows on the real engine; see the module docstring."""

    def __init__(
        self,
        seed: int = 0,
        faults: Faults | str | None = None,
        workers: int = 1,
        *,
        dispatch_steps: bool | None = None,
        max_faults: int | None = 10,
        liveness: timedelta = DEFAULT_LIVENESS,
        suppress: frozenset[int] | set[int] = frozenset(),
        reproduce: str | None = None,
        start: datetime | None = None,
        trace: bool = False,
    ) -> None:
        self.seed = seed
        # Where virtual time begins (aware; default 2030-01-01 UTC): a calendar that matters to
        # the workflow (a daylight-saving change, a month end) can be simulated from its eve.
        self.epoch = EPOCH if start is None else start
        self.faults = Faults.parse(faults)
        self.workers = workers
        # By default the seed decides whether steps run inline or on workers: both get explored.
        self.dispatch_steps = bool(seed % 2) if dispatch_steps is None else dispatch_steps
        self.max_faults = max_faults
        self.liveness = liveness
        self.suppress = frozenset(suppress)
        self.reproduce = reproduce
        self.mocks: dict[str, Any] = {}
        self.script: list[_Action] = []
        self.runs: list[SimRun] = []
        self.schedule_history: dict[str, History] = {}
        self.timed_out = False
        self._checked_at: tuple[int, bool] | None = None  # see Checks.check
        self.fault_free_endings: FaultFreeEndings | None = None  # a sweep's (see there)
        self.last_violations: list[str] | None = None  # what the last check() found
        # Wall seconds of the last check()'s phases: per-run oracles and the two reruns.
        self.check_seconds: dict[str, float] = {}
        self._executor = _simulation_thread()
        self._loop = VirtualTimeEventLoop()
        # Only for a report: the recording points of the world check for None and move on.
        self.trace: Trace | None = Trace(self._loop) if trace else None
        self.world = World(
            self._loop,
            seed=seed,
            faults=self.faults,
            workers=workers,
            dispatch_steps=self.dispatch_steps,
            suppress=self.suppress,
            max_faults=max_faults,
            mocks=self.mocks,
            start=self.epoch,
            trace=self.trace,
        )

    # -- running on the simulation's thread ----------------------------------------------------

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        _refuse_reentry(coro)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_here, coro)

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the simulation from synchronous code (the CLI, plain tests).

        From a thread with no event loop running (a script, the sweeps, a plain test) the
        simulation runs right here: a trip to the simulation's thread cost about 0.1 ms, as much
        as a delivery, and ``check()`` makes a dozen. From inside a running loop (``check()`` in
        an ``async def`` test) it runs on the simulation's thread, as the async methods do."""
        _refuse_reentry(coro)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._run_here(coro)
        return self._executor.submit(self._run_here, coro).result()

    def _run_here(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion with user code's clocks on virtual time; one call at a time
        in the whole process (``warped`` swaps module attributes that every thread sees)."""
        with _running, fewer_collections():
            _inside.active = True
            try:
                with warped(_user_modules(), self.world.clock.now):
                    return self._loop.run_until_complete(coro)
            finally:
                _inside.active = False

    def close(self) -> None:
        def shutdown() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

        if self._loop.is_closed():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            with _running:
                shutdown()  # no loop running on this thread: close it here (see run_sync)
        else:
            self._executor.submit(shutdown).result()

    # -- what tests do -------------------------------------------------------------------------

    @property
    def elapsed(self) -> timedelta:
        """Virtual time since the simulation began."""
        return timedelta(seconds=self._loop.time())

    async def start(
        self, workflow: Any, *args: Any, idempotency_key: str | None = None, **kwargs: Any
    ) -> SimRun:
        """Start a run; like Celery, the caller records it and a worker picks it up.

        With ``idempotency_key``, a key already used gives back that run (the same ``SimRun``);
        with the ``duplicate`` fault on, the start is sometimes sent twice at once, to two
        workers, and both must get the same run (a violation otherwise).
        """
        return await self._call(self._start(workflow, args, kwargs, idempotency_key))

    async def _start(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> SimRun:
        definition = workflow_definition_of(workflow)
        self.script.append(_Action("start", (definition.name, *args), kwargs, idempotency_key))
        with scripted_action():
            run = await self._start_run(definition, args, kwargs, idempotency_key)
        world = self.world
        for handle in self.runs:
            if handle.run_id == run.run_id:
                return handle  # the key named a run this simulation started
        await world.broker.enqueue_activation(run.run_id)
        handle = SimRun(self, len(self.runs), run.run_id)
        self.runs.append(handle)
        if self.trace is not None:
            self.trace.scripted(START, run.run_id, f"start {definition.name}: run {handle.index}")
        return handle

    async def _start_run(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        idempotency_key: str | None,
    ) -> WorkflowRun:
        world = self.world
        if idempotency_key is not None and world.chooser.fault("duplicate", "start"):
            # A client that retried its request (or two clients racing): two starts at once.
            if self.trace is not None:
                self.trace.duplicated("", f"start with key {idempotency_key!r}", SCRIPT)
            both = await asyncio.gather(
                world.engines[0].start_run(
                    definition, args, kwargs, idempotency_key=idempotency_key
                ),
                world.engines[-1].start_run(
                    definition, args, kwargs, idempotency_key=idempotency_key
                ),
            )
            (run, _), (other, _) = both
            if sum(created for _, created in both) > 1 or other.run_id != run.run_id:
                world.errors.append(
                    RuntimeError(
                        f"two concurrent starts with idempotency key {idempotency_key!r} gave"
                        f" runs {run.run_id} and {other.run_id}"
                        f" ({sum(created for _, created in both)} created)"
                    )
                )
        else:
            run, _ = await world.any_engine.start_run(
                definition, args, kwargs, idempotency_key=idempotency_key
            )
        return run

    async def run_until_idle(self) -> None:
        """Run everything to quiescence, jumping virtual time; faults stop once it is reached.

        Then runs on without faults until everything is idle again: every run must finish
        within the liveness bound (``liveness``) or the simulation is marked as timed out.
        """
        await self._call(self._run_until_idle())

    async def _run_until_idle(self) -> None:
        self.script.append(_Action("idle"))
        world = self.world
        bound = self._loop.time() + self.liveness.total_seconds()
        if not await world.run_until_idle(bound):
            self.timed_out = True
        world.stop_faults()
        if not await world.run_until_idle(self._loop.time() + self.liveness.total_seconds()):
            self.timed_out = True
        world.chooser.faults = self.faults  # later phases get faults again
        world.storage.active = True

    async def run_for(self, duration: timedelta | float) -> None:
        """Run (faults on) for ``duration`` of virtual time, or until idle if that comes first."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        await self._call(self._run_for(seconds))

    async def _run_for(self, seconds: float) -> None:
        self.script.append(_Action("run_for", (seconds,)))
        await self.world.run_until_idle(self._loop.time() + seconds, schedules=True)

    async def wait_for_hook(
        self, run: SimRun, name: str, within: timedelta = timedelta(days=1)
    ) -> bool:
        """Run until ``run``, or a run it started (a child, a child's child, the next run of its
        chain), has a pending hook ``name``; False if the run (its chain) ended, if ``within``
        passed, or if the simulation went idle without it (nothing left could ever create it)."""
        return await self._call(self._wait_for_hook(run.index, name, within.total_seconds()))

    async def _wait_for_hook(self, index: int, name: str, seconds: float) -> bool:
        # One recorded action, run whole on the simulation's loop: the reruns of ``check()``
        # wait exactly the same way (polling from outside would let busy workers run between
        # the polls, differently each time).
        self.script.append(_Action("wait_hook", (index, name, seconds)))
        run_id, world = self.runs[index].run_id, self.world
        deadline = self._loop.time() + seconds
        idle = False
        while True:
            hooks, open_runs = await self._family_hooks(run_id, name)
            if any(token is not None for _, _, token in hooks):
                return True
            if idle or not open_runs:
                return False
            now = self._loop.time()
            if now >= deadline:
                return False
            # Look again every virtual second; while nothing is under way (no worker busy, no
            # message waiting), nothing can create the hook before the next wake-up: the next
            # look is the first one after it (a run sleeping for days before it asks is not
            # looked at once a second meanwhile).
            until = now + 1.0
            wakeup = None if world.busy or world.broker.visible else world._next_wakeup()
            if wakeup is not None and wakeup > until:
                until = now + math.ceil(wakeup - now)
            idle = await world.run_until_idle(min(until, deadline))

    async def _family_hooks(
        self, run_id: str, name: str
    ) -> tuple[list[tuple[str, Hook, str | None]], int]:
        """The pending hooks ``name`` of run ``run_id`` and of the runs it started (its chain's
        next runs, its children, theirs, breadth first; children by ``(created_at, run_id)``),
        each with the token whoever answers it has (``_token_known``: None before its
        ``on_created`` was called); and how many runs of that family are still open (a child
        started from a step may outlive its parent)."""
        storage = self.world.storage.inner
        root = await storage.get_run(run_id)
        if root is None:
            return [], 0
        # Who started whom: one pass over the runs, and only when the run started any (a family
        # of many runs would otherwise cost a pass per member, at every look).
        children: dict[str, list[WorkflowRun]] = {}
        if root.continued_to_run_id is not None or await storage.list_children(run_id):
            cursor: str | None = None
            while True:
                page, cursor = await storage.list_runs(limit=1_000, cursor=cursor)
                for record in page:  # (in (created_at, run_id) order)
                    if record.parent_run_id is not None:
                        children.setdefault(record.parent_run_id, []).append(record)
                if cursor is None:
                    break
        queue, seen = [root], {run_id}
        found: list[tuple[str, Hook, str | None]] = []
        open_runs = 0
        while queue:
            record = queue.pop(0)
            current = record.run_id
            if not record.status.is_terminal:
                open_runs += 1
                for hook in await storage.list_hooks(current, HookStatus.PENDING):
                    if hook.name == name:
                        found.append((current, hook, await self._token_known(current, hook)))
            following = []
            if record.continued_to_run_id is not None and record.continued_to_run_id not in seen:
                following.append(await storage.get_run(record.continued_to_run_id))
            for child in [*following, *children.get(current, [])]:
                if child is not None and child.run_id not in seen:
                    seen.add(child.run_id)
                    queue.append(child)
        return found, open_runs

    async def cancel(
        self,
        run: SimRun,
        reason: str | None = None,
        *,
        within: timedelta | float | None = None,
    ) -> bool:
        """Ask ``run`` to stop (``cancel_workflow``); True when the request was recorded (False:
        the run had finished). Now in virtual time, or with ``within`` at a moment drawn from the
        seed in the next ``within`` (a duration or seconds): each seed cancels at another point of
        the run (mid-sleep, mid-step, racing a step's completion or a timer), the same seed at
        the same one. Recorded in the script (as ``run_for`` then the request)."""
        if within is not None:
            seconds = within.total_seconds() if isinstance(within, timedelta) else float(within)
            if seconds < 0:
                raise ValueError(f"within must not be negative, got {within!r}")
            draws = random.Random(f"pyworkflow-cancel:{self.seed}:{run.index}:{len(self.script)}")
            await self.run_for(round(draws.uniform(0.0, seconds), 6))
        return await self._call(self._cancel(run.index, reason))

    async def _cancel(self, index: int, reason: str | None) -> bool:
        self.script.append(_Action("cancel", (index, reason)))
        if self.trace is not None:
            self.trace.scripted(CANCEL, self.runs[index].run_id, f"cancel run {index}: {reason}")
        with scripted_action():
            engine = self.world.any_engine
            return await engine.request_cancellation(self.runs[index].run_id, reason)

    async def list_runs(self, workflow_name: str | None = None) -> list[WorkflowRun]:
        """Every run the simulation holds (those the script started, and those the engine made:
        children, the next runs of chains), oldest first; optionally of one workflow."""
        return await self._call(self._list_runs(workflow_name))

    async def _list_runs(self, workflow_name: str | None) -> list[WorkflowRun]:
        storage = self.world.storage.inner
        found: list[WorkflowRun] = []
        cursor: str | None = None
        while True:
            page, cursor = await storage.list_runs(
                workflow_name=workflow_name, limit=500, cursor=cursor
            )
            found += page
            if cursor is None:
                return found

    # -- schedules: the public functions' arguments, on virtual time -------------------------

    async def create_schedule(
        self,
        workflow: Any,
        spec: ScheduleSpec,
        *args: Any,
        overlap_policy: OverlapPolicy | str = OverlapPolicy.SKIP,
        schedule_id: str | None = None,
        **kwargs: Any,
    ) -> Schedule:
        """``create_schedule`` in the simulation (now in virtual time). Without ``schedule_id``
        the id is drawn from the seed (the same seed names the same schedule)."""
        name = workflow_definition_of(workflow).name
        if schedule_id is None:
            schedule_id = f"sched_{self.seed}_{len(self.script)}"
        options = {"overlap_policy": str(OverlapPolicy.of(overlap_policy)), "id": schedule_id}
        return await self._call(
            self._schedule_op("create", (name, spec, *args), {**kwargs, "__options": options})
        )

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule, counters up to date (None when unknown)."""
        return await self._call(self._get_schedule(schedule_id))

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        try:
            return await self.world.any_engine.get_schedule(schedule_id)
        except ScheduleNotFoundError:
            return None

    async def list_schedules(
        self, workflow_name: str | None = None, status: ScheduleStatus | str | None = None
    ) -> list[Schedule]:
        engine = self.world.any_engine
        return await self._call(engine.list_schedules(workflow_name, status, limit=1_000_000))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self._call(self._schedule_op("pause", (schedule_id,)))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self._call(self._schedule_op("resume", (schedule_id,)))

    async def delete_schedule(self, schedule_id: str) -> Schedule:
        return await self._call(self._schedule_op("delete", (schedule_id,)))

    async def update_schedule(
        self,
        schedule_id: str,
        spec: ScheduleSpec | None = None,
        overlap_policy: OverlapPolicy | str | None = None,
    ) -> Schedule:
        return await self._call(self._schedule_op("update", (schedule_id, spec, overlap_policy)))

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Start a run of the schedule now, outside its spec; returns its run id."""
        return await self._call(self._schedule_op("trigger", (schedule_id,)))

    async def backfill_schedule(
        self, schedule_id: str, start_time: datetime, end_time: datetime
    ) -> list[str]:
        return await self._call(self._schedule_op("backfill", (schedule_id, start_time, end_time)))

    async def _schedule_op(
        self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        self.script.append(_Action("schedule", (op, *args), dict(kwargs)))
        options = kwargs.get("__options") or {}
        engine = self.world.any_engine
        with scripted_action():
            result = await self._schedule_call(engine, op, args, kwargs)
        schedule_id = result.schedule_id if isinstance(result, Schedule) else args[0]
        spec = args[1] if op in ("create", "update") else None
        policy = None
        if op == "create":
            policy = options["overlap_policy"]
        elif op == "update" and args[2] is not None:
            policy = str(OverlapPolicy.of(args[2]))
        self.schedule_history.setdefault(schedule_id, []).append(
            (self.world.clock.now(), op, spec, policy)
        )
        return result

    @staticmethod
    async def _schedule_call(
        engine: Any, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if op == "create":
            options = kwargs.pop("__options")
            name, spec, *call_args = args
            schedule, created = await engine.create_schedule(
                name,
                spec,
                tuple(call_args),
                kwargs,
                overlap_policy=options["overlap_policy"],
                schedule_id=options["id"],
            )
            if not created:
                raise ScheduleAlreadyExistsError(
                    f"a schedule {schedule.schedule_id!r} already exists"
                )
            return schedule
        return await getattr(engine, f"{op}_schedule")(*args)

    async def resume_hook(self, run: SimRun, name: str, payload: Any) -> None:
        """Deliver ``payload`` to the pending hook ``name`` of ``run``, or of a run it started
        (see ``wait_for_hook``)."""
        await self._call(self._resume_hook(run, name, payload))

    async def _resume_hook(self, run: SimRun, name: str, payload: Any) -> None:
        hooks, _ = await self._family_hooks(run.run_id, name)
        answerable = [(owner, token) for owner, _, token in hooks if token is not None]
        if not answerable:
            if hooks:
                raise HookNotFoundError(
                    f"run {hooks[0][0]}: hook {name!r} was created with on_created, which was"
                    " never called: nobody outside was handed its token"
                )
            raise HookNotFoundError(
                f"neither run {run.run_id} nor a run it started has a pending hook {name!r}"
            )
        owner, token = answerable[0]
        action = _Action("hook", (run.index, name, payload))
        self.script.append(action)
        if self.trace is not None:
            whose = f"run {run.index}" if owner == run.run_id else f"run {owner}"
            self.trace.scripted(HOOK, owner, f"payload for hook {name!r} of {whose}")
        try:
            with scripted_action():
                await self._deliver_payload(run, name, token, payload)
        except Exception as exc:
            action.raised = type(exc)
            raise

    async def _deliver_payload(self, run: SimRun, name: str, token: str, payload: Any) -> None:
        world = self.world
        if not world.chooser.fault("duplicate", "hook"):
            await world.any_engine.receive_hook(token, payload)
            return
        if self.trace is not None:
            self.trace.duplicated(run.run_id, f"payload for hook {name!r}, twice at once", SCRIPT)
        # The sender delivers the payload twice at once (a retried webhook, a double click), to
        # two workers: one receipt wins, the other must be refused without a trace in the log.
        first = asyncio.ensure_future(world.engines[0].receive_hook(token, payload))
        second = asyncio.ensure_future(world.engines[-1].receive_hook(token, payload))
        results = await asyncio.gather(first, second, return_exceptions=True)
        refused = [r for r in results if isinstance(r, HookAlreadyReceivedError)]
        errors = [r for r in results if isinstance(r, BaseException) and r not in refused]
        if errors:
            raise errors[0]
        if not refused:
            world.errors.append(
                WorkflowError(f"hook {name!r} of run {run.run_id} accepted the same payload twice")
            )

    async def _token_known(self, run_id: str, hook: Hook) -> str | None:
        """The token whoever answers ``hook`` has: the one its ``on_created`` was handed (None
        before that call), or, for a hook created without ``on_created``, the stored one (the
        way the code hands it out is its own business)."""
        announced = self.world.ledger.token(run_id, hook.hook_id)
        if announced is not None:
            return announced
        derived = make_token(self.world.ids.hook_key, run_id, hook.hook_id)
        for event in await self.world.storage.inner.get_events(run_id):
            if event.type is EventType.HOOK_CREATED and event.data.get("hook_id") == hook.hook_id:
                return None if event.data.get("announce") else derived
        return derived

    def mock_step(
        self,
        step: Any,
        *,
        returns: Any = None,
        raises: BaseException | type[BaseException] | None = None,
        side_effect: Callable[..., Any] | None = None,
    ) -> None:
        """Replace a step's body in this simulation: return ``returns``, raise, or call."""
        definition = getattr(step, "__pyworkflow_step__", None)
        if not isinstance(definition, StepDefinition):
            raise TypeError(f"{step!r} is not a @step")

        async def mocked(_: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if raises is not None:
                raise raises() if isinstance(raises, type) else raises
            if side_effect is not None:
                value = side_effect(*args, **kwargs)
                return await value if inspect.isawaitable(value) else value
            return returns

        self.mocks[definition.name] = mocked

    def replay_script(self, script: list[_Action]) -> None:
        """Perform a recorded script on this simulation, from synchronous code.

        One action per turn of the simulation's loop, as the original performed them (each
        awaited call runs the loop until that call is done, and the loop stops there): work
        still ready when an action ends runs before the next action begins, in the same order.
        Running the whole script as one coroutine would start the next action earlier.
        """
        for action in script:
            self.run_sync(self._play(action))

    async def _play(self, action: _Action) -> None:

        if action.kind == "start":
            name, *args = action.args
            await self._start(get_workflow(name).func, tuple(args), action.kwargs, action.key)
        elif action.kind == "hook":
            index, name, payload = action.args
            try:
                await self._resume_hook(self.runs[index], name, payload)
            except _REFUSED_PAYLOAD:
                if action.raised is None:
                    raise  # (the script got through it)
                # Refused in the script too (which went on): refused for another reason here
                # (the hook expired, and a run without faults recorded its expiry in time).
        elif action.kind == "run_for":
            await self._run_for(action.args[0])
        elif action.kind == "wait_hook":
            await self._wait_for_hook(*action.args)
        elif action.kind == "cancel":
            await self._cancel(*action.args)
        elif action.kind == "schedule":
            op, *args = action.args
            await self._schedule_op(op, tuple(args), action.kwargs)
        else:
            await self._run_until_idle()

    def reproduce_command(self) -> str:
        if self.reproduce:
            return self.reproduce
        faults = self.faults.describe()
        start = "" if self.epoch == EPOCH else f", start={self.epoch!r}"
        return f"Simulation(seed={self.seed}, faults={faults!r}, workers={self.workers}{start})"

    @property
    def faults_injected(self) -> list[tuple[int, str, str]]:
        return list(self.world.chooser.fired)

    # -- the report ----------------------------------------------------------------------------

    def write_report(
        self,
        path: str | os.PathLike[str],
        *,
        violations: Sequence[str] | None = None,
        title: str | None = None,
        notes: Sequence[str] = (),
    ) -> Path:
        """Write the HTML report of this simulation to ``path`` (one self-contained file) and
        return the path: the seed, whether it passed, the violations and the reproduce line at
        the top, the timeline of what happened (needs ``trace=True``), and every run's log.

        The violations are ``violations`` when given; else those of the last ``check()``; else
        this calls ``check()`` now (a failure is what the page shows, it is not raised). Needs
        the ``report`` extra (plotly): ``pip install 'pyworkflow-engine[report]'``.
        """
        if self.trace is None:
            raise RuntimeError(
                "write_report needs a trace: create the simulation with Simulation(..., trace=True)"
            )
        from pyworkflow_testing import report

        report.require_plotly()
        if violations is None:
            if self.last_violations is None:
                with contextlib.suppress(SimulationFailure):
                    self.check()
            violations = self.last_violations or []
        page = report.Report(
            title=title or ", ".join(sorted(set(self._started_workflows()))) or "simulation",
            seed=self.seed,
            violations=list(violations),
            reproduce=self.reproduce_command(),
            faults=self.faults.describe(),
            workers=self.workers,
            dispatch_steps=self.dispatch_steps,
            epoch=self.epoch,
            elapsed=self._loop.time(),
            marks=self.trace.marks,
            runs=self.run_sync(self._run_logs()),
            fired=self.faults_injected,
            notes=list(notes),
        )
        return report.write(path, page)

    def _started_workflows(self) -> list[str]:
        return [str(action.args[0]) for action in self.script if action.kind == "start"]

    async def _run_logs(self) -> list[RunLog]:
        from pyworkflow_testing.report import RunLog

        storage = self.world.storage.inner
        logs = []
        for name, record in await self._every_run():
            events = await storage.get_events(record.run_id)
            logs.append(RunLog(name, record, events))
        return logs

    def tape(self, target: dict[str, Any] | None = None) -> Tape:
        """This simulation's decisions as a ``Tape`` (``Tape.dump`` writes it as JSON)."""
        return Tape(
            seed=self.seed,
            faults=self.faults.describe(),
            workers=self.workers,
            dispatch_steps=self.dispatch_steps,
            max_faults=self.max_faults,
            suppress=sorted(self.suppress),
            fired=self.faults_injected,
            target=dict(target or {}),
        )

    @classmethod
    def from_tape(cls, tape: Tape, **overrides: Any) -> Simulation:
        """A simulation that makes the same decisions as the one ``tape`` was taken from."""
        settings: dict[str, Any] = {
            "faults": tape.faults,
            "workers": tape.workers,
            "dispatch_steps": tape.dispatch_steps,
            "max_faults": tape.max_faults,
            "suppress": frozenset(tape.suppress),
        }
        settings.update(overrides)
        return cls(tape.seed, **settings)

    async def __aenter__(self) -> Simulation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


__all__ = ["SimRun", "Simulation", "SimulationFailure"]
