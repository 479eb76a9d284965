"""The simulator run over the engine itself: seeds, faults, oracles, virtual time, mocks."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.queues
import random as stdlib_random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from examples.onboarding import onboarding
from pyworkflow import (
    CancellationError,
    Event,
    EventType,
    HookNotFoundError,
    RetryableError,
    RunStatus,
    WorkflowRun,
    hook,
    now,
    shield,
    sleep,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow_testing import Faults, Simulation, SimulationFailure
from pyworkflow_testing.oracles import well_formed


async def run_onboarding(sim: Simulation, answer: bool) -> object:
    run = await sim.start(onboarding, user_id="u1")
    if answer and await sim.wait_for_hook(run, "activation", within=timedelta(minutes=30)):
        await sim.resume_hook(run, "activation", {"via": "sim"})
    await sim.run_until_idle()
    return await run.result()


@pytest.mark.parametrize("seed", range(40))
async def test_onboarding_passes_every_oracle_with_every_fault(seed: int) -> None:
    sim = Simulation(seed=seed, faults=Faults.all(), workers=3)
    try:
        result = await run_onboarding(sim, answer=seed % 3 != 0)
        assert "u1: account acct-u1 created" in str(result)
        sim.check()
    finally:
        sim.close()


async def test_a_day_of_sleeps_takes_a_virtual_day() -> None:
    @workflow(name="sim_daily")
    async def daily() -> int:
        for _ in range(24):
            await sleep("1h")
        return 24

    sim = Simulation(seed=1)
    try:
        run = await sim.start(daily)
        await sim.run_until_idle()
        assert await run.result() == 24
        assert sim.elapsed == timedelta(days=1)
        sim.check()
    finally:
        sim.close()


async def test_same_seed_same_log_and_different_seeds_differ() -> None:
    hashes = []
    for seed in (5, 5, 6):
        sim = Simulation(seed=seed, faults=Faults.all(scale=3), workers=2)
        try:
            await run_onboarding(sim, answer=True)
            hashes.append(sim.log_hash())
        finally:
            sim.close()
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]  # run ids and fault schedules come from the seed


@step(name="sim_flip_a")
async def flip_a() -> str:
    return "a"


@step(name="sim_flip_b")
async def flip_b() -> str:
    return "b"


@workflow(name="sim_coin_flip")
async def coin_flip() -> str:
    first = await flip_a() if stdlib_random.random() < 0.5 else await flip_b()
    await sleep("1m")
    return first


async def test_random_branch_in_workflow_code_fails_with_seed_and_reproduce_line() -> None:
    failures = []
    for seed in range(10):
        sim = Simulation(seed=seed, workers=1, reproduce=f"pyworkflow simulate x:y --seed {seed}")
        try:
            await sim.start(coin_flip)
            await sim.run_until_idle()
            sim.check()
        except SimulationFailure as failure:
            failures.append(failure)
        finally:
            sim.close()
    assert failures, "ten seeds never caught a coin flip in workflow code"
    failure = failures[0]
    text = str(failure)
    assert f"seed {failure.seed} failed" in text
    assert f"pyworkflow simulate x:y --seed {failure.seed}" in text
    assert "not deterministic" in text and "expected:" in text and "actual:" in text


deployed = {"version": 1}


@workflow(name="sim_changed_under_its_run")
async def changed_under_its_run() -> str:
    first = await flip_a() if deployed["version"] == 1 else await flip_b()
    await sleep("1m")
    return first


async def test_a_run_stopped_by_a_divergence_is_reported_blocked_with_the_diff() -> None:
    deployed["version"] = 1
    sim = Simulation(seed=3, workers=2)
    try:
        run = await sim.start(changed_under_its_run)
        await sim.run_for(timedelta(seconds=30))  # the run sleeps
        deployed["version"] = 2  # a deploy changed the code under it
        for engine in sim.world.engines:
            engine.evict()  # (the new workers have nothing cached)
        await sim.run_until_idle()
        with pytest.raises(SimulationFailure) as info:
            sim.check()
        record = await sim.world.storage.inner.get_run(run.run_id)
    finally:
        deployed["version"] = 1
        sim.close()
    assert record.status.value == "suspended" and record.blocked is not None
    text = str(info.value)
    assert "the run is blocked (non_determinism)" in text
    assert "expected: step 'sim_flip_a'" in text and "actual:   step 'sim_flip_b'" in text


@step(name="sim_charge", max_retries=5, retry_delay="1s")
async def charge(amount: int) -> str:
    raise RuntimeError("the real payment provider must not be called in a simulation")


@workflow(name="sim_checkout")
async def checkout(amount: int) -> str:
    receipt = await charge(amount)
    decision = await hook("review")
    return f"{receipt} {decision['ok']}"


async def test_mock_step_and_resume_hook() -> None:
    sim = Simulation(seed=3, faults=Faults.only("crash", "duplicate"), workers=2)
    try:
        calls: list[int] = []
        sim.mock_step(charge, side_effect=lambda amount: calls.append(amount) or f"paid {amount}")
        run = await sim.start(checkout, 42)
        await sim.run_until_idle()
        assert (await run.status()).value == "suspended"
        await sim.resume_hook(run, "review", {"ok": True})
        await sim.run_until_idle()
        assert await run.result() == "paid 42 True"
        assert calls and set(calls) == {42}
        sim.check()
    finally:
        sim.close()


async def test_a_hook_payload_delivered_twice_at_once_is_received_once() -> None:
    # At this seed the payload comes twice (and so do many messages); the two receipts run
    # concurrently on two workers and interleave between their reads and commits.
    sim = Simulation(seed=0, faults="duplicate=0.5", workers=2, max_faults=None)
    try:
        sim.mock_step(charge, returns="paid")
        run = await sim.start(checkout, 7)
        await sim.run_until_idle()
        await sim.resume_hook(run, "review", {"ok": True})
        assert any(
            kind == "duplicate" and detail == "hook" for _, kind, detail in sim.faults_injected
        )
        await sim.run_until_idle()
        assert await run.result() == "paid True"
        received = [e for e in await run.events() if e.type is EventType.HOOK_RECEIVED]
        assert len(received) == 1
        sim.check()
    finally:
        sim.close()


async def test_mocked_failures_are_retried_on_virtual_time() -> None:
    sim = Simulation(seed=0)
    try:
        sim.mock_step(charge, raises=RetryableError("busy", retry_after="1h"))
        run = await sim.start(checkout, 1)
        await sim.run_until_idle()
        with pytest.raises(RetryableError):
            await run.result()
        assert sim.elapsed == timedelta(hours=5)  # five retries, an hour apart
        sim.check()
    finally:
        sim.close()


def test_faults_parse() -> None:
    assert Faults.parse("all").enabled and not Faults.parse("none").enabled
    assert Faults.parse("crash,drop=0.5").rates == {"crash": 0.05, "drop": 0.5}
    with pytest.raises(ValueError, match="unknown fault 'boom'"):
        Faults.parse("crash,boom")
    with pytest.raises(ValueError, match="must be within 0..1"):
        Faults.parse("drop=1.5")
    # Every copy may be duplicated again: a rate of 1 would never stop making copies.
    with pytest.raises(ValueError, match="'duplicate' must be at most 0.9"):
        Faults.parse("duplicate=1")
    assert Faults.all(scale=100).rates["duplicate"] == 0.9


async def test_simulation_methods_work_from_any_loop() -> None:
    sim = Simulation(seed=9)
    try:
        runs = await asyncio.gather(*(sim.start(onboarding, user_id=f"u{i}") for i in range(3)))
        await sim.run_until_idle()
        assert [r.index for r in runs] == [0, 1, 2]
        sim.check()
    finally:
        sim.close()


import datetime as dt_module  # noqa: E402 - the point: module-level names user code binds
import time as time_module  # noqa: E402


@step(name="sim_clock_reader")
async def read_clocks() -> list[float]:
    before = time_module.time()
    await asyncio.sleep(3600)  # asyncio.sleep in step code advances virtual time too
    return [
        before,
        time_module.time(),
        datetime.now(dt_module.UTC).timestamp(),
        dt_module.datetime.utcnow().replace(tzinfo=dt_module.UTC).timestamp(),
    ]


@workflow(name="sim_clock_workflow")
async def clock_workflow() -> list[float]:
    await sleep("1d")
    return await read_clocks()


async def test_user_code_sees_virtual_time() -> None:
    from pyworkflow_testing.world import EPOCH

    sim = Simulation(seed=2)
    try:
        run = await sim.start(clock_workflow)
        await sim.run_until_idle()
        before, after, dt_now, utc_now = await run.result()
        day = (EPOCH + timedelta(days=1)).timestamp()
        assert before == day
        assert after == dt_now == utc_now == day + 3600
        assert sim.elapsed == timedelta(days=1, hours=1)
    finally:
        sim.close()
    # outside the simulation the real clocks are back
    assert abs(time_module.time() - datetime.now().timestamp()) < 60
    assert datetime is dt_module.datetime and time_module.time.__module__ == "time"


def test_well_formed_flags_an_attempt_started_twice_without_a_lost_worker() -> None:
    at = datetime(2026, 1, 1, tzinfo=dt_module.UTC)

    def log(*middle: tuple[EventType, dict]) -> list[Event]:
        kinds = [(EventType.WORKFLOW_STARTED, {"args": "[]", "kwargs": "{}"}), *middle]
        return [
            Event("r", kind, data, timestamp=at, sequence=n)
            for n, (kind, data) in enumerate(kinds, 1)
        ]

    started = (EventType.STEP_STARTED, {"command_id": "step:a:1", "step_name": "a", "attempt": 1})
    lost = (EventType.WORKFLOW_INTERRUPTED, {"recovery_attempt": 1})
    twice = log(started, started)
    again_after_loss = log(started, lost, started)

    def row(events: list[Event]) -> WorkflowRun:
        return WorkflowRun(run_id="r", workflow_name="w", last_sequence=len(events))

    assert well_formed(row(twice), twice) == [
        "step:a:1 attempt 1 started twice (second at event 3) with no lost worker in between"
    ]
    assert well_formed(row(again_after_loss), again_after_loss) == []


@step(name="sim_slow_report")
async def slow_report() -> str:
    await asyncio.sleep(2 * 3600)  # two virtual hours in the step body
    return "report"


@workflow(name="sim_slow_workflow")
async def slow_workflow() -> str:
    return await slow_report()


@workflow(name="sim_short_nap")
async def short_nap() -> str:
    await sleep("10m")
    return "rested"


@pytest.mark.parametrize("dispatch", [False, True])
async def test_timers_fire_and_leases_hold_while_a_worker_is_busy(dispatch: bool) -> None:
    from pyworkflow_testing.world import EPOCH

    # Inline, the activation running the step renews the run's lease; dispatched, the worker
    # executing the attempt does (the run is leased to its step executors meanwhile).
    sim = Simulation(seed=3, workers=2, dispatch_steps=dispatch)
    try:
        slow = await sim.start(slow_workflow)
        nap = await sim.start(short_nap)
        await sim.run_until_idle()
        assert await slow.result() == "report"
        assert await nap.result() == "rested"
        woke = next(e for e in await nap.events() if e.type is EventType.SLEEP_COMPLETED)
        # On time, not when the busy worker finished two hours later.
        assert woke.timestamp == EPOCH + timedelta(minutes=10)
        # The slow step outlived its 30s lease many times over: renewed, never taken over.
        slow_types = [e.type for e in await slow.events()]
        assert EventType.WORKFLOW_INTERRUPTED not in slow_types
        assert slow_types.count(EventType.STEP_STARTED) == 1
        sim.check()
    finally:
        sim.close()


async def test_run_for_stops_at_its_bound_while_a_worker_is_busy() -> None:
    sim = Simulation(seed=4)
    try:
        slow = await sim.start(slow_workflow)
        await sim.run_for(timedelta(hours=1))
        assert sim.elapsed == timedelta(hours=1)
        assert not (await slow.record()).status.is_terminal
        await sim.run_until_idle()
        assert await slow.result() == "report"
    finally:
        sim.close()


def test_a_simulation_driven_from_inside_a_simulation_is_refused() -> None:
    sim = Simulation(seed=0)
    other = Simulation(seed=1)

    async def nested() -> None:
        other.run_sync(asyncio.sleep(0))  # would wait for the thread it runs on

    try:
        with pytest.raises(RuntimeError, match="inside a simulation"):
            sim.run_sync(nested())
        assert other.log_hash() == Simulation(seed=1).log_hash()  # the thread still works
    finally:
        sim.close()
        other.close()


def _simulate_in_child(queue: multiprocessing.queues.Queue[int]) -> None:
    sim = Simulation(seed=3)
    try:
        queue.put(sim.run_sync(_one_day(sim)))
    finally:
        sim.close()


async def _one_day(sim: Simulation) -> int:
    await sim._start(_daily_for_fork, (), {})
    await sim._run_until_idle()
    return round(sim.elapsed.total_seconds())


@workflow(name="sim_forked_day")
async def _daily_for_fork() -> None:
    await sleep("1d")


def test_a_forked_child_gets_its_own_simulation_thread() -> None:
    parent = Simulation(seed=2)  # the parent's thread is started before the fork
    try:
        parent.log_hash()
        context = multiprocessing.get_context("fork")
        queue: multiprocessing.queues.Queue[int] = context.Queue()
        child = context.Process(target=_simulate_in_child, args=(queue,))
        child.start()
        try:
            assert queue.get(timeout=60) == 86_400  # the child's simulation ran to its end
        finally:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
        assert child.exitcode == 0
    finally:
        parent.close()


async def _onboarding_seed_1981() -> Simulation:
    """Seed 1981 of the onboarding sweep: its faults make the run lose its worker 4 times
    (max_recovery_attempts=3), and it fails."""
    sim = Simulation(1981, "all", workers=3)
    run = await sim.start(onboarding, user_id="user-1")
    if await sim.wait_for_hook(run, "activation"):
        await sim.resume_hook(run, "activation", {"via": "simulated click"})
    await sim.run_until_idle()
    record = await run.record()
    assert record.status.value == "failed" and record.recovery_attempts == 4
    return sim


async def test_a_recovery_budget_spent_on_faults_is_not_a_fault_free_difference() -> None:
    sim = await _onboarding_seed_1981()
    try:
        sim.check()  # every loss the engine counted has a fault that struck the run
    finally:
        sim.close()


async def test_a_recovery_budget_spent_without_faults_to_blame_is_reported() -> None:
    sim = await _onboarding_seed_1981()
    try:
        sim.world.ledger.faults.clear()  # as if the engine had counted losses nobody caused
        sim.world.ledger.global_faults = 0
        with pytest.raises(SimulationFailure, match="with faults it ended"):
            sim.check()
    finally:
        sim.close()


undone: list[str] = []


@step(name="sim_cancel_undo")
async def undo_booking(item: str) -> str:
    undone.append(item)
    return f"undid {item}"


@workflow(name="sim_cancel_booking")
async def booking(item: str) -> str:
    try:
        await sleep("2d")
    except CancellationError:
        async with shield():
            await undo_booking(item)
        raise
    return "kept"


@pytest.mark.parametrize("seed", range(40))
async def test_cancellation_with_shielded_cleanup_survives_faults(seed: int) -> None:
    """Cancelled mid-sleep under every fault: the run ends cancelled, its shielded clean-up step
    recorded exactly once, every oracle passes (the ledger excuses a repeat only with a fault)."""
    sim = Simulation(seed, "all", workers=3)
    try:
        run = await sim.start(booking, "room")
        await sim.run_for(timedelta(hours=1))
        assert await sim.cancel(run, reason="changed plans")
        await sim.run_until_idle()
        assert await run.status() is RunStatus.CANCELLED
        events = await run.events()
        undos = [e for e in events if e.type is EventType.STEP_COMPLETED]
        assert len(undos) == 1 and events[-1].type is EventType.WORKFLOW_CANCELLED
        sim.check()
    finally:
        sim.close()


@step(name="sim_tree_work")
async def tree_work(label: str) -> str:
    return f"worked {label}"


@workflow(name="sim_tree_leaf")
async def tree_leaf(label: str) -> str:
    await tree_work(label)
    await sleep("1d")
    return await tree_work(f"{label} again")


@workflow(name="sim_tree_root")
async def tree_root(width: int) -> list[str]:
    waiting = [
        await start_child_workflow(tree_leaf, f"bg{i}", wait_for_completion=False)
        for i in range(width)
    ]
    done = list(
        await asyncio.gather(*(start_child_workflow(tree_leaf, f"fg{i}") for i in range(2)))
    )
    return done + [await handle.result() for handle in waiting]


outcomes: Counter[RunStatus] = Counter()


@pytest.mark.parametrize("seed", range(30))
async def test_a_tree_cancelled_at_a_seed_drawn_moment_ends_whole(seed: int) -> None:
    """Cancelled at a moment each seed draws (mid-step, mid-sleep, racing a child's ending or a
    timer), under every fault: every oracle passes, and once the root ended no run of its tree is
    left going."""
    sim = Simulation(seed, "all", workers=3)
    try:
        run = await sim.start(tree_root, 2)
        cancelled = await sim.cancel(run, reason="seed-drawn", within=timedelta(days=1, hours=1))
        await sim.run_until_idle()
        status = await run.status()
        assert status in (RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED)
        if not cancelled:
            assert status is RunStatus.COMPLETED  # it had finished: nothing to cancel
        outcomes[status] += 1
        sim.check()
    finally:
        sim.close()


def test_seed_drawn_cancellations_land_at_different_points() -> None:
    """The sweep above cancels some trees (mid-run) and finds others finished: the draw spreads
    over the run rather than always hitting one spot. (Runs after it, in file order.)"""
    if sum(outcomes.values()) < 30:
        pytest.skip("runs only after the whole sweep above")
    assert outcomes[RunStatus.CANCELLED] >= 5, outcomes


@workflow(name="sim_what_time")
async def what_time() -> list[str]:
    first = now()
    await sleep("1d")
    return [first.isoformat(), now().isoformat()]


async def test_virtual_time_can_begin_where_the_test_needs_it() -> None:
    eve = datetime(2026, 3, 28, 9, tzinfo=UTC)  # the day before Europe's clocks go forward
    sim = Simulation(3, "all", workers=2, start=eve)
    try:
        run = await sim.start(what_time)
        await sim.run_until_idle()
        assert await run.result() == [eve.isoformat(), (eve + timedelta(days=1)).isoformat()]
        assert (await run.record()).created_at == eve
        sim.check()  # the reruns begin at the same instant: the same logs
        assert "start=datetime.datetime(2026, 3, 28, 9, 0" in sim.reproduce_command()
    finally:
        sim.close()
    with pytest.raises(ValueError, match="aware instant"):
        Simulation(0, start=datetime(2026, 1, 1))


async def test_list_runs_returns_every_run_the_simulation_holds() -> None:
    sim = Simulation(1, "none")
    try:
        run = await sim.start(tree_root, 1)
        await sim.run_until_idle()
        every = await sim.list_runs()
        assert run.run_id in {r.run_id for r in every} and len(every) == 4  # root and 3 children
        leaves = await sim.list_runs(workflow_name="sim_tree_leaf")
        assert len(leaves) == 3 and all(r.parent_run_id == run.run_id for r in leaves)
    finally:
        sim.close()


@workflow(name="sim_child_asks")
async def child_asks(who: str) -> str:
    answer = await hook("approve", timeout="1h")
    return f"{who}: {answer}"


@workflow(name="sim_parent_of_asker")
async def parent_of_asker() -> str:
    await sleep("2d")  # (looked at again after the sleep, not once a virtual second meanwhile)
    return await start_child_workflow(child_asks, "bob")


async def test_a_hook_of_a_child_is_waited_for_and_answered_through_its_parent() -> None:
    async with Simulation(seed=5, faults="all", workers=2) as sim:
        run = await sim.start(parent_of_asker)
        assert await sim.wait_for_hook(run, "approve", within=timedelta(days=3))
        await sim.resume_hook(run, "approve", "yes")
        await sim.run_until_idle()
        assert await run.result() == "bob: yes"
        sim.check()
        with pytest.raises(HookNotFoundError, match="nor a run it started"):
            await sim.resume_hook(run, "approve", "again")


@workflow(name="sim_late_asker")
async def late_asker() -> str:
    await sleep("1h")
    return await hook("approve", timeout="1d")


@step(name="sim_spawn_asker")
async def spawn_asker() -> None:
    await start_child_workflow(late_asker, wait_for_completion=False)


@workflow(name="sim_parent_spawns")
async def parent_spawns() -> str:
    await spawn_asker()
    return "done"


async def test_a_child_started_from_a_step_is_waited_for_after_its_parent_ended() -> None:
    async with Simulation(seed=1, faults="all", workers=2) as sim:
        run = await sim.start(parent_spawns)
        assert await sim.wait_for_hook(run, "approve", within=timedelta(days=1))
        assert await run.result() == "done"  # (the parent ended long before its child asked)
        await sim.resume_hook(run, "approve", "ok")
        await sim.run_until_idle()
        [child] = [r for r in await sim.list_runs() if r.parent_run_id == run.run_id]
        assert child.status is RunStatus.COMPLETED
        sim.check()
