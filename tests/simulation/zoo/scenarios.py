"""Scenarios of the bug zoo, and the seed search that runs one until the simulator objects.

A scenario starts workflows from ``workflows.py`` in a ``Simulation``, drives them (hook payloads,
runs to idle) and returns what *it* found wrong: a result other than the fault-free one the
workflow must return, a second payload accepted for one hook, a step that ran again after a later
step had started (its completion was lost). ``hunt`` runs a scenario seed after seed.

What counts as *caught* (``Catch.how``), checked in this order:

- ``oracle``: ``Simulation.check()`` raised ``SimulationFailure`` (replay, well-formed log,
  liveness, engine error, fault-free result, same-seed log);
- ``deadlock``: the simulation raised ``SimulationDeadlock`` (it waits for what nothing brings);
- ``escaped``: any other exception came out of the simulation or the scenario driver;
- ``scenario``: every oracle passed but the scenario's own checks failed.

A mutant that only hangs is not caught: liveness is bounded in virtual time (``LIVENESS``), so a
run that never finishes becomes a liveness violation instead of a hang. ``World.run_until_idle``
documents that bound but checks it only when no message is deliverable; a wedged run whose
activation fails and is redelivered every second keeps a worker busy forever and would spin past
it. ``bounded_liveness`` holds the world to its documented bound: past ``max_time`` it delivers
nothing more, so the phase ends as timed out.

Scenarios deliver hook payloads at idle points, never after ``wait_for_hook``: ``check()`` replays
the script with ``run_for`` slices of the *requested* length, but a slice can overshoot (a busy
worker finishes its step past the deadline), so a replay can reach the payload before the hook.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pyworkflow import (
    CalendarSpec,
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    ScheduleSpec,
    get_step_info,
)
from pyworkflow.model.events import EventType
from pyworkflow.model.exceptions import WorkflowError
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow_testing import (
    Faults,
    SimRun,
    Simulation,
    SimulationDeadlock,
    SimulationFailure,
    lose_worker,
)
from pyworkflow_testing.world import World
from tests.simulation.zoo import workflows as wf

# Every phase of every scenario goes idle within minutes of virtual time under ten faults
# (visibility timeout 60s, lease 30s): the longest phase in 2,000 seeds of each took 4m48s. Kept
# short on purpose: a wedged run is retried every second by the broker until this bound, and
# every expiry of its timer claim adds one more message doing so.
LIVENESS = timedelta(minutes=15)
ORDER_RUNS = 2
STAMP_RUNS = 3
FRAGILE_LOSSES = 3  # the default max_recovery_attempts: the most losses in a row a run survives


class Ledger:
    """Every execution of a step body in one simulation, in the order they began."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []  # (run_id, step_id, attempt)

    def mock_all(self, sim: Simulation) -> None:
        """Replace each zoo step's body by one that records its execution, then runs the body."""
        for step, body in wf.STEP_BODIES.items():
            sim.mock_step(step, side_effect=self._recording(body))

    def _recording(self, body: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def recorded(*args: Any, **kwargs: Any) -> Any:
            info = get_step_info()
            self.calls.append((info.run_id, info.step_id, info.attempt))
            return await body(*args, **kwargs)

        return recorded

    def step_ids(self, run_id: str) -> set[str]:
        return {step_id for rid, step_id, _ in self.calls if rid == run_id}

    def reruns_after_later_steps(self, run_id: str) -> list[str]:
        """In a sequential workflow a step never runs again once a later step has begun: its
        completion was durable before the next side effect (the engine's commit rule)."""
        problems: list[str] = []
        latest: tuple[int, str] | None = None
        for rid, step_id, attempt in self.calls:
            if rid != run_id:
                continue
            position = int(step_id.rpartition(":")[2])
            if latest is not None and position < latest[0]:
                problems.append(
                    f"{step_id} attempt {attempt} ran again after {latest[1]} had begun"
                )
            if latest is None or position > latest[0]:
                latest = (position, step_id)
        return problems


Driver = Callable[[Simulation, Ledger], Awaitable[list[str]]]


@dataclass(frozen=True)
class Scenario:
    """One way of driving zoo workflows through a simulation."""

    name: str
    drive: Driver
    workers: int = 3
    dispatch_steps: bool | None = None  # None: the seed decides (odd seeds dispatch)
    faults: Faults = field(default_factory=Faults.all)
    start: datetime | None = None  # where virtual time begins (None: the simulator's default)
    # The share of the zoo's clean seeds (``ZOO_SEEDS``) this scenario runs: a long one (days
    # of schedules, hundreds of runs a seed) takes fewer, so the suite stays fast.
    clean_share: float = 1.0

    def simulation(self, seed: int) -> Simulation:
        return Simulation(
            seed,
            self.faults,
            self.workers,
            dispatch_steps=self.dispatch_steps,
            liveness=LIVENESS,
            start=self.start,
            reproduce=f"await run_seed(SCENARIOS[{self.name!r}], {seed})  # zoo/scenarios.py",
        )


async def _result_problems(run: SimRun, expected: Any) -> list[str]:
    try:
        result = await run.result()
    except (WorkflowError, RuntimeError) as exc:
        if await _budget_spent_on_faults(run):
            return []  # the ending production reaches too (the fault-free comparison's excuse)
        return [f"run {run.index} ended with {type(exc).__name__}: {exc}; expected {expected!r}"]
    if result != expected:
        return [f"run {run.index} returned {result!r}; expected {expected!r}"]
    return []


async def _budget_spent_on_faults(run: SimRun) -> bool:
    """Whether ``run`` failed for losing its worker (or a child it awaited losing its worker)
    more than ``max_recovery_attempts`` times where every loss the engine counted can be laid
    on a fault that struck it: what ``check()`` excuses too."""
    sim = run.sim
    return run.index in await sim._call(sim._budget_spent_on_faults())


async def _to_idle(sim: Simulation) -> bool:
    """Run to idle; False when the liveness bound ran out (driving on would only repeat it)."""
    await sim.run_until_idle()
    return not sim.timed_out


def _resume_again(sim: Simulation, run: SimRun, payload: Any) -> list[str]:
    """The approval link is clicked a second time: the engine must refuse the payload."""

    async def click() -> list[str]:
        engine = sim.world.any_engine
        hooks = await sim.world.storage.inner.list_hooks(run.run_id)
        tokens = [await engine.token_of(hook) for hook in hooks if hook.name == "approval"]
        try:
            await engine.receive_hook(tokens[0], payload)
        except HookAlreadyReceivedError:
            return []
        return [f"run {run.index}: a second payload for one hook was accepted"]

    return sim.run_sync(click())


async def drive_order(sim: Simulation, ledger: Ledger) -> list[str]:
    problems: list[str] = []
    runs = [await sim.start(wf.order, f"item-{i}") for i in range(ORDER_RUNS)]
    # To idle, not ``wait_for_hook``: the runs block on their hook either way, and an idle point
    # is where ``check()``'s replays of the script are sure to be too (see the module docstring).
    if not await _to_idle(sim):
        return []
    for run in runs:
        try:
            await sim.resume_hook(run, "approval", {"amount": 10 + run.index})
        except HookNotFoundError:
            problems.append(f"run {run.index} never asked for approval")
            continue
        problems += _resume_again(sim, run, {"amount": 99})
    await sim.run_until_idle()
    for run in runs:
        expected = wf.expected_order(f"item-{run.index}", 10 + run.index)
        problems += await _result_problems(run, expected)
        problems += ledger.reruns_after_later_steps(run.run_id)
    return problems


async def drive_fanout(sim: Simulation, ledger: Ledger) -> list[str]:
    del ledger  # parallel steps: no order to check
    run = await sim.start(wf.fanout, "fan")
    await sim.run_until_idle()
    return await _result_problems(run, wf.expected_fanout("fan"))


async def drive_race(sim: Simulation, ledger: Ledger) -> list[str]:
    del ledger  # the winner decides the steps: no order to check
    runs = [await sim.start(wf.race, f"race-{i}") for i in range(2)]
    await sim.run_until_idle()
    problems: list[str] = []
    for run in runs:
        problems += await _result_problems(run, wf.expected_race(f"race-{run.index}"))
    return problems


async def drive_stamps(sim: Simulation, ledger: Ledger) -> list[str]:
    runs = [await sim.start(wf.stamps) for _ in range(STAMP_RUNS)]
    await sim.run_until_idle()
    problems: list[str] = []
    wanted = {stamp.partition("@")[2] for stamp in wf.EXPECTED_STAMPS}
    for run in runs:
        problems += await _result_problems(run, wf.EXPECTED_STAMPS)
        executed = ledger.step_ids(run.run_id)
        if executed != wanted:
            problems.append(
                f"run {run.index}: step bodies ran for {sorted(executed)},"
                f" expected {sorted(wanted)}"
            )
        problems += ledger.reruns_after_later_steps(run.run_id)
    return problems


async def drive_long(sim: Simulation, ledger: Ledger) -> list[str]:
    del ledger  # the simulation's own execution ledger counts repeats
    runs = [await sim.start(wf.long, f"long-{i}") for i in range(2)]
    await sim.run_until_idle()
    problems: list[str] = []
    for run in runs:
        problems += await _result_problems(run, f"long-{run.index} warm, long-{run.index} slow")
    return problems


async def drive_twins(sim: Simulation, ledger: Ledger) -> list[str]:
    del ledger  # parallel steps: no order to check
    run = await sim.start(wf.twins, "t")
    await sim.run_until_idle()
    return await _result_problems(run, wf.expected_twins("t"))


async def _refused(sim: Simulation, token: str, payload: Any, why: str) -> list[str]:
    """A payload the engine must refuse, leaving no trace in the log."""
    try:
        await sim.world.any_engine.receive_hook(token, payload)
    except (HookNotFoundError, HookAlreadyReceivedError, HookExpiredError):
        return []
    return [f"a payload {why} was accepted"]


async def drive_onboard(sim: Simulation, ledger: Ledger) -> list[str]:
    """Hooks answered only with the token ``on_created`` was handed: the first run's twice
    (two starts with one idempotency key give one run), the second run's never, then late: after
    it expired, and again after the run ended."""
    del ledger
    first = await sim.start(wf.onboard, "ada", idempotency_key="signup-ada")
    again = await sim.start(wf.onboard, "ada", idempotency_key="signup-ada")
    late = await sim.start(wf.onboard, "bob", wf.ACTIVATE_TIMEOUT)
    problems = [] if again is first else ["one idempotency key gave two runs"]
    if not await _to_idle(sim):
        return problems
    try:
        await sim.resume_hook(first, "activate", {"via": "link"})
    except HookNotFoundError as exc:
        if await _budget_spent_on_faults(first):
            return problems  # it failed before it waited: the faults cost it its budget
        return [*problems, f"run {first.index} cannot be answered: {exc}"]
    await sim.run_until_idle()
    announced = sim.world.ledger.announcements
    tokens = {(run_id, hook_id): sent[-1] for (run_id, hook_id), sent in announced.items()}
    for (run_id, _), token in tokens.items():
        if run_id == first.run_id:  # clicked once more, after the run went on
            problems += sim.run_sync(_refused(sim, token, {"via": "again"}, "sent twice"))
    problems += await _result_problems(first, wf.expected_onboard("ada", "link"))
    problems += await _result_problems(late, wf.expected_onboard("bob", "expired"))
    for (run_id, _), token in tokens.items():
        if run_id == late.run_id:  # the link is clicked after the hook expired and the run ended
            problems += sim.run_sync(_refused(sim, token, {"via": "late"}, "after expiry"))
    announced_late = any(run_id == late.run_id for run_id, _ in tokens)
    if not announced_late and not await _budget_spent_on_faults(late):
        problems.append(f"run {late.index}: on_created was never called")
    return problems


async def drive_fragile(sim: Simulation, ledger: Ledger) -> list[str]:
    """The step's first three executions take their worker down: three losses in a row,
    within the default recovery budget (3), so the fourth execution finishes the run."""
    del ledger
    losses: Counter[tuple[int, str]] = Counter()

    async def fragile_body(label: str) -> str:
        # Counted per event loop: check()'s reruns (each on its own loop) and the reference
        # model see the same three losses.
        key = (id(asyncio.get_running_loop()), get_step_info().run_id)
        losses[key] += 1
        if losses[key] <= FRAGILE_LOSSES:
            lose_worker()
        return await wf.sturdy_body(label)

    sim.mock_step(wf.sturdy, side_effect=fragile_body)
    run = await sim.start(wf.fragile, "f")
    await sim.run_until_idle()
    return await _result_problems(run, "f sturdy")


async def drive_checkout(sim: Simulation, ledger: Ledger) -> list[str]:
    del ledger
    run = await sim.start(wf.checkout, "cart")
    await sim.run_until_idle()
    return await _result_problems(run, "declined: card declined for cart")


async def drive_shielded(sim: Simulation, ledger: Ledger) -> list[str]:
    """Cancelled two minutes into the shielded five: the shield's step runs, the next does not,
    and the run ends cancelled."""
    run = await sim.start(wf.shielded, "s")
    await sim.run_for(timedelta(minutes=2))
    if not await sim.cancel(run, reason="zoo"):
        return [f"run {run.index} had finished before its cancellation"]
    await sim.run_until_idle()
    problems: list[str] = []
    status = await run.status()
    if status is not RunStatus.CANCELLED:
        problems.append(f"run {run.index} ended {status.value}, not cancelled")
    executed = ledger.step_ids(run.run_id)
    if executed != {"step:zoo_stamp:2"}:
        problems.append(f"run {run.index}: step bodies ran for {sorted(executed)}")
    return problems


async def _children(sim: Simulation, parent_id: str) -> list[WorkflowRun]:
    runs, _ = await sim._call(sim.world.storage.inner.list_runs(limit=1000))
    return sorted((r for r in runs if r.parent_run_id == parent_id), key=lambda r: r.run_id)


async def drive_family(sim: Simulation, ledger: Ledger) -> list[str]:
    """Children in parallel, two of them the same call, and one left waiting on a hook: the
    parent's result, one run per child, and the waiting child cancelled when the parent ends."""
    run = await sim.start(wf.family, "f")
    if not await _to_idle(sim):
        return []
    problems = await _result_problems(run, wf.expected_family("f"))
    children = await _children(sim, run.run_id)
    if len(children) != 4:
        problems.append(f"run {run.index} has {len(children)} children, not 4")
    statuses = sorted(child.status.value for child in children)
    if statuses != ["cancelled", "completed", "completed", "completed"]:
        problems.append(f"run {run.index}: its children ended {statuses}")
    del ledger
    return problems


_BUDGET_SPENT = "(max_recovery_attempts=3)"


async def drive_here(sim: Simulation, ledger: Ledger) -> list[str]:
    """Children awaited alone (half the seeds run those that end at once in the parent's
    activation): the parent's result, and one run per child (a continued one: two)."""
    run = await sim.start(wf.here, "h")
    if not await _to_idle(sim) or await _budget_spent_on_faults(run):
        return []  # (a family the faults cost its recovery budget ends early, as in production)
    problems = await _result_problems(run, wf.expected_here("h"))
    children = await _children(sim, run.run_id)
    if not problems and len(children) != 8:
        problems.append(f"run {run.index} has {len(children)} children, not 8")
    del ledger
    return problems


async def drive_tree(sim: Simulation, ledger: Ledger) -> list[str]:
    """Cancelled an hour into its week: the parent and both children end cancelled, and each
    child's shielded cleanup step is recorded once."""
    run = await sim.start(wf.tree, "t")
    await sim.run_for(timedelta(hours=1))
    if not await sim.cancel(run, reason="zoo"):
        return [f"run {run.index} had finished before its cancellation"]
    if not await _to_idle(sim):
        return []
    problems: list[str] = []
    if (status := await run.status()) is not RunStatus.CANCELLED:
        problems.append(f"run {run.index} ended {status.value}, not cancelled")
    children = await _children(sim, run.run_id)
    # A child the faults cost its worker too often fails by its recovery budget (the ending
    # production reaches too, and the fault-free comparison excuses for script runs).
    children = [c for c in children if not (c.error or "").endswith(_BUDGET_SPENT)]
    if {child.status for child in children} - {RunStatus.CANCELLED}:
        problems.append(f"run {run.index}: children {[(c.run_id, c.status) for c in children]}")
    for child in children:
        events = await sim._call(sim.world.storage.inner.get_events(child.run_id))
        cleanups = [e for e in events if e.type is EventType.STEP_COMPLETED]
        if len(cleanups) != 1:
            problems.append(f"child {child.run_id}: {len(cleanups)} cleanups recorded, not 1")
        if not ledger.step_ids(child.run_id):
            problems.append(f"child {child.run_id}: its cleanup never ran")
    return problems


async def drive_chain(sim: Simulation, ledger: Ledger) -> list[str]:
    """Continues as new a few times: one result for the chain, one run per generation."""
    run = await sim.start(wf.chain, 0)
    if not await _to_idle(sim):
        return []
    problems = await _result_problems(run, wf.expected_chain())
    runs, _ = await sim._call(sim.world.storage.inner.list_runs(limit=1000))
    generations = [r for r in runs if r.workflow_name == "zoo_chain"]
    if len(generations) != wf.CHAIN_LENGTH + 1:
        problems.append(f"the chain has {len(generations)} runs, not {wf.CHAIN_LENGTH + 1}")
    del ledger
    return problems


PRAGUE = ZoneInfo("Europe/Prague")
# Two days before Prague's clocks jump from 02:00 to 03:00 (2030-03-31).
BEFORE_DST = datetime(2030, 3, 29, 6, 0, tzinfo=UTC)


def _local(moment: datetime) -> str:
    return moment.astimezone(PRAGUE).strftime("%H:%M")


async def drive_schedules(sim: Simulation, ledger: Ledger) -> list[str]:
    """Four schedules across a daylight-saving change, each with another overlap policy, with
    pause, resume, trigger and a backfill (twice) of the slots missed while paused between
    stretches of time; the oracles check every slot
    and counter. Here: the daily 09:00 Prague run fires at 09:00 local on both sides of the
    change, and the 02:30 calendar slot that does not exist on the change's day fires once, at
    03:00."""
    daily = await sim.create_schedule(
        wf.tick, ScheduleSpec(cron="0 9 * * *", timezone="Europe/Prague"), "daily"
    )
    half = await sim.create_schedule(
        wf.tick,
        ScheduleSpec(cron="0 */2 * * *", timezone="Europe/Prague"),
        "half",
        overlap_policy=sim.seed % 2 and "buffer_one" or "skip",
    )
    jittery = await sim.create_schedule(
        wf.tick_failing,
        ScheduleSpec(interval=timedelta(minutes=90), jitter=timedelta(minutes=30)),
        "jittery",
        overlap_policy=("buffer_all", "allow_all", "cancel_other")[sim.seed % 3],
    )
    night = await sim.create_schedule(
        wf.tick,
        ScheduleSpec(calendar=CalendarSpec(hour=2, minute=30), timezone="Europe/Prague"),
        "night",
        overlap_policy="cancel_other",
    )
    await sim.run_for(timedelta(days=1, hours=2))
    await sim.pause_schedule(half.schedule_id)
    await sim.run_for(timedelta(hours=3))
    await sim.resume_schedule(half.schedule_id)
    await sim.trigger_schedule(daily.schedule_id)
    await sim.run_for(timedelta(days=1, hours=12))
    # The slots of "half" missed while it was paused, run after all: one of them (it fires
    # every two hours; paused from 08:00 to 11:00 UTC).
    paused_from = sim.epoch + timedelta(days=1, hours=2, minutes=1)
    paused_until = paused_from + timedelta(hours=2, minutes=58)
    first = await sim.backfill_schedule(half.schedule_id, paused_from, paused_until)
    again = await sim.backfill_schedule(half.schedule_id, paused_from, paused_until)
    await sim.run_for(timedelta(hours=6))
    # The zoo's liveness bound is shorter than a tick: stop the schedules, let the runs end.
    for schedule in (daily, half, jittery):
        await sim.pause_schedule(schedule.schedule_id)
    await sim.delete_schedule(night.schedule_id)
    await sim.run_for(timedelta(hours=4))
    if not await _to_idle(sim):
        return []
    problems = []
    if first != again or len(first) != 1:
        problems.append(f"two backfills of one window gave {first} and {again}")
    runs = await sim.list_runs()
    daily_runs = [r for r in runs if r.context.get("schedule_id") == daily.schedule_id]
    scheduled = [r for r in daily_runs if not r.context.get("triggered")]
    times = sorted(_local(datetime.fromisoformat(r.context["scheduled_time"])) for r in scheduled)
    if times != ["09:00"] * 3:
        problems.append(f"the daily 09:00 Prague schedule ran at {times} (local)")
    night_runs = [r for r in runs if r.context.get("schedule_id") == night.schedule_id]
    nights = sorted(datetime.fromisoformat(r.context["scheduled_time"]) for r in night_runs)
    if [_local(moment) for moment in nights] != ["02:30", "03:00", "02:30"]:
        problems.append(f"the 02:30 Prague calendar ran at {[_local(m) for m in nights]} (local)")
    del ledger
    return problems


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("order", drive_order),
        Scenario("order_inline", drive_order, dispatch_steps=False),
        Scenario("order_dispatched", drive_order, dispatch_steps=True),
        Scenario("fanout_dispatched", drive_fanout, dispatch_steps=True),
        Scenario("race_dispatched", drive_race, dispatch_steps=True),
        Scenario("stamps", drive_stamps),
        Scenario("stamps_inline", drive_stamps, dispatch_steps=False),
        Scenario("long_inline", drive_long, dispatch_steps=False),
        Scenario("twins", drive_twins),
        Scenario("onboard", drive_onboard),
        Scenario("fragile_inline", drive_fragile, dispatch_steps=False, faults=Faults.none()),
        Scenario("checkout", drive_checkout),
        Scenario("shielded", drive_shielded),
        Scenario("family", drive_family),
        Scenario("here", drive_here),
        Scenario("tree", drive_tree),
        Scenario("chain", drive_chain),
        Scenario("schedules", drive_schedules, start=BEFORE_DST, clean_share=0.25),
    )
}


@dataclass(frozen=True)
class Catch:
    """The first seed at which a scenario was caught, how, and the first thing found."""

    seed: int
    how: str  # "oracle" | "deadlock" | "escaped" | "scenario"
    detail: str

    def __str__(self) -> str:
        return f"seed {self.seed} ({self.how}): {self.detail}"


@contextmanager
def bounded_liveness() -> Iterator[None]:
    """Hold ``World.run_until_idle`` to its ``max_time`` even while workers never go idle."""
    run_until_idle, deliver_ready = World.run_until_idle, World._deliver_ready
    deadlines: dict[int, float] = {}

    async def run_until(self: World, max_time: float, schedules: bool = False) -> bool:
        deadlines[id(self)] = max_time
        try:
            return await run_until_idle(self, max_time, schedules)
        finally:
            deadlines.pop(id(self), None)

    def deliver_before_deadline(self: World) -> bool:
        if self.loop.time() > deadlines.get(id(self), float("inf")):
            return False  # past the bound: let the world run dry and report the time out
        return deliver_ready(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(World, "run_until_idle", run_until)
        patch.setattr(World, "_deliver_ready", deliver_before_deadline)
        yield


async def run_seed(scenario: Scenario, seed: int) -> Catch | None:
    """Run ``scenario`` at ``seed``; what caught it, or None when every check passed."""
    with bounded_liveness():
        return await _run_seed(scenario, seed)


async def _run_seed(scenario: Scenario, seed: int) -> Catch | None:
    sim = scenario.simulation(seed)
    ledger = Ledger()
    ledger.mock_all(sim)
    try:
        try:
            problems = await scenario.drive(sim, ledger)
            sim.check()
        except SimulationFailure as failure:
            return Catch(seed, "oracle", failure.violations[0])
        except SimulationDeadlock as exc:
            return Catch(seed, "deadlock", str(exc))
        except Exception as exc:  # noqa: BLE001 - anything escaping the simulation is a catch
            return Catch(seed, "escaped", f"{type(exc).__name__}: {exc}")
        if problems:
            return Catch(seed, "scenario", problems[0])
        return None
    finally:
        sim.close()


async def hunt(scenario: Scenario, seeds: Iterable[int]) -> Catch | None:
    """The first seed of ``seeds`` at which ``scenario`` is caught, or None."""
    for seed in seeds:
        catch = await run_seed(scenario, seed)
        if catch is not None:
            return catch
    return None
