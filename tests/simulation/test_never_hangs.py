"""The harness never hangs: every seed ends within a bound, with a reason.

Each test here would spin (millions of deliveries, or forever) on a harness that only stops at
its 30-day liveness bound or polls without noticing that nothing can change any more.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from pyworkflow import WorkflowError, hook, step, workflow
from pyworkflow.engine.activation import Engine
from pyworkflow_testing import Simulation, SimulationFailure
from pyworkflow_testing.world import STALL_DELIVERIES


@step(name="hang_noop")
async def noop() -> str:
    return "ok"


@workflow(name="hang_two_hooks")
async def two_hooks() -> str:
    await hook("first")  # nobody answers it, and it has no timeout
    await hook("second")
    return await noop()


@workflow(name="hang_plain")
async def plain() -> str:
    return await noop()


async def test_wait_for_hook_returns_false_once_nothing_can_create_the_hook() -> None:
    sim = Simulation(seed=0, workers=2)
    try:
        run = await sim.start(two_hooks)
        assert not await sim.wait_for_hook(run, "second", within=timedelta(days=365))
        assert sim.elapsed < timedelta(minutes=1)  # it saw the world go idle, it did not poll on
        assert await sim.wait_for_hook(run, "first")
    finally:
        sim.close()


async def test_an_activation_that_fails_every_time_ends_the_seed_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Simulation(seed=0, workers=2)
    try:
        run = await sim.start(plain)

        async def broken(self: Engine, run_id: str, **_: object) -> None:
            raise WorkflowError(f"activation of {run_id} failed")

        async def uncounted(self: Engine, run_id: str) -> bool:
            return True  # resume it, but never count the loss (nor fail the run for it)

        # Every activation fails and the broker redelivers it a second later; the recovery
        # budget, which would fail the run after max_recovery_attempts, is out too.
        monkeypatch.setattr(Engine, "advance", broken)
        monkeypatch.setattr(Engine, "_record_interruption", uncounted)
        await sim.run_until_idle()
        assert sim.timed_out
        assert sim.world.deliveries <= 3 * STALL_DELIVERIES  # two phases, then it stopped
        assert sim.elapsed < timedelta(days=1)
        with pytest.raises(SimulationFailure) as failure:
            sim.check()
        assert any("liveness: no progress" in v for v in failure.value.violations), failure
        assert (await run.status()).value == "pending" or not (await run.status()).is_terminal
    finally:
        sim.close()
