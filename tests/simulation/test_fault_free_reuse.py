"""Sweeps reuse fault-free endings: a seed they do not sample compares its runs' endings with what
a fault-free rerun of another seed of the same kind reached, and reruns itself without faults only
when they differ. The verdicts must be exactly those of a sweep that reruns every seed."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from pyworkflow_testing.checking import FaultFreeEndings
from pyworkflow_testing.sweep import SweepSpec, fault_free_endings, load_workflow, run_sweep

pytest_plugins = ["pytester"]

# A workflow's own race: a dispatched step delayed by a fault (a message held back for up to
# five seconds, a worker lost) misses its three-second deadline, so some seeds end otherwise
# with faults than without. Fault-free, every seed of a kind ends alike.
RACY = """
import asyncio

from pyworkflow import step, workflow


@step(name="reuse_slowish")
async def slowish() -> str:
    return "in time"


@workflow(name="reuse_racy")
async def racy() -> str:
    try:
        return await asyncio.wait_for(slowish(), 3)
    except TimeoutError:
        return "too late"
"""

# Fault-free endings that depend on the seed: ``pyworkflow.random()`` is deterministic for a run
# (replays draw the same), and differs from run to run, so from seed to seed.
DRAWN = """
import pyworkflow
from pyworkflow import sleep, step, workflow


@step(name="reuse_step")
async def one() -> int:
    return 1


@workflow(name="reuse_drawn")
async def drawn() -> float:
    await one()
    await sleep("1m")
    return await one() + pyworkflow.random()
"""


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    (tmp_path / "reuse_racy.py").write_text(RACY)
    (tmp_path / "reuse_drawn.py").write_text(DRAWN)
    return tmp_path


def verdicts(target: str, directory: Path, seeds: range, every: int) -> dict[int, list[str]]:
    spec = SweepSpec(target=target, search_path=str(directory), determinism_every=every)
    return {outcome.seed: outcome.violations for outcome in run_sweep(spec, seeds)}


def endings_of(target: str, directory: Path) -> FaultFreeEndings:
    spec = SweepSpec(target, search_path=str(directory))
    return fault_free_endings(spec, load_workflow(target, str(directory)))


def test_reused_endings_give_the_verdicts_of_a_rerun_of_every_seed(module_dir: Path) -> None:
    seeds = range(0, 120)
    state = random.getstate()
    try:
        sampled = verdicts("reuse_racy:racy", module_dir, seeds, 10)
        memo = endings_of("reuse_racy:racy", module_dir)
        every = verdicts("reuse_racy:racy", module_dir, seeds, 1)
    finally:
        random.setstate(state)
        sys.modules.pop("reuse_racy", None)
    failing = {seed for seed, found in sampled.items() if found}
    assert failing == {seed for seed, found in every.items() if found}
    # The race shows on seeds the sweep does not sample, and they report it as ever: from a
    # fault-free rerun of the seed itself.
    unsampled = sorted(seed for seed in failing if seed % 10)
    assert unsampled, failing
    for seed in unsampled:
        assert sampled[seed] == every[seed]
        assert any("with faults it ended" in v and "too late" in v for v in sampled[seed])
    # Most seeds were spared their fault-free rerun, and the endings are still trusted.
    assert memo.trusted
    assert memo.reused > len(seeds) // 2, (memo.reused, memo.reruns)


def test_endings_that_depend_on_the_seed_stop_the_reuse_and_fail_no_seed(
    module_dir: Path,
) -> None:
    state = random.getstate()
    try:
        found = verdicts("reuse_drawn:drawn", module_dir, range(0, 40), 10)
        memo = endings_of("reuse_drawn:drawn", module_dir)
    finally:
        random.setstate(state)
        sys.modules.pop("reuse_drawn", None)
    assert not any(found.values()), {seed: v for seed, v in found.items() if v}
    assert len(memo.endings) == 0 and memo.reruns > 8
    assert not memo.trusted  # two seeds of a kind disagreed: every seed reruns itself
    assert memo.reused == 0


PLUGIN_SUITE = RACY.replace("reuse_", "plugin_reuse_") + """

import pytest


async def play(sim):
    await sim.start(racy)
    await sim.run_until_idle()


@pytest.mark.simulate(seeds=range(60), faults="all", workers=3)
async def test_sampled(sim):
    await play(sim)


@pytest.mark.simulate(seeds=range(60), faults="all", workers=3, determinism_every=1)
async def test_every_seed(sim):
    await play(sim)


def test_what_was_reused(pytestconfig):
    from pyworkflow_testing.plugin import _ENDINGS

    endings = pytestconfig.stash[_ENDINGS]
    sampled = next(found for key, found in endings.items() if "test_sampled" in key)
    every_seed = next(found for key, found in endings.items() if "test_every_seed" in key)
    print(f"REUSED sampled={sampled.reused} every_seed={every_seed.reused}")
    assert sampled.trusted and sampled.reused > 15
    assert every_seed.reused == 0
"""


def test_the_plugin_reuses_endings_with_the_same_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:cacheprovider\n"
    )
    pytester.makepyfile(test_racy=PLUGIN_SUITE)
    result = pytester.runpytest_inprocess("-q", "-rN")  # (no summary: one block per failure)
    # Each failure: "simulation seed N failed:", its violations ("- ..."), the reproduce line.
    found: dict[str, dict[int, list[str]]] = {"sampled": {}, "every_seed": {}}
    for block in "\n".join(result.outlines).split("simulation seed ")[1:]:
        seed, _, rest = block.partition(" failed:")
        test = re.search(r"test_racy.py::test_(\w+)\[seed=", rest)
        if test is None or not seed.isdigit():
            continue
        violations = re.findall(r"^- (.*)$", rest.partition("reproduce with")[0], re.MULTILINE)
        found[test.group(1)].setdefault(int(seed), violations)
    assert not any("test_what_was_reused" in line for line in result.outlines), result.outlines
    assert found["sampled"] == found["every_seed"]
    unsampled = [seed for seed, violations in found["sampled"].items() if seed % 10]
    assert any(
        "with faults it ended" in v for seed in unsampled for v in found["sampled"][seed]
    ), found["sampled"]
