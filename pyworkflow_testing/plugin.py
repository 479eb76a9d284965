"""The pytest plugin: the ``sim`` fixture and the ``@pytest.mark.simulate`` seed sweep.

Installed with the package (entry point ``pytest11``), so ``pip install pyworkflow-engine`` is
enough. ``sim`` is a fresh ``Simulation`` per test, closed afterwards; once the test body has
passed, its oracles run (``sim.check()``) inside the test, so a violation fails the test itself.
``@pytest.mark.simulate(seeds=range(200), faults="crash,drop", workers=2)`` runs the test once
per seed (ids ``seed=N``); ``--sim-seeds A..B`` sweeps other seeds, ``--sim-seed N`` runs just
one, which is what the reproduce line of a failure says to do. ``--sim-report DIR`` traces every
``sim`` and writes the HTML report of each failing test's seed into DIR (the first
``MAX_REPORTS`` of the session).

The process-wide ``random`` module is seeded with the test's seed while the test runs (and put
back afterwards), so workflow code that wrongly calls ``random.random()`` fails reproducibly.
This module must never import the engine at pytest start-up: every pytest run of anyone who has
the package installed loads it, so the simulator is imported only by tests that use it.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import shlex
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pyworkflow_testing.simulation import Simulation

MARKER = "simulate"
MARKER_HELP = (
    "simulate(seeds=range(100), faults=None, workers=1, check=True, determinism_every=10): run"
    " the test once per seed with the `sim` fixture of pyworkflow_testing (faults: 'all',"
    " 'none', 'crash,drop', ...); the first seed and every Nth are rerun for determinism"
)
DEFAULT_SEEDS = range(100)
_MARKER_ARGUMENTS = frozenset({"seeds", "faults", "workers", "check", "determinism_every"})
DEFAULT_DETERMINISM_EVERY = 10

_SIMULATION = pytest.StashKey["Simulation"]()
_SWEEP = pytest.StashKey[range]()
_VIOLATIONS = pytest.StashKey[list[str]]()  # what the oracles found, for the report
_REPORTS = pytest.StashKey[list[str]]()  # the reports written in this session
MAX_REPORTS = 20


@dataclass(frozen=True)
class _Settings:
    """What the ``simulate`` marker of a test asks for (the defaults without one)."""

    faults: Any = None
    workers: int = 1
    check: bool = True
    determinism_every: int = DEFAULT_DETERMINISM_EVERY


def _settings(node: pytest.Item | pytest.Function) -> _Settings:
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return _Settings()
    kwargs = marker.kwargs
    return _Settings(
        kwargs.get("faults"),
        int(kwargs.get("workers", 1)),
        bool(kwargs.get("check", True)),
        int(kwargs.get("determinism_every", DEFAULT_DETERMINISM_EVERY)),
    )


def reproduce_command(nodeid: str, seed: int) -> str:
    """The command that runs this one test with this one seed again."""
    return f"pytest {shlex.quote(nodeid)} --sim-seed {seed}"


# -- options and the marker ------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyworkflow", "pyworkflow simulator")
    group.addoption(
        "--sim-seed",
        dest="sim_seed",
        type=int,
        default=None,
        metavar="N",
        help="run simulate-marked tests with seed N only, and give every `sim` fixture seed N.",
    )
    group.addoption(
        "--sim-seeds",
        dest="sim_seeds",
        default=None,
        metavar="A..B",
        help="sweep simulate-marked tests over seeds A..B (both included) or the one seed N.",
    )
    group.addoption(
        "--sim-report",
        dest="sim_report",
        default=None,
        metavar="DIR",
        help="trace every `sim` and write an HTML report of each failing test's seed into DIR"
        " (needs the pyworkflow-engine[report] extra).",
    )


class _AsyncRunner:
    """Runs ``async def`` tests that use the simulator (the ``sim`` fixture or the ``simulate``
    marker) on a fresh event loop, so they work in any suite: with pytest-asyncio in strict or
    auto mode, or with no asyncio plugin at all. A test another plugin has already made
    synchronous (pytest-asyncio's auto mode wraps it) is left to that plugin."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        if not inspect.iscoroutinefunction(pyfuncitem.obj):
            return None
        uses_sim = "sim" in pyfuncitem.fixturenames
        if not uses_sim and pyfuncitem.get_closest_marker(MARKER) is None:
            return None
        if any(pyfuncitem.get_closest_marker(name) for name in ("asyncio", "anyio")):
            return None  # another plugin was asked for by name: its loop, its fixtures
        wanted = inspect.signature(pyfuncitem.obj).parameters
        arguments = {name: value for name, value in pyfuncitem.funcargs.items() if name in wanted}
        asyncio.run(pyfuncitem.obj(**arguments))
        return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.pluginmanager.register(_AsyncRunner(), "pyworkflow-sim-async-runner")
    if config.getoption("sim_report", None) is not None:
        from pyworkflow_testing.report import ReportUnavailable, require_plotly

        try:
            require_plotly()
        except ReportUnavailable as exc:
            raise pytest.UsageError(f"--sim-report: {exc}") from None
        config.stash[_REPORTS] = []
    text = config.getoption("sim_seeds", None)
    if text is None:
        return
    if config.getoption("sim_seed", None) is not None:
        raise pytest.UsageError("give --sim-seed or --sim-seeds, not both")
    from pyworkflow_testing.cli import parse_seeds

    try:
        config.stash[_SWEEP] = parse_seeds(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--sim-seeds: {exc}") from None


def _marker_seeds(marker: pytest.Mark) -> list[int]:
    unknown = set(marker.kwargs) - _MARKER_ARGUMENTS
    if unknown or len(marker.args) > 1:
        names = ", ".join(sorted(unknown)) or "more than one positional argument"
        pytest.fail(f"@pytest.mark.simulate got unexpected arguments: {names}", pytrace=False)
    seeds: Iterable[Any] = (
        marker.args[0] if marker.args else marker.kwargs.get("seeds", DEFAULT_SEEDS)
    )
    values = list(seeds)
    if not all(isinstance(seed, int) and seed >= 0 for seed in values):
        pytest.fail("@pytest.mark.simulate seeds must be whole numbers, 0 or more", pytrace=False)
    return values


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    seeds = _marker_seeds(marker)
    from pyworkflow_testing.faults import Faults

    try:
        Faults.parse(marker.kwargs.get("faults"))
    except ValueError as exc:
        pytest.fail(f"@pytest.mark.simulate faults: {exc}", pytrace=False)
    seeds = _seeds_run(metafunc.config, seeds)
    if "sim_seed" not in metafunc.fixturenames:
        metafunc.fixturenames.append("sim_seed")  # a marked test that takes neither fixture
    metafunc.parametrize("sim_seed", seeds, ids=[f"seed={seed}" for seed in seeds])


def _seeds_run(config: pytest.Config, seeds: list[int]) -> list[int]:
    """The seeds a marked test runs: ``--sim-seed``, else ``--sim-seeds``, else its own."""
    chosen = config.getoption("sim_seed", None)
    sweep = config.stash.get(_SWEEP, None)
    if chosen is not None:
        return [int(chosen)]
    if sweep is not None:
        return list(sweep)
    return seeds


def _reruns(node: pytest.Item | pytest.Function, seed: int) -> bool:
    """Whether this seed's check reruns it with the same seed: the first seed of the test's
    seeds and every ``determinism_every``-th after it (one seed alone: always)."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return True
    every = _settings(node).determinism_every
    seeds = _seeds_run(node.config, _marker_seeds(marker))
    if every <= 0:
        return False
    return seed not in seeds or seeds.index(seed) % every == 0


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def sim_seed(request: pytest.FixtureRequest) -> int:
    """This test's simulation seed: the marker's current seed, else ``--sim-seed``, else 0."""
    chosen = request.config.getoption("sim_seed", None)
    return 0 if chosen is None else int(chosen)


@pytest.fixture
def sim(request: pytest.FixtureRequest, sim_seed: int) -> Iterator[Simulation]:
    """A ``Simulation`` for this test, checked after the test body passes, closed afterwards."""
    from pyworkflow_testing.simulation import Simulation

    settings = _settings(request.node)
    simulation = Simulation(
        sim_seed,
        settings.faults,
        settings.workers,
        reproduce=reproduce_command(request.node.nodeid, sim_seed),
        trace=request.config.getoption("sim_report", None) is not None,
    )
    request.node.stash[_SIMULATION] = simulation
    saved = random.getstate()
    random.seed(sim_seed)
    try:
        yield simulation
    finally:
        simulation.close()
        random.setstate(saved)


# -- running the oracles and reporting -------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """After a test body that used ``sim`` passes, run the oracles as part of the test."""
    __tracebackhide__ = True
    result = yield
    simulation = pyfuncitem.stash.get(_SIMULATION, None)
    if simulation is not None and _settings(pyfuncitem).check:
        from pyworkflow_testing.simulation import SimulationFailure

        message = None
        try:
            simulation.check(same_seed=_reruns(pyfuncitem, simulation.seed))
        except SimulationFailure as failure:
            message = str(failure)
            pyfuncitem.stash[_VIOLATIONS] = failure.violations
        if message is not None:
            # The oracles' own words are the whole story; a traceback into check() adds nothing.
            pytest.fail(message, pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used ``sim`` says which seed it ran and how to run it alone."""
    report: pytest.TestReport = yield
    simulation = item.stash.get(_SIMULATION, None)
    if simulation is not None and report.failed and call.when == "call":
        written = _write_report(item, call, simulation)
        report.sections.append(
            (
                "pyworkflow simulation",
                f"seed {simulation.seed} (faults {simulation.faults.describe()},"
                f" workers {simulation.workers})\n"
                f"reproduce with: {reproduce_command(item.nodeid, simulation.seed)}"
                + (f"\n{written}" if written else ""),
            )
        )
    return report


def _write_report(item: pytest.Item, call: pytest.CallInfo[None], simulation: Simulation) -> str:
    """With ``--sim-report DIR``: write the failing test's report into DIR (named after the test
    id); returns the line that says where (or why not), empty without the option."""
    directory = item.config.getoption("sim_report", None)
    written = item.config.stash.get(_REPORTS, None)
    if directory is None or written is None or simulation.trace is None:
        return ""
    if len(written) >= MAX_REPORTS:
        return f"no report: --sim-report writes the first {MAX_REPORTS} of a session"
    violations = item.stash.get(_VIOLATIONS, None)
    if violations is None:  # the test body failed before the oracles ran
        failure = call.excinfo.exconly() if call.excinfo is not None else "the test failed"
        violations = [f"the test failed: {failure}"]
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", item.nodeid).strip("-") + ".html"
    path = Path(directory) / name
    try:
        simulation.write_report(path, violations=violations, title=item.nodeid)
    except Exception as exc:  # noqa: BLE001 - a report that cannot be written fails no test
        return f"could not write the report {path}: {type(exc).__name__}: {exc}"
    written.append(str(path))
    return f"report: {path}"


__all__ = ["DEFAULT_SEEDS", "MARKER", "MAX_REPORTS", "reproduce_command"]
