"""Tapes replay a simulation decision for decision; shrinking cuts a failure to fewer faults."""

from __future__ import annotations

from pathlib import Path

from examples.onboarding import onboarding
from pyworkflow_testing import Faults, Simulation, Tape, shrink


def run_scenario(sim: Simulation) -> tuple[bool, list[int]]:
    """A user check that fails whenever a worker crashed during the run."""

    async def go() -> None:
        await sim._start(onboarding, ("u1",), {})
        await sim._run_until_idle()

    try:
        sim.run_sync(go())
        fired = [ordinal for ordinal, _, _ in sim.faults_injected]
        return sim.world.crashes > 0, fired
    finally:
        sim.close()


def find_failing_seed() -> int:
    for seed in range(200):
        fails, fired = run_scenario(Simulation(seed, Faults.all(scale=4), workers=2))
        if fails and len(fired) >= 3:
            return seed
    raise AssertionError("no seed with a crash among several faults")


def test_shrink_keeps_one_crash_and_the_tape_replays(tmp_path: Path) -> None:
    seed = find_failing_seed()
    original = Simulation(seed, Faults.all(scale=4), workers=2)
    tape = original.tape({"workflow": "examples.onboarding:onboarding"})
    fails, fired = run_scenario(original)
    assert fails

    def fails_with(suppress: frozenset[int]) -> tuple[bool, list[int]]:
        return run_scenario(Simulation.from_tape(tape, suppress=suppress))

    suppress = shrink(fails_with, fired)
    still_fails, remaining = fails_with(suppress)
    assert still_fails
    assert len(remaining) < len(fired)
    shrunk = Simulation.from_tape(tape, suppress=suppress)
    kinds = [kind for _, kind, _ in shrunk.tape().fired]
    assert kinds == []  # nothing ran yet: the tape records what fired when it is taken
    path = tmp_path / "tape.json"
    shrunk.tape().dump(path)
    loaded = Tape.load(path)
    assert loaded.suppress == sorted(suppress) and loaded.seed == seed
    # the saved tape reproduces the shrunk failure
    again, again_fired = run_scenario(Simulation.from_tape(loaded))
    assert again and again_fired == remaining


def test_shrink_on_a_synthetic_failure() -> None:
    # fails while fault 7 is not suppressed; every other fault is noise
    def fails_with(suppress: frozenset[int]) -> tuple[bool, list[int]]:
        fired = [f for f in range(12) if f not in suppress]
        return 7 in fired, fired

    assert shrink(fails_with, list(range(12))) == frozenset(range(12)) - {7}
