"""Plain ``def`` steps under the simulator: the runtimes run them in a thread, which virtual time
cannot wait for, so the simulator runs their bodies at once on its own thread. Before, every seed
failed (a log that differed from one run of the seed to the next, a reference model blocked)."""

from __future__ import annotations

from pyworkflow import RetryableError, get_step_info, sleep, step, workflow
from pyworkflow_testing import Faults, Simulation

CALLS: list[tuple[str, int]] = []


@step(name="sync_double", max_retries=2, retry_delay="5s")
def double(i: int) -> int:
    info = get_step_info()
    CALLS.append((info.step_name, info.attempt))
    if info.attempt == 1:
        raise RetryableError("the first attempt fails")
    return i * 2


@step(name="sync_shout")
def shout(text: str) -> str:
    return text.upper()


@workflow(name="sync_steps")
async def with_sync_steps() -> str:
    doubled = await double(21)
    await sleep("1m")
    return await shout(f"got {doubled}")


def test_a_sync_step_runs_retries_and_passes_every_oracle() -> None:
    sim = Simulation(seed=3, faults=Faults.none(), workers=2)
    try:
        run = sim.run_sync(sim._start(with_sync_steps, (), {}))
        sim.run_sync(sim._run_until_idle())
        assert sim.run_sync(run._outcome()).value() == "GOT 42"
        assert ("sync_double", 1) in CALLS and ("sync_double", 2) in CALLS
        sim.check()
    finally:
        sim.close()


def test_sync_steps_pass_a_sweep_with_every_fault() -> None:
    for seed in range(40):
        sim = Simulation(seed=seed, faults=Faults.all(), workers=3)
        try:
            sim.run_sync(sim._start(with_sync_steps, (), {}))
            sim.run_sync(sim._run_until_idle())
            sim.check(same_seed=seed % 10 == 0)
        finally:
            sim.close()
