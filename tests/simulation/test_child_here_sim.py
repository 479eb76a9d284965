"""Children awaited alone, under every fault: half the seeds run them in their parent's
activation (``Engine._child_here``: the child's first write joined to the parent's), half send
them to the queue; every oracle of ``check()`` holds and the family's result is the same.

The family mixes what the fast path takes whole (children that end in their first activation:
by returning, failing or continuing as new) with what it leaves to the queue (a child with a
step, one that sleeps, one that starts a child of its own).
"""

from __future__ import annotations

import pytest

from pyworkflow import (
    ChildWorkflowFailedError,
    sleep,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow_testing import Faults, Simulation
from tests.simulation.zoo.workflows import once_more, refuses


@step(name="simhere_twice")
async def twice(n: int) -> int:
    return 2 * n


@workflow(name="simhere_pure")
async def pure(n: int) -> int:
    return n + 100


@workflow(name="simhere_with_step")
async def with_step(n: int) -> int:
    return await twice(n) + 1


@workflow(name="simhere_sleepy")
async def sleepy(n: int) -> int:
    await sleep("5m")
    return n


@workflow(name="simhere_middle")
async def middle(n: int) -> int:
    return await start_child_workflow(pure, n) + await start_child_workflow(with_step, n)


@workflow(name="simhere_family")
async def family(n: int) -> list[object]:
    got: list[object] = [await start_child_workflow(pure, n)]
    try:
        await start_child_workflow(refuses, n)
    except ChildWorkflowFailedError as exc:
        got.append(exc.error_type.rsplit(":", 1)[-1])
    got.append(await start_child_workflow(once_more, n))
    got.append(await start_child_workflow(with_step, n))
    got.append(await start_child_workflow(sleepy, n))
    got.append(await start_child_workflow(middle, n))
    got.append(await twice(n))
    return got


EXPECTED = [103, "FatalError", 4, 7, 3, 103 + 7, 6]
SEEDS = range(120)


@pytest.mark.parametrize("first", range(SEEDS.start, SEEDS.stop, 40))
def test_a_family_of_children_passes_every_oracle_under_every_fault(first: int) -> None:
    inline, joint = set(), set()
    for seed in range(first, first + 40):
        sim = Simulation(seed, Faults.all(), workers=3)
        try:
            run = sim.run_sync(sim._start(family, (3,), {}))
            sim.run_sync(sim._run_until_idle())
            assert sim.run_sync(run._outcome()).value() == EXPECTED, f"seed {seed}"
            sim.check()
            inline.add(sim.world.inline_children)
            if sim.world.inline_children:  # a child's ending joined atomically, or not
                joint.add(sim.world.storage.joint_writes > 0)
        finally:
            sim.close()
    assert inline == {True, False}  # both paths explored in every block of seeds
    assert joint == {True, False}  # and both forms of the joined write
