"""A cancellation held back for an inline attempt in flight replays the same way.

An activation that loses a commit race carries the inline attempts it ran or left running to its
next try, which reads the log again; a cancellation request found there is held back for those
attempts (their outcome is recorded, then the code hears of it). A replay holds it back only for
an attempt it finds started in the log. When the code then stopped waiting for such an attempt
(``asyncio.wait``, then ``cancel``), its start was never recorded, and a replay delivered the
cancellation at once and diverged (found by a second review of logical-time order, seed 63 of
this workflow; the release before failed the same way). The next try now records those starts
with its first write and records the attempts' outcomes even if the code stopped waiting
(``Engine._pin_carried``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta

import pytest

from pyworkflow import (
    CancellationError,
    HookExpiredError,
    get_step_info,
    hook,
    sleep,
    step,
    workflow,
)
from pyworkflow.primitives.cancellation import shield
from pyworkflow.primitives.deterministic import now as wnow
from pyworkflow_testing import Faults, Simulation, SimulationFailure

# The workflow as the review found the bug with it (its names and shape decide the seeds' paths).


@step(name="rv2_slow", max_retries=2, retry_delay="3s")
async def slow(x, secs: float, fail_first: bool = False):
    await asyncio.sleep(secs)
    if fail_first and get_step_info().attempt < 2:
        raise RuntimeError("boom")
    return x


@step(name="rv2_local", force_local=True, max_retries=2, retry_delay="2s")
async def local(x, secs: float, fail_first: bool = False):
    await asyncio.sleep(secs)
    if fail_first and get_step_info().attempt < 2:
        raise RuntimeError("boom")
    return x


@workflow(name="rv2_child")
async def child(secs: float) -> str:
    await sleep(secs)
    await slow("c", 1)
    return f"child{secs}"


def _t(start):
    return round((wnow() - start).total_seconds(), 3)


@workflow(name="rv2_main")
async def main_wf() -> list:
    start = wnow()
    log = []

    def note(x):
        log.append((x, _t(start)))

    async def guarded(coro, name):
        try:
            r = await coro
            note(f"{name}={r}")
        except TimeoutError:
            note(f"{name}:timeout")
        except HookExpiredError:
            note(f"{name}:expired")
        except CancellationError:
            note(f"{name}:cancel")
        except Exception as e:
            note(f"{name}:{type(e).__name__}")

    await asyncio.gather(
        guarded(asyncio.wait_for(slow("a", 12), 10), "wf_a"),
        guarded(asyncio.wait_for(local("b", 12), 11), "wf_b"),
        guarded(asyncio.wait_for(hook("h1", timeout="15s"), 14), "h1"),
        guarded(sleep(9), "s9"),
        guarded(asyncio.sleep(13), "l13"),
        guarded(slow("r", 2, True), "retry_d"),
        guarded(local("q", 2, True), "retry_i"),
        guarded(asyncio.wait_for(child(5), 8), "child"),
    )
    for i in range(3):
        t = asyncio.ensure_future(asyncio.sleep(3 + i))
        s = asyncio.ensure_future(slow(f"x{i}", 2 + i))
        near = asyncio.ensure_future(local(f"y{i}", 4))
        done, pending = await asyncio.wait({t, s, near}, return_when=asyncio.FIRST_COMPLETED)
        note(sorted("t" if d is t else d.result() for d in done))
        rest = [p for p in (t, s, near) if p in pending]
        for p in rest:
            p.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        note("round")
    try:
        await sleep(20)
        note("slept")
    except CancellationError:
        note("cancelled-sleep")
        async with shield():
            note(await slow("cleanup", 1))
        raise
    return log


@pytest.mark.parametrize("seed", [63, 111, 125])
async def test_an_abandoned_in_flight_attempt_and_a_cancellation_replay_the_same(
    seed: int,
) -> None:
    async with Simulation(seed, Faults.all(), workers=3, dispatch_steps=True) as sim:
        run = await sim.start(main_wf)
        choices = random.Random(sim.seed)
        if await sim.wait_for_hook(run, "h1", within=timedelta(seconds=60)):
            await sim.run_for(choices.uniform(0, 13))
            with contextlib.suppress(Exception):
                await sim.resume_hook(run, "h1", "p")
        if choices.random() < 0.5:
            await sim.cancel(run, "stop", within=60)
        await sim.run_until_idle()
        try:
            sim.check()
        except SimulationFailure as failure:
            assert "replay from scratch diverges" not in str(failure), str(failure)
