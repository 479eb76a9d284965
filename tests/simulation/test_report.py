"""The trace of a simulation and its HTML report (``Simulation(trace=True)``, ``write_report``).

The pages are read back through the data they embed (the plotly figure and the report's own
JSON), and checked against what the simulation itself knows: its violations, its reproduce line,
which worker's engine was replaced after a crash. ``test_report_browser.py`` opens them in a real
browser; ``test_cli.py`` and ``test_plugin.py`` cover ``--report`` and ``--sim-report``.
"""

from __future__ import annotations

import asyncio
import html
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from examples.onboarding import onboarding
from pyworkflow_testing import Simulation
from pyworkflow_testing import report as report_module
from pyworkflow_testing.report import MISSING, ReportUnavailable, require_plotly
from pyworkflow_testing.trace import CRASH, FAULTS, Mark
from tests.simulation.report_cases import (
    failing_seed_with_a_crash,
    lanes_of,
    page_data,
    ten_thousand_events,
)


def test_a_failing_seed_shows_its_seed_violations_reproduce_line_and_crash_lanes(
    tmp_path: Path,
) -> None:
    failed = failing_seed_with_a_crash()
    sim = failed.sim
    try:
        path = sim.write_report(tmp_path / "report.html")
        page = path.read_text(encoding="utf-8")
        figure, data = page_data(page)
    finally:
        sim.close()
    assert f"seed {sim.seed} <span" in page and "FAILED" in page
    for violation in failed.failure.violations:
        assert html.escape(violation) in page  # as the CLI prints it, every line
    assert f'<pre id="reproduce">{html.escape(failed.failure.reproduce_command)}</pre>' in page
    # One crash mark per crash, each on the lane of the worker whose engine was replaced.
    expected = Counter({f"worker {i}": n for i, n in failed.crashed_workers.items()})
    assert Counter(lanes_of(figure, CRASH)) == expected
    # The run the violations name is listed first and marked.
    run_id = sim.runs[0].run_id
    assert run_id in failed.failure.violations[0]
    assert data["runs"][0]["id"] == run_id and data["runs"][0]["failing"]
    assert [e[2] for e in data["runs"][0]["events"]][0] == "workflow.started"
    # The page stands alone: no element loads anything (plotly.js is inlined).
    assert _loaded(page) == []


def test_every_kind_of_mark_of_a_seed_lands_on_a_lane_it_belongs_to() -> None:
    sim = Simulation(seed=5, faults="all", workers=3, trace=True)
    try:

        async def play() -> None:
            run = await sim.start(onboarding, user_id="ada")
            if await sim.wait_for_hook(run, "activation"):
                await sim.resume_hook(run, "activation", {"via": "test"})
            await sim.run_until_idle()

        asyncio.run(play())
        assert sim.trace is not None
        marks = sim.trace.marks
    finally:
        sim.close()
    assert [m.order for m in marks] == list(range(len(marks)))
    assert all(a.at <= b.at for a, b in zip(marks, marks[1:], strict=False))  # virtual time
    lanes = {kind: {m.lane for m in marks if m.kind == kind} for kind in {m.kind for m in marks}}
    workers = {"worker 0", "worker 1", "worker 2"}
    assert lanes["delivery"] <= workers and lanes["step body"] <= workers
    assert lanes["commit"] == {"storage"} and lanes["start"] == {"script"}
    assert lanes["hook payload"] == {"script"} and lanes["timer fired"] == {"timers"}
    deliveries = [m for m in marks if m.kind == "delivery"]
    assert all("outcome" in m.details for m in deliveries)
    assert all(m.until is not None and m.until >= m.at for m in deliveries)


def test_tracing_changes_nothing_the_seed_decides() -> None:
    def run(trace: bool) -> tuple[str, list[tuple[int, str, str]], bool]:
        sim = Simulation(seed=11, faults="all", workers=3, trace=trace)
        try:
            asyncio.run(_onboard(sim))
            return sim.log_hash(), sim.faults_injected, sim.world.trace is not None
        finally:
            sim.close()

    traced, plain = run(True), run(False)
    assert traced[:2] == plain[:2]  # the same logs and the same faults, decision for decision
    assert (traced[2], plain[2]) == (True, False)


def test_no_trace_unless_asked_for() -> None:
    sim = Simulation(seed=0)
    try:
        assert sim.trace is None and sim.world.trace is None and sim.world.storage.trace is None
        with pytest.raises(RuntimeError, match=r"Simulation\(\.\.\., trace=True\)"):
            sim.write_report("never.html")
    finally:
        sim.close()


def test_a_passing_seed_checks_itself_when_asked_for_a_report(tmp_path: Path) -> None:
    sim = Simulation(seed=2, faults="all", workers=2, trace=True)
    try:
        asyncio.run(_onboard(sim))
        path = sim.write_report(tmp_path / "deep" / "passed.html")  # no check() yet: it runs
        assert sim.last_violations == []
    finally:
        sim.close()
    page = path.read_text(encoding="utf-8")
    assert "PASSED" in page and "Every oracle passed." in page and ">FAILED<" not in page
    assert "Simulation(seed=2, faults=" in page  # the reproduce line of a Simulation


def test_text_from_a_run_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    sim = Simulation(seed=0, trace=True)
    try:
        asyncio.run(_onboard(sim))
        hostile = "</script><script>alert(1)</script><!--"
        path = sim.write_report(tmp_path / "r.html", violations=[hostile], title=hostile)
    finally:
        sim.close()
    page = path.read_text(encoding="utf-8")
    assert hostile not in page
    assert page.count("</script>") == page.count("<script")  # every script closes where it should
    assert html.escape(hostile) in page


def test_a_long_trace_keeps_every_fault_and_samples_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "MAX_MARKS", 200)
    marks = [
        Mark(i, i / 10, "worker 0", CRASH if i % 97 == 0 else "commit", "run_x", f"mark {i}")
        for i in range(5_000)
    ]
    kept, sampled = report_module._kept_marks(marks)
    assert sampled and len(kept) == 200
    assert [m.order for m in kept] == sorted(m.order for m in kept)
    assert {m.order for m in marks if m.kind in FAULTS} <= {m.order for m in kept}


def test_a_seed_of_ten_thousand_events(tmp_path: Path) -> None:
    """Renders, and says how big and how fast (numbers printed, not asserted)."""
    started = time.perf_counter()
    sim = ten_thousand_events()
    simulated = time.perf_counter() - started
    try:
        violations = asyncio.run(sim.violations())  # the per-run oracles (no reruns)
        events = asyncio.run(_events(sim))
        started = time.perf_counter()
        path = sim.write_report(tmp_path / "big.html", violations=violations)
        written = time.perf_counter() - started
        assert sim.trace is not None
        marks = len(sim.trace.marks)
    finally:
        sim.close()
    figure, data = page_data(path)
    assert 9_500 <= events <= 11_000
    assert sum(len(run["events"]) for run in data["runs"]) == events
    assert len(data["marks"]) == min(marks, report_module.MAX_MARKS)
    assert {trace["type"] for trace in figure["data"]} == {"scattergl"}  # WebGL at this size
    size = path.stat().st_size
    print(
        f"\n10k-event seed: {events} events, {marks} marks; simulated (traced) in"
        f" {simulated:.2f}s; report written in {written:.2f}s, {size / 1e6:.1f} MB ({path})"
    )


def test_without_plotly_a_report_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ReportUnavailable) as raised:
        require_plotly()
    assert str(raised.value) == MISSING
    assert "pip install 'pyworkflow-engine[report]'" in MISSING and "\n" not in MISSING


def _loaded(page: str) -> list[tuple[str, str]]:
    """What the elements of ``page`` would fetch: (tag, src or href)."""
    found: list[tuple[str, str]] = []

    class Elements(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend((tag, value or "") for name, value in attrs if name in ("src", "href"))

    Elements().feed(page)
    return found


async def _onboard(sim: Simulation) -> None:
    run = await sim.start(onboarding, user_id="ada")
    await sim.run_until_idle()
    await run.status()


async def _events(sim: Simulation) -> int:
    return sum([len(await run.events()) for run in sim.runs])
