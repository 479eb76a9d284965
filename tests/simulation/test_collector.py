"""The collector's threshold is raised only while a simulation runs or is checked."""

from __future__ import annotations

import gc
import threading

from pyworkflow import step, workflow
from pyworkflow_testing import Faults, Simulation
from pyworkflow_testing.collector import THRESHOLD, fewer_collections


@step(name="collector_probe")
async def probe() -> int:
    return gc.get_threshold()[0]


@workflow(name="collector_flow")
async def flow() -> int:
    return await probe()


def test_a_simulation_collects_less_often_and_puts_the_threshold_back() -> None:
    before = gc.get_threshold()
    sim = Simulation(1, Faults.none())
    try:
        run = sim.run_sync(sim._start(flow, (), {}))
        sim.run_sync(sim._run_until_idle())
        assert sim.run_sync(run._outcome()).value() == THRESHOLD  # (seen from a step)
        sim.check()
    finally:
        sim.close()
    assert gc.get_threshold() == before


def test_windows_nest_across_threads_and_a_higher_threshold_is_kept() -> None:
    before = gc.get_threshold()
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with fewer_collections():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with fewer_collections():
        thread.start()
        assert inside.wait(10)
    assert gc.get_threshold()[0] == THRESHOLD  # the other thread's window is still open
    leave.set()
    thread.join(10)
    assert gc.get_threshold() == before
    for theirs in (THRESHOLD * 3, 0):  # a higher threshold, or collection turned off, stays
        gc.set_threshold(theirs, *before[1:])
        try:
            with fewer_collections():
                assert gc.get_threshold()[0] == theirs
            assert gc.get_threshold()[0] == theirs
        finally:
            gc.set_threshold(*before)
