"""pyworkflow_testing: test your workflows the way FoundationDB tests itself.

A ``Simulation`` runs your workflows on the real engine, on virtual time (a day of sleeps costs
nothing), with crashes, lost and duplicated messages and storage faults drawn from a seed, and
checks oracles after every run. A failing seed prints one command that reproduces it.
"""

from __future__ import annotations

from pyworkflow.engine.replay import replay_history
from pyworkflow_testing.fate import lose_worker
from pyworkflow_testing.faults import Faults
from pyworkflow_testing.loop import SimulationDeadlock
from pyworkflow_testing.shrink import Tape, shrink
from pyworkflow_testing.simulation import SimRun, Simulation, SimulationFailure

__all__ = [
    "Faults",
    "SimRun",
    "Simulation",
    "SimulationDeadlock",
    "SimulationFailure",
    "Tape",
    "lose_worker",
    "replay_history",
    "shrink",
]
