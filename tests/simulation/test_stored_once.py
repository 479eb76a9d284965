"""Values stored once, under every fault: arguments too large to copy into a mention (a dispatched
step retried on workers, a child, the next run of a chain, a large result) reach the code that
needs them across crashes, lost and duplicated messages and storage errors, and every oracle of
the simulator passes (replay included, which checks mentioned values by digest)."""

from __future__ import annotations

import pytest

from pyworkflow import (
    EventType,
    RetryableError,
    continue_as_new,
    get_step_info,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow.model.events import INLINE_RESULT_LIMIT
from pyworkflow_testing import Faults, Simulation

BIG = "b" * (INLINE_RESULT_LIMIT * 3)


@step(name="once_sim_measure", max_retries=4, retry_delay=1)
async def measure(text: str) -> int:
    if get_step_info().attempt < 3:
        raise RetryableError("not yet")  # two failed attempts: the third reads the first's args
    return len(text)


@workflow(name="once_sim_child")
async def child(text: str) -> int:
    return await measure(text) + 1


@workflow(name="once_sim_chain")
async def chain(text: str, generation: int) -> str:
    if generation < 2:
        await continue_as_new(text + "c", generation + 1)
    counted = await measure(text)
    from_child = await start_child_workflow(child, text)
    return f"{counted}:{from_child}:" + text  # a result over the inline limit


@pytest.mark.parametrize("seed", range(12))
async def test_large_values_stored_once_survive_every_fault(seed: int) -> None:
    sim = Simulation(seed, Faults.all(), workers=3, dispatch_steps=True)
    try:
        run = await sim.start(chain, BIG, 0)
        await sim.run_until_idle()
        final = BIG + "cc"
        assert await run.result() == f"{len(final)}:{len(final) + 1}:{final}"
        sim.check()
        # What the runs recorded: three generations and their children; the arguments of every
        # step's first attempt in full, the later attempts' mentioned by digest.
        records = await sim.list_runs()
        assert len(records) == 4 and sum(r.parent_run_id is not None for r in records) == 1
        starts: dict[tuple[str, str], list[dict[str, object]]] = {}
        for record in records:
            for e in await sim.world.storage.inner.get_events(record.run_id):
                if e.type is EventType.STEP_STARTED:
                    starts.setdefault((record.run_id, e.data["command_id"]), []).append(e.data)
        # Each step's first start holds them; every later one (a retry, or an attempt lost with
        # its worker and started again) mentions them.
        first = [each[0] for each in starts.values()]
        later = [data for each in starts.values() for data in each[1:]]
        assert len(first) == 2 and all(BIG in str(d["args"]) for d in first)
        assert later and all("args" not in d and "args_sha256" in d for d in later)
    finally:
        sim.close()
