"""Simulations the report tests draw, and how they read a written page back.

``failing_seed_with_a_crash`` finds the first seed whose run of ``coin`` (``random.random()`` in
workflow code: the bug) fails the oracles after a worker crashed, traced; the tests check the
page against what the simulation itself knows (the engine generation of each worker counts its
crashes). ``ten_thousand_events`` is a traced seed with about 10,000 events.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyworkflow import sleep, step, workflow
from pyworkflow_testing import Simulation, SimulationFailure
from pyworkflow_testing.trace import CRASH


@step(name="report_heads")
async def heads() -> str:
    return "heads"


@step(name="report_tails")
async def tails() -> str:
    return "tails"


@workflow(name="report_coin")
async def coin() -> str:
    # The bug under test: random.random() in workflow code, not pyworkflow.random().
    side = await heads() if random.random() < 0.5 else await tails()
    await sleep("1m")
    return side


@step(name="report_tick")
async def tick(i: int) -> int:
    return i


@workflow(name="report_ticks")
async def ticks(n: int) -> int:
    total = 0
    for i in range(n):
        total += await tick(i)
    return total


@dataclass
class Failed:
    """A traced simulation (still open: close it) and the failure its check raised."""

    sim: Simulation
    failure: SimulationFailure

    @property
    def crashed_workers(self) -> dict[int, int]:
        """Worker index -> crashes, from the engines the world replaced (not from the trace)."""
        return {i: g - 1 for i, g in enumerate(self.sim.world.generation) if g > 1}


def failing_seed_with_a_crash(seeds: range = range(200), workers: int = 3) -> Failed:
    """The first seed of ``coin`` that fails its check after a worker crashed (crashes often)."""
    for seed in seeds:
        sim = Simulation(seed, "crash=0.3,drop", workers, trace=True, reproduce=f"seed {seed}")
        saved = random.getstate()
        random.seed(seed)  # as the CLI and the plugin do
        try:
            _run(_play(sim))
            sim.check()
        except SimulationFailure as failure:
            assert sim.trace is not None
            if any(mark.kind == CRASH for mark in sim.trace.marks):
                return Failed(sim, failure)
        finally:
            random.setstate(saved)
        sim.close()
    raise AssertionError(f"no seed in {seeds} failed after a crash")


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on a thread of its own: callable with a loop running here too (the
    playwright driver runs one while a browser is open)."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, coro).result()


async def _play(sim: Simulation) -> None:
    await sim.start(coin)
    await sim.run_until_idle()


def ten_thousand_events(seed: int = 1) -> Simulation:
    """A traced seed of 50 runs of 100 steps each on 3 workers, every fault on: about 10,100
    events and 30,000 marks (steps dispatched to workers: an odd seed). Close it."""
    sim = Simulation(seed, "all", 3, trace=True)

    async def play() -> None:
        for _ in range(50):
            await sim.start(ticks, 100)
        await sim.run_until_idle()

    _run(play())
    return sim


def page_data(page: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plotly figure and the report's own data, as embedded in a written page."""
    text = Path(page).read_text(encoding="utf-8") if isinstance(page, Path) else page
    figure = re.search(r'<script type="application/json" id="figure-data">(.*?)</script>', text)
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text)
    assert figure is not None and data is not None, "the page has no embedded data"
    return json.loads(figure[1]), json.loads(data[1])


def lanes_of(figure: dict[str, Any], kind: str) -> list[str]:
    """The lane of every mark of ``kind`` on the timeline, from the figure's own y values."""
    names = figure["layout"]["yaxis"]["ticktext"]
    lanes = []
    for trace in figure["data"]:
        if trace.get("meta") == kind:
            lanes += [names[-round(y)] for y in trace["y"]]
    return lanes
