"""The pytest plugin: the ``sim`` fixture, the ``simulate`` marker and the seed options.

Inner pytest sessions run in-process with ``pytester``; the plugin reaches them through its
``pytest11`` entry point, exactly as it reaches a user's project after ``pip install``. Every
inner file names its workflows after the test, since the registry is one per process.
"""

from __future__ import annotations

import html
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pyworkflow import sleep, workflow
from pyworkflow_testing import Simulation
from pyworkflow_testing.plugin import reproduce_command
from tests.simulation.coin import COIN

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider
"""

FLIP = COIN + """

@pytest.mark.simulate(seeds=range(10))
async def test_flip(sim):
    await sim.start(flip)
    await sim.run_until_idle()
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def test_marker_runs_every_seed_with_the_sim_fixture(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_nap="""
        from datetime import timedelta

        import pytest

        from pyworkflow import sleep, workflow


        @workflow(name="plugin_nap")
        async def nap() -> str:
            await sleep("1h")
            return "rested"


        @pytest.mark.simulate(seeds=range(3), faults="crash,drop", workers=2)
        async def test_nap(sim, sim_seed):
            assert (sim.seed, sim.workers, sim.faults.describe()) == (sim_seed, 2, "crash,drop")
            run = await sim.start(nap)
            await sim.run_until_idle()
            assert await run.result() == "rested"
            assert sim.elapsed >= timedelta(hours=1)
        """)
    result = inner.runpytest_inprocess("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_nap?seed=0?*PASSED*", "*test_nap?seed=2?*PASSED*"])


def test_workflow_code_calling_random_fails_with_seed_and_reproduce_line(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(test_flip=FLIP.format(prefix="plugin_flip"))
    result = inner.runpytest_inprocess()
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()
    assert outcomes.get("failed", 0) + outcomes.get("passed", 0) == 10
    text = result.stdout.str()
    assert "simulation seed" in text and "not deterministic" in text
    assert "--sim-seed" in text
    failed_seed = int(text.split("simulation seed ")[1].split()[0])
    assert f"reproduce with: pytest 'test_flip.py::test_flip[seed={failed_seed}]'" in text
    assert f"--sim-seed {failed_seed}" in text


def test_sim_seed_option_runs_exactly_that_seed_and_reproduces_the_failure(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(test_flip=FLIP.format(prefix="plugin_again"))
    first = inner.runpytest_inprocess("-q")
    failed = sorted(
        int(line.split("[seed=")[1].split("]")[0])
        for line in first.stdout.lines
        if line.startswith("FAILED")
    )
    assert failed, first.stdout.str()
    again = inner.runpytest_inprocess(
        f"test_flip.py::test_flip[seed={failed[0]}]", "--sim-seed", str(failed[0])
    )
    again.assert_outcomes(failed=1)  # the printed command fails again
    four = inner.runpytest_inprocess("--sim-seed", "4", "-v")
    assert four.parseoutcomes().get("passed", 0) + four.parseoutcomes().get("failed", 0) == 1
    four.stdout.fnmatch_lines(["*test_flip?seed=4?*"])
    assert ("FAILED" in four.stdout.str()) == (4 in failed)


def test_sim_seeds_option_and_the_fixture_without_the_marker(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_seeds="""
        import pytest


        @pytest.mark.simulate(seeds=range(50))
        def test_marked(sim_seed):
            assert 5 <= sim_seed <= 7


        def test_unmarked(sim, sim_seed):
            assert sim.seed == sim_seed
            assert sim.faults.describe() == "none" and sim.workers == 1
        """)
    inner.runpytest_inprocess("--sim-seeds", "5..7").assert_outcomes(passed=4)
    inner.runpytest_inprocess("--sim-seed", "9", "-k", "unmarked").assert_outcomes(passed=1)
    bad = inner.runpytest_inprocess("--sim-seeds", "5..2")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--sim-seeds: seed range '5..2' is empty*"])


def test_check_false_skips_the_oracles_and_bad_marker_arguments_are_reported(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(
        test_check=FLIP.format(prefix="plugin_unchecked").replace(
            "simulate(seeds=range(10))", "simulate(seeds=range(10), check=False)"
        ),
        test_typo="""
        import pytest


        @pytest.mark.simulate(seeds=range(2), fault="crash")
        def test_typo(sim):
            pass
        """,
    )
    inner.runpytest_inprocess("test_check.py").assert_outcomes(passed=10)
    typo = inner.runpytest_inprocess("test_typo.py")
    typo.assert_outcomes(errors=1)
    typo.stdout.fnmatch_lines(["*@pytest.mark.simulate got unexpected arguments: fault*"])


@workflow(name="plugin_dogfood")
async def dogfood(hours: int) -> int:
    await sleep(timedelta(hours=hours))
    return hours


@pytest.mark.simulate(seeds=range(3), faults="crash,duplicate,drop,storage", workers=2)
async def test_this_suite_uses_the_plugin_too(sim: Simulation, sim_seed: int) -> None:
    run = await sim.start(dogfood, 2)
    await sim.run_until_idle()
    assert await run.result() == 2
    assert sim.seed == sim_seed and sim.elapsed >= timedelta(hours=2)


def test_reproduce_command_quotes_the_node_id() -> None:
    command = reproduce_command("tests/x.py::test_y[seed=3]", 3)
    assert command == "pytest 'tests/x.py::test_y[seed=3]' --sim-seed 3"


FRESH_PROJECT_TEST = """
import pytest

from pyworkflow import sleep, step, workflow


@step(name="fresh_add")
async def add(a: int, b: int) -> int:
    return a + b


@workflow(name="fresh_flow")
async def flow() -> int:
    await sleep("1h")
    return await add(1, 2)


async def test_plain(sim):
    run = await sim.start(flow)
    await sim.run_until_idle()
    assert await run.result() == 3


@pytest.mark.simulate(seeds=range(3), faults="all", workers=2)
async def test_marked(sim):
    run = await sim.start(flow)
    await sim.run_until_idle()
    assert await run.result() == 3
"""


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("no asyncio plugin", ["-p", "no:asyncio"]),
        ("pytest-asyncio strict", ["-o", "asyncio_mode=strict"]),
        ("pytest-asyncio auto", ["-o", "asyncio_mode=auto"]),
    ],
)
def test_the_plugin_runs_async_tests_in_any_suite(
    pytester: pytest.Pytester, mode: str, options: list[str]
) -> None:
    """A fresh project: nothing but pytest and pyworkflow-engine, no asyncio_mode configured.
    ``async def test_x(sim)`` and ``@pytest.mark.simulate`` run (and check) all the same."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(test_fresh=FRESH_PROJECT_TEST)
    result = pytester.runpytest_subprocess(*options)
    result.assert_outcomes(passed=4)
    assert "not natively supported" not in result.stdout.str(), mode


def test_sim_report_writes_a_page_for_each_failing_test_and_seed(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_flip=FLIP.format(prefix="plugin_report"),
        test_body=COIN.format(prefix="plugin_report_body") + """

@pytest.mark.simulate(seeds=range(2), faults="crash")
async def test_body_fails(sim):
    run = await sim.start(flip)
    await sim.run_until_idle()
    assert await run.result() == "edge", "the coin landed on its edge"
""",
    )
    result = inner.runpytest_inprocess("--sim-report", "pages", "-rf")
    text = result.stdout.str()
    failed = sorted(
        line.split("::", 1)[1].split(" ")[0]
        for line in result.stdout.lines
        if line.startswith("FAILED ")
    )
    assert any(name.startswith("test_flip[") for name in failed), text
    pages = inner.path / "pages"
    written = sorted(path.name for path in pages.iterdir())
    assert len(written) == len(failed)  # one page per failing test and seed, named after its id
    for name in failed:
        module = "test_flip.py" if name.startswith("test_flip") else "test_body.py"
        seed = name.split("[seed=")[1].rstrip("]")
        page_name = f"{module}-{name.split('[')[0]}-seed-{seed}.html"
        assert page_name in written, (page_name, written)
        assert f"report: {Path('pages', page_name)}" in text
        page = (pages / page_name).read_text(encoding="utf-8")
        assert f"seed {seed} <span" in page and ">FAILED<" in page
        assert html.escape(reproduce_command(f"{module}::{name}", int(seed))) in page
        if module == "test_body.py":  # the body failed before the oracles ran: its error
            assert "the test failed: AssertionError: the coin landed on its edge" in page
        else:
            assert "not deterministic" in page


def test_sim_report_without_plotly_is_a_usage_error(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner.makepyfile(test_flip=FLIP.format(prefix="plugin_report_missing"))
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    result = inner.runpytest_inprocess("--sim-report", "pages")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "ERROR: --sim-report: the HTML report needs plotly: pip install"
        " 'pyworkflow-engine[report]'" in result.stderr.lines
    )
