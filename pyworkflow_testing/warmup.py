"""Warming a sweep's parent process before it forks one child per seed.

An isolated sweep (``--isolate``) runs each seed in a child forked from the sweep's process
(``sweep.run_seed_isolated``), so that what one seed leaves in memory cannot hide a bug from the
next. A child forked from a
process that has never run a simulation pays, in every seed, for what the first simulation of a
process does once: the interpreter's first trip through the engine's and the simulator's code
paths, and growing the allocator's arenas (each a fresh page the child copies on first write).
Measured on onboarding with every fault on: 13.8 ms a seed from a cold parent, 6.4 ms from a
parent that ran one simulation first.

``warm_up`` runs one small simulation of the simulator's own (a step, a sleep, a hook, every
fault on, then every oracle) in the parent, once per process. It runs no user code: its workflow
and step are registered only for its duration (``registry_restored``), and the ``random`` module's
state is put back. Best effort: a warm-up that fails is ignored (the seeds then run cold), and
a process where a simulation already holds the simulation thread is not warmed (stopping that
thread would break it).
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from typing import Any

from pyworkflow.core.registry import registry_restored
from pyworkflow_testing.simulation import simulation_thread_exists, stop_simulation_thread

_warmed = False
_lock = threading.Lock()


def warm_up() -> None:
    """Run the warm-up simulation, once per process (see the module docstring)."""
    global _warmed
    with _lock:
        if _warmed:
            return
        _warmed = True
    if simulation_thread_exists():
        return  # a simulation of this process holds the thread: leave it be (and run cold)
    state = random.getstate()
    try:
        with registry_restored():
            asyncio.run(_simulate())
    except Exception:  # noqa: BLE001 - best effort: the sweep runs cold instead
        pass
    finally:
        stop_simulation_thread()  # (or the sweep could not fork its seeds)
        random.setstate(state)
        gc.collect()


async def _simulate() -> None:
    from pyworkflow.core.step import step
    from pyworkflow.core.workflow import workflow
    from pyworkflow.primitives.hooks import hook
    from pyworkflow.primitives.sleep import sleep
    from pyworkflow_testing.faults import Faults
    from pyworkflow_testing.simulation import Simulation

    @step(name="pyworkflow_testing.warmup.step", max_retries=2, retry_delay=[1])
    async def warm_step(n: int) -> int:
        return n + 1

    @workflow(name="pyworkflow_testing.warmup.flow")
    async def warm_flow() -> Any:
        first = await warm_step(1)
        await sleep("1m")
        answer = await hook("go", timeout="1h")
        return [first, answer]

    sim = Simulation(seed=0, faults=Faults.parse("all"), workers=3)
    try:
        run = await sim.start(warm_flow)
        if await sim.wait_for_hook(run, "go"):
            await sim.resume_hook(run, "go", {"ok": True})
        await sim.run_until_idle()
        await sim.violations()
    finally:
        sim.close()


__all__ = ["warm_up"]
