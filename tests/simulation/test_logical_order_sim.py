"""Timers against results, under every fault: the workflow sees them in logical time.

A dispatched step's worker appends its result when it has it; the activation a timer wakes comes
late when faults strike (its message lost, its worker gone). Before resolutions applied in
logical time (``WorkflowInstance.fires_first``), about one seed in six of this workflow returned
the 30 s step's result from a 20 s ``wait_for``, or let that step beat a 10 s sleep. And a hook
answered as soon as it appears must count as answered in time, even when a late timer moved the
run's clock on (the reference model places the answer after the hook, not at an absolute time).
"""

from __future__ import annotations

import asyncio

import pytest

from pyworkflow import hook, sleep, step, workflow
from pyworkflow_testing import Faults, Simulation


@step(name="simorder_slow")
async def slow(x: int) -> int:
    await asyncio.sleep(30)  # (virtual time)
    return x


@workflow(name="simorder_race")
async def race() -> list[object]:
    got: list[object] = []
    try:
        got.append(await asyncio.wait_for(slow(1), 20))
    except TimeoutError:
        got.append("timed out")
    napping = asyncio.ensure_future(sleep(10))
    working = asyncio.ensure_future(slow(2))
    done, _ = await asyncio.wait({napping, working}, return_when=asyncio.FIRST_COMPLETED)
    got.append("sleep first" if napping in done else "step first")
    got.append(await working)
    try:
        got.append(await asyncio.wait_for(hook("answer", timeout="1h"), 60))
    except TimeoutError:
        got.append("no answer")
    return got


@pytest.mark.parametrize("first", [0, 30])
async def test_timers_come_before_later_results_under_every_fault(first: int) -> None:
    expected = ["timed out", "sleep first", 2]
    for seed in range(first, first + 30):
        async with Simulation(seed, Faults.all(), workers=3, dispatch_steps=True) as sim:
            answered = await sim.start(race)
            silent = await sim.start(race)
            if await sim.wait_for_hook(answered, "answer"):
                await sim.resume_hook(answered, "answer", "yes")
            await sim.run_until_idle()
            assert await answered.result() == [*expected, "yes"], seed
            assert await silent.result() == [*expected, "no answer"], seed
            sim.check()
