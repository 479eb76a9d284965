"""The simulated system: a broker, workers, a timer service and a sweeper, on virtual time.

Everything here runs on one ``VirtualTimeEventLoop``. The workers are real ``Engine`` objects
sharing one in-memory storage (behind a wrapper that injects storage faults), fed by a simulated
broker. Every choice — which message next, which worker, whether a fault strikes and where —
comes from ``Chooser``, one seeded random stream, so a seed names one execution exactly.

A worker crash is a ``WorkerCrash`` raised at the chosen point of a delivery; the worker's engine
(and its cache) is thrown away, and the unacked message comes back after the visibility timeout.
With a ``Trace`` attached (``trace``), each delivery, fault, timer and commit is also recorded
for the HTML report; without one, each recording point costs one ``is not None`` check.
This module never reads the wall clock and never does I/O.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pyworkflow.context import StepInfo
from pyworkflow.core.registry import StepDefinition
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.attempts import invoke_body
from pyworkflow.engine.options import EngineOptions
from pyworkflow.model.exceptions import CorruptHistoryError, NonDeterminismError, WorkflowError
from pyworkflow.model.schedules import Schedule
from pyworkflow_testing.fate import (
    Chooser,
    Delivery,
    StorageFault,
    WorkerCrash,
    _delivery,
    crash_point,
    lose_worker,
    scripted_action,
)
from pyworkflow_testing.faults import CRASH_POINTS, SCHEDULE_CRASH_POINTS, Faults
from pyworkflow_testing.faulty_storage import FaultyStorage
from pyworkflow_testing.ledger import ExecutionLedger
from pyworkflow_testing.loop import SimulationDeadlock, VirtualTimeEventLoop
from pyworkflow_testing.trace import SCHEDULER, Trace

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
SIM_CACHE_SIZE = 20_000  # cached workflow instances per simulated worker
# Deliveries in a row that record no event before a phase is declared stuck: an activation that
# fails every time, or a timer that fires again at every claim, would otherwise spin until the
# liveness bound (30 virtual days: millions of deliveries, an apparently hung sweep).
STALL_DELIVERIES = 5_000
# Schedules served this many times at one virtual instant: a poll time that never moves on.
MAX_SCHEDULE_SPINS = 1_000
# The longest a simulated scheduler stalls holding a schedule it read (the ``duplicate`` fault).
MAX_SCHEDULER_STALL = 2 * 3600.0


class VirtualClock:
    """The ``Clock`` port on virtual time: ``start`` (``EPOCH`` by default) plus the loop's
    seconds."""

    def __init__(self, loop: VirtualTimeEventLoop, start: datetime = EPOCH) -> None:
        if start.tzinfo is None:
            raise ValueError(f"a simulation starts at an aware instant, got {start}")
        self._loop = loop
        self.start = start.astimezone(UTC)
        self._at = -1
        self._now = self.start

    def now(self) -> datetime:
        # Asked many times per instant (every event, commit and decision): keep the last answer.
        at = self._loop._micros
        if at != self._at:
            self._at, self._now = at, self.start + timedelta(microseconds=at)
        return self._now


class SeededIds:
    """Run ids from the seed: the same seed gives byte-identical logs."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(f"ids:{seed}")
        # Hook tokens derive from it (``engine.hooks``); every simulated worker shares it.
        self.hook_key = f"sim-hook-key:{seed}".encode()

    def new_run_id(self) -> str:
        return f"run_{self._random.getrandbits(64):016x}"


@dataclass
class Message:
    visible_at: int  # virtual microseconds: exact comparisons with the loop's clock
    number: int
    kind: str  # "activation" | "step"
    run_id: str
    step_id: str = ""
    attempt: int = 0


class SimBroker:
    """The ``TaskQueue`` port: messages wait here until the scheduler hands them to a worker.

    Invariant: ``visible`` holds the messages a worker may take now, in arrival order;
    ``waiting`` is a heap of the others by the time they become visible.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.visible: list[Message] = []
        # (visible_at, number, message): tuples compare in C, and numbers are unique.
        self.waiting: list[tuple[int, int, Message]] = []
        self._numbers = 0

    def put(self, kind: str, run_id: str, step_id: str = "", attempt: int = 0) -> None:
        world = self.world
        delay = 0.0
        if world.chooser.fault("reorder", "delay"):
            delay = world.chooser.uniform(0.0, 5.0)
        self._numbers += 1
        message = Message(world.micros_after(delay), self._numbers, kind, run_id, step_id, attempt)
        if delay and world.trace is not None:
            world.trace.delayed(message, delay)
        self.push(message)

    def push(self, message: Message) -> None:
        heapq.heappush(self.waiting, (message.visible_at, message.number, message))
        self.world.wake.set()

    async def enqueue_activation(self, run_id: str) -> None:
        self.put("activation", run_id)

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        self.put("step", run_id, step_id, attempt)

    def take(self) -> Message | None:
        now = self.world.micros_after(0)
        waiting = self.waiting
        while waiting and waiting[0][0] <= now:
            self.visible.append(heapq.heappop(waiting)[2])
        if not self.visible:
            return None
        index = 0
        if self.world.chooser.faults.rate("reorder") > 0:
            index = self.world.chooser.pick(len(self.visible))
            if index and self.world.trace is not None:
                self.world.trace.out_of_order(self.visible[index], index, len(self.visible))
        return self.visible.pop(index)

    def next_visible(self) -> float | None:
        if self.visible:
            return self.world.loop.time()
        return self.waiting[0][0] / 1_000_000 if self.waiting else None

    def clear(self) -> None:
        self.visible.clear()
        self.waiting.clear()


class Wake:
    """The scheduler's doorbell: ``asyncio.Event``'s ``set`` and ``clear``, and a wait bounded
    in virtual time that costs one future and one timer. (``asyncio.wait_for(event.wait())``
    wraps the wait in a task of its own and wakes the scheduler two turns of the loop after the
    bell: it was a fifth of the loop's work in a sweep.)"""

    __slots__ = ("_loop", "_rung", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._rung = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._rung = False

    async def wait(self, timeout: float) -> None:
        """Until the bell rings or ``timeout`` seconds pass, whichever comes first."""
        if self._rung:
            return
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _ring_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _ring_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


StepMock = Callable[[StepDefinition, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


class World:
    """Storage, broker, workers, timers and sweeper of one simulation; see the module docstring."""

    def __init__(
        self,
        loop: VirtualTimeEventLoop,
        *,
        seed: int,
        faults: Faults,
        workers: int,
        dispatch_steps: bool,
        suppress: frozenset[int] = frozenset(),
        max_faults: int | None = 10,
        lease_ttl: timedelta = timedelta(seconds=30),
        visibility_timeout: timedelta = timedelta(seconds=60),
        mocks: dict[str, StepMock] | None = None,
        start: datetime = EPOCH,
        trace: Trace | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a simulation needs at least one worker")
        self.loop = loop
        self.trace = trace  # None unless a report is wanted: then every recording point records
        self.chooser = Chooser(seed, faults, suppress)
        self.chooser.max_faults = max_faults
        self.clock = VirtualClock(loop, start)
        self.ids = SeededIds(seed)
        self.ledger = ExecutionLedger()
        self.storage = FaultyStorage(self.chooser, self.ledger)
        self.storage.trace = trace
        self.broker = SimBroker(self)
        self.dispatch_steps = dispatch_steps
        self.inline_children = (seed // 2) % 2 == 0
        # Half the seeds with children here write a child's ending and its parent's write as
        # one atomic write (as SQLite does), half one after the other (the other backends).
        self.storage.joint_commits = (seed // 4) % 2 == 0
        self.lease_ttl = lease_ttl
        self.visibility_timeout = visibility_timeout.total_seconds()
        self.mocks = mocks if mocks is not None else {}
        self.generation = [0] * workers
        self.engines = [self._new_engine(i) for i in range(workers)]
        self.busy: dict[int, asyncio.Task[None]] = {}
        self._busy_with: dict[int, Message] = {}  # the message each busy worker handles
        self.wake = Wake(loop)
        self.errors: list[BaseException] = []
        self.crashes = 0
        self.deliveries = 0
        self.stalled: str | None = None  # why the last phase stopped early, if it did
        # The timer service also polls once at a seed-drawn time before the earliest timer is
        # due, as a real poll loop does, so a timer claimed early shows. Its own random stream:
        # the polls change none of the other choices of a seed.
        self._polls = random.Random(f"polls:{seed}")
        self._poll_for: float | None = None  # the due time the pending poll was drawn for
        self._poll_at: float | None = None
        self._progress = (-1, 0)  # (events recorded, deliveries) when events last grew
        self.serving_schedules = False  # in a ``run_for`` phase: schedules fire
        self._schedule_spins: list[float] = [-1.0, 0]  # (loop time, servings at that time)
        self.schedules_served_until: datetime | None = None  # the end of the last such phase

    # -- workers ------------------------------------------------------------------------------

    def _new_engine(self, index: int) -> Engine:
        self.generation[index] += 1
        options = EngineOptions(
            owner=f"worker-{index}.{self.generation[index]}",
            dispatch_steps=self.dispatch_steps,
            lease_ttl=self.lease_ttl,
            # As the Celery runtime does: a step's message may wait for a worker that long.
            dispatch_lease_ttl=timedelta(seconds=self.visibility_timeout),
            invoke_step=self._invoke_step,
            # Simulated workers have memory to spare: a sweep of thousands of concurrent runs
            # must not turn every activation into a replay from scratch. Crashes still empty
            # the cache, so cold replays keep being exercised.
            cache_size=SIM_CACHE_SIZE,
            # A blocked run stays so (the oracles report it): no retries to fast-forward through.
            blocked_retry=None,
            hook_key=self.ids.hook_key,
            # Half the seeds run a child awaited alone in its parent's activation, half send it
            # to the queue: both paths get explored (independent of dispatch_steps's bit).
            inline_children=self.inline_children,
        )
        engine = Engine(self.storage, self.clock, self.broker, ids=self.ids, options=options)
        engine.timer_listener = self._timer_set
        engine.schedule_listener = self._timer_set
        engine.hook_listener = self.ledger.announced
        return engine

    def _timer_set(self, run_id: str, fire_at: datetime) -> None:
        del run_id, fire_at
        self.wake.set()

    @property
    def any_engine(self) -> Engine:
        return self.engines[0]

    async def _invoke_step(
        self,
        definition: StepDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        info: StepInfo,
    ) -> Any:
        crash_point("before_step")
        delivery = _delivery.get()
        if delivery is not None:
            delivery.runs.add(info.run_id)  # (a child's step in its parent's activation)
        self.ledger.executed(info.run_id, info.step_id, info.attempt)
        if self.trace is not None:
            delivery = _delivery.get()
            worker = -1 if delivery is None else delivery.worker
            self.trace.step_body(worker, info.run_id, info.step_id, info.attempt)
        result = await self.run_body(definition, args, kwargs, info)
        crash_point("after_step")
        return result

    async def run_body(
        self,
        definition: StepDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        info: StepInfo,
    ) -> Any:
        """A step's body as this simulation runs it (its mock, if it has one), with no fault
        around it and not counted: what the reference model runs too."""
        mock = self.mocks.get(definition.name)
        if mock is not None:
            return await mock(definition, args, kwargs)
        if not definition.is_async:
            # A plain ``def`` body runs here, at once: in a thread of its own, as the runtimes
            # run it (``asyncio.to_thread``), it would end at a wall-clock moment, which virtual
            # time cannot wait for (the loop jumps on meanwhile: no two runs of a seed alike).
            args, kwargs = definition.validate(args, kwargs)
            return definition.func(*args, **kwargs)
        return await invoke_body(definition, args, kwargs, info)

    def _fate(self, index: int, run_id: str) -> Delivery:
        crash_at = None
        if self.chooser.fault("crash", "delivery"):
            crash_at = CRASH_POINTS[self.chooser.pick(len(CRASH_POINTS))]
            self.ledger.fault(run_id, "crash")
        return Delivery(index, crash_at, run_id)

    async def _handle(self, index: int, message: Message) -> None:
        engine = self.engines[index]
        fate = self._fate(index, message.run_id)
        _delivery.set(fate)
        trace = self.trace
        if trace is not None:
            trace.delivery_started(index, message, engine.options.owner, fate.crash_at)
        try:
            if message.kind == "activation":
                await engine.advance(message.run_id)
            else:
                await engine.execute_step(message.run_id, message.step_id, message.attempt)
            crash_point("before_ack")
        except WorkerCrash as crash:
            for run_id in fate.struck():  # fated, or lost in a step body
                self.ledger.fault(run_id, "crash")
            if trace is not None:
                trace.delivery_ended(index, "crash", crash.point)
                trace.crash(index, message.run_id, crash.point)
            self._crash(index, message)
        except (NonDeterminismError, CorruptHistoryError) as exc:
            self.errors.append(exc)  # (the run is blocked: the oracles report it too)
            if trace is not None:
                trace.delivery_ended(index, "error", f"{type(exc).__name__}: {exc}")
                trace.engine_error(index, message.run_id, exc)
        except (StorageFault, WorkflowError) as exc:
            # A failed task is retried by the broker a little later (Celery: autoretry).
            if trace is not None:
                trace.delivery_ended(index, "retried", f"{type(exc).__name__}: {exc}")
            self._redeliver(message, 1.0)
        except Exception as exc:  # noqa: BLE001 - an engine bug: the simulation reports it
            self.errors.append(exc)
            if trace is not None:
                trace.delivery_ended(index, "error", f"{type(exc).__name__}: {exc}")
                trace.engine_error(index, message.run_id, exc)
        else:
            if trace is not None:
                trace.delivery_ended(index, "ok")
        finally:
            if self._busy_with.get(index) is message:  # not restarted and given other work
                del self.busy[index], self._busy_with[index]
            self.wake.set()

    def _crash(self, index: int, message: Message | None) -> None:
        self.crashes += 1
        self.engines[index].evict()
        self.engines[index] = self._new_engine(index)
        if message is not None:
            self._redeliver(message, self.visibility_timeout)

    def micros_after(self, seconds: float) -> int:
        """Virtual time ``seconds`` from now, in whole microseconds (rounded up)."""
        return round(self.loop.time() * 1_000_000) + math.ceil(seconds * 1_000_000)

    def _redeliver(self, message: Message, after: float) -> None:
        message.visible_at = self.micros_after(after)
        if self.trace is not None:
            self.trace.redelivery(message, after)
        self.broker.push(message)

    def _restart_everything(self) -> None:
        """Every worker dies and the broker forgets its queue: storage is all that is left."""
        self.ledger.fault(None, "restart")
        if self.trace is not None:
            forgotten = len(self.broker.visible) + len(self.broker.waiting)
            self.trace.restart(len(self.engines), self.busy, forgotten)
        for index, task in list(self.busy.items()):
            task.cancel()
            self._crash(index, None)
        self.busy.clear()
        self._busy_with.clear()
        self.broker.clear()

    # -- the scheduler ------------------------------------------------------------------------

    def _stuck(self, max_time: float) -> bool:
        """Whether this phase must stop now: past ``max_time``, or no event recorded for
        ``STALL_DELIVERIES`` deliveries (``stalled`` says which)."""
        if self.loop.time() > max_time:
            return True  # even while messages keep coming (a run redelivered every second)
        recorded = self.storage.events_recorded
        if recorded != self._progress[0]:
            self._progress = (recorded, self.deliveries)
        elif self.deliveries - self._progress[1] >= STALL_DELIVERIES:
            self.stalled = (
                f"no progress: {self.deliveries - self._progress[1]} deliveries in a row recorded"
                f" no event (at {self.clock.now().isoformat()}); an activation that fails every"
                " time, or a timer that fires again at every claim?"
            )
            return True
        return False

    def _deliver_ready(self) -> bool:
        """Hand visible messages to idle workers; True if anything was delivered or dropped."""
        progressed = False
        idle = [i for i in range(len(self.engines)) if i not in self.busy]
        while idle:
            message = self.broker.take()
            if message is None:
                break
            progressed = True
            if self.chooser.fault("drop", message.kind):
                self.ledger.fault(message.run_id, "drop")
                if self.trace is not None:
                    self.trace.dropped(message)
                self._redeliver(message, self.visibility_timeout)
                continue
            if self.chooser.fault("duplicate", message.kind):
                self.ledger.fault(message.run_id, "duplicate")
                if self.trace is not None:
                    copied = f"{message.kind} message #{message.number}"
                    self.trace.duplicated(message.run_id, copied)
                self.broker.put(message.kind, message.run_id, message.step_id, message.attempt)
            index = idle.pop(self.chooser.pick(len(idle)))
            self.deliveries += 1
            self._busy_with[index] = message
            self.busy[index] = self.loop.create_task(
                self._handle(index, message), context=contextvars.copy_context()
            )
        return progressed

    async def _renew_active_leases(self) -> None:
        for engine in self.engines:
            await engine.renew_leases()

    async def _fire_timers(self) -> bool:
        if self._poll_at is not None and self._poll_at <= self.loop.time():
            self._poll_at = None  # this is the poll
        run_ids = await self.any_engine.fire_due_timers()
        recovered = await self.any_engine.recover_expired()
        if self.trace is not None:
            self.trace.timers_fired(run_ids)
            self.trace.recovered(recovered)
        served = await self._serve_schedules()
        return bool(run_ids or recovered or served)

    def _schedule_due(self) -> bool:
        if not self.serving_schedules:
            return False
        poll = self.storage.inner.next_schedule_poll()
        return poll is not None and poll <= self.clock.now()

    async def _serve_schedules(self) -> bool:
        """The schedulers' turn: a worker's engine serves the due schedules, fated like a
        delivery (it may crash around its schedule writes, storage may fail under it); with the
        ``duplicate`` fault two workers serve the same claimed schedules at once."""
        if not self._schedule_due():
            return False
        index = self.chooser.pick(len(self.engines))
        crash_at = None
        if self.chooser.fault("crash", "schedule"):
            crash_at = SCHEDULE_CRASH_POINTS[self.chooser.pick(len(SCHEDULE_CRASH_POINTS))]
        now = self.loop.time()
        if self._schedule_spins[0] == now:
            self._schedule_spins[1] += 1
            if self._schedule_spins[1] > MAX_SCHEDULE_SPINS:
                self.errors.append(
                    RuntimeError(
                        f"schedules were due again right after being served, {MAX_SCHEDULE_SPINS}"
                        f" times at {self.clock.now().isoformat()}: a poll time not moved past now"
                    )
                )
                self.serving_schedules = False
                return False
        else:
            self._schedule_spins = [now, 0]
        token = _delivery.set(Delivery(index, crash_at, ""))
        trace = self.trace
        try:
            if self.chooser.fault("duplicate", "schedule") and len(self.engines) > 1:
                # Two schedulers got the same schedules: one serves them now, the other holds
                # what it read and writes it after a stall (a paused VM, a long GC): its writes
                # must not undo what happened in between.
                self.ledger.fault(None, "duplicate")
                if trace is not None:
                    trace.duplicated("", "due schedules, served twice", SCHEDULER)
                claimed = await self.storage.claim_due_schedules(self.clock.now())
                stall = self.chooser.uniform(0.0, MAX_SCHEDULER_STALL)
                other = self.engines[(index + 1) % len(self.engines)]
                for schedule in claimed:
                    stale = schedule.copy()
                    await self.engines[index].serve_schedule(schedule)
                    self.loop.create_task(
                        self._serve_late(other, stale, stall), context=contextvars.Context()
                    )
            else:
                await self.engines[index].fire_due_schedules()
        except WorkerCrash as crash:
            # The scheduler died mid-serving: its claims run out and another serves them.
            self.ledger.fault(None, "crash")
            self.crashes += 1
            if trace is not None:
                trace.scheduler_crash(index, crash.point)
        except StorageFault as exc:
            # The tick fails; the claims run out and the next tick serves them.
            if trace is not None:
                trace.schedules_served(index, f"failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - an engine bug: the simulation reports it
            self.errors.append(exc)
            if trace is not None:
                trace.schedules_served(index, f"engine error: {type(exc).__name__}: {exc}")
        else:
            if trace is not None:
                trace.schedules_served(index, "ok")
        finally:
            _delivery.reset(token)
        return True

    async def _serve_late(self, engine: Engine, stale: Schedule, stall: float) -> None:
        await asyncio.sleep(stall)
        try:
            await engine.serve_schedule(stale)
        except (StorageFault, WorkflowError):
            pass
        except Exception as exc:  # noqa: BLE001 - an engine bug: the simulation reports it
            self.errors.append(exc)
        self.wake.set()

    def _next_wakeup(self) -> float | None:
        """Seconds of virtual time from the loop's epoch when something next comes due (while
        schedules are served, a schedule's poll time counts too)."""
        times = []
        poll = self.storage.inner.next_schedule_poll() if self.serving_schedules else None
        if poll is not None:
            times.append((poll - self.clock.start).total_seconds())
        broker_next = self.broker.next_visible()
        if broker_next is not None:
            times.append(broker_next)
        storage_next = self.storage.inner.next_wakeup()
        if storage_next is not None:
            due = (storage_next - self.clock.start).total_seconds()
            times.append(due)
            if due != self._poll_for:  # a new earliest wake-up: one poll somewhere before it
                now = self.loop.time()
                self._poll_for = due
                ahead = self._polls.uniform(0, due - now) if due > now else None
                # On the loop's clock, which counts whole microseconds: a poll between two
                # ticks would be waited for, and never reached.
                self._poll_at = None if ahead is None else self.micros_after(ahead) / 1_000_000
            if self._poll_at is not None:
                times.append(self._poll_at)
        return min(times, default=None)

    async def run_until_idle(self, max_time: float, schedules: bool = False) -> bool:
        """Run until nothing is left to do (True) or virtual time reaches ``max_time`` (False).

        Idle: no message, no busy worker, no timer or lease will come due. Runs waiting only on
        hooks nobody answers are idle. Schedules are served only with ``schedules`` (``run_for``:
        a month of schedules fires, also while no run is in progress between slots); without,
        the phase drains the runs in progress (``run_until_idle``: an active schedule would
        never let it end).
        """
        self.serving_schedules = schedules
        try:
            return await self._run_until_idle(max_time)
        finally:
            if schedules:
                self.schedules_served_until = self.clock.now()
            self.serving_schedules = False

    async def _run_until_idle(self, max_time: float) -> bool:
        idle_spins = 0
        served_at: float | None = None  # when timers were last served while workers were busy
        self._progress = (-1, 0)
        while True:
            # Drawn only while workers are busy: a restart of an idle world changes nothing,
            # and a draw that "fired" there counted as a fault (the seed looked faulty to the
            # oracles, and used up ``max_faults``) though nothing happened.
            if self.busy and self.chooser.fault("restart", "tick"):
                self._restart_everything()
            if self._stuck(max_time):
                return False
            if self._deliver_ready():
                idle_spins = 0
                await asyncio.sleep(0)
                continue
            if self.busy:
                # Timers and the sweeper do not wait for busy workers (a step may sleep for
                # hours of virtual time); the leases of runs being activated are renewed first,
                # as the runtimes' renewal loops do.
                now = self.loop.time()
                wakeup = self._next_wakeup()
                if wakeup is not None and wakeup <= now and served_at != now:
                    served_at = now
                    await self._renew_active_leases()
                    if await self._fire_timers():
                        continue
                    wakeup = self._next_wakeup()  # the renewals moved the lease expiries on
                if now >= max_time:
                    return False  # the bound holds while workers are busy too
                until = max_time if wakeup is None or wakeup <= now else min(wakeup, max_time)
                self.wake.clear()
                await self.wake.wait(until - now)
                continue
            # Nothing left at this instant but timers and leases that may have come due.
            due = self.storage.inner.next_wakeup()
            polling = self._poll_at is not None and self._poll_at <= self.loop.time()
            if (
                (due is not None and due <= self.clock.now()) or polling or self._schedule_due()
            ) and await self._fire_timers():
                idle_spins = 0
                continue
            wakeup = self._next_wakeup()
            if wakeup is None:
                return True
            if wakeup > max_time:
                if max_time > self.loop.time():
                    await asyncio.sleep(max_time - self.loop.time())  # time passes, uneventfully
                return False
            if wakeup > self.loop.time():
                idle_spins = 0
                self.wake.clear()
                await self.wake.wait(wakeup - self.loop.time())
            else:
                idle_spins += 1
                if idle_spins > 10_000:
                    raise SimulationDeadlock(
                        f"the simulation keeps finding work due at {self.clock.now()} that"
                        " never gets done (a timer or lease nobody can claim)"
                    )
                await asyncio.sleep(0)

    def stop_faults(self) -> None:
        self.chooser.faults = Faults.none()
        self.storage.active = False


__all__ = [
    "EPOCH",
    "Chooser",
    "Delivery",
    "FaultyStorage",
    "SimBroker",
    "StorageFault",
    "VirtualClock",
    "WorkerCrash",
    "World",
    "crash_point",
    "lose_worker",
    "scripted_action",
]
