"""The report in a real browser: headless Chromium (Debian's ``chromium``, which
``scripts/install_servers`` installs; this module runs it when the browser is missing), driven by
playwright through ``executable_path`` (playwright's own browser download is never used).

Each page must load from its file alone with no console error, show the seed, the violation and
the failing run, and draw the crash on the lane of the worker that crashed: on the plotted data,
on the SVG points, and under the mouse (the hover label, the details a click shows). A screenshot
of each page is left in the test's ``tmp_path`` (its path is printed: ``pytest -s`` shows it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from pyworkflow_testing.trace import CRASH
from tests.simulation.report_cases import failing_seed_with_a_crash, ten_thousand_events

ROOT = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed with apt (scripts/install_servers) when missing."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "install_servers")],
            capture_output=True,
            timeout=900,
            check=False,
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed and `bash scripts/install_servers` could not install it"
            " (it needs root or passwordless sudo for apt-get)"
        )
    return found


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    # As root Chromium refuses to start inside its sandbox.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium, args=args)
        try:
            yield launched
        finally:
            launched.close()


class Opened:
    """A report open in a browser tab, with every console error and page error it raised."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        started = time.monotonic()
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("#timeline[data-ready]", timeout=LOAD_TIMEOUT_MS)
        self.load_seconds = time.monotonic() - started

    def screenshot(self, path: Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        print(f"\nscreenshot of the report: {path}")
        return path


# The lanes of a kind of mark as plotted, read from plotly's own data in the page.
LANES_OF = """kind => {
  const gd = document.getElementById("timeline");
  const names = gd.layout.yaxis.ticktext;
  return gd.data.filter(t => t.meta === kind)
    .flatMap(t => Array.from(t.y, y => names[-Math.round(y)]));
}"""

# The SVG point of the first mark of a kind: its centre on the page.
POINT_OF = """kind => {
  const gd = document.getElementById("timeline");
  const trace = Array.from(gd.querySelectorAll(".scatterlayer .trace"))
    .find(g => g.__data__ && g.__data__[0].trace.meta === kind);  // d3 binds each its trace
  const point = trace && trace.querySelector("path.point");
  if (!point) return null;
  const box = point.getBoundingClientRect();
  return {x: box.left + box.width / 2, y: box.top + box.height / 2};
}"""


def test_the_page_of_a_failing_seed_in_a_browser(browser: Any, tmp_path: Path) -> None:
    failed = failing_seed_with_a_crash()
    sim = failed.sim
    try:
        path = sim.write_report(tmp_path / f"seed-{sim.seed}.html")
        run_id = sim.runs[0].run_id
    finally:
        sim.close()
    opened = Opened(browser, path)
    page = opened.page
    try:
        assert opened.errors == []
        assert page.title() == f"seed {sim.seed}: FAILED"
        violation = failed.failure.violations[0].splitlines()[0]
        assert page.locator("#violations").is_visible()
        assert violation in page.locator("#violations").inner_text()
        failing = page.locator("#failing")
        assert failing.inner_text() == run_id and failing.is_visible()
        log = page.locator(f"details#run-{run_id}")
        assert log.get_attribute("open") is not None  # the failing run's log, opened
        assert page.locator(f"details#run-{run_id} tbody tr").count() > 0

        # The crash, on the lane of the worker whose engine the world replaced.
        expected = Counter({f"worker {i}": n for i, n in failed.crashed_workers.items()})
        assert Counter(page.evaluate(LANES_OF, CRASH)) == expected
        # Drawn (SVG at this size), and under the mouse: the hover label, then the details.
        point = page.evaluate(POINT_OF, CRASH)
        assert point is not None, "no crash point drawn"
        page.mouse.move(point["x"], point["y"])
        hover = page.locator(".hoverlayer .hovertext")
        hover.wait_for(timeout=5_000)
        assert "crashed at" in (hover.text_content() or "")
        page.mouse.click(point["x"], point["y"])
        details = page.locator("#details")
        assert "crashed at" in details.inner_text() and "worker " in details.inner_text()
        crashed = page.evaluate(
            "() => window.pyworkflowReport.data.marks[+document.getElementById('details')"
            ".getAttribute('data-mark')][5]"
        )
        if crashed:  # a crash with a run: its log is one click away
            page.get_by_role("button", name=f"show {crashed}'s log").click()
            assert page.locator(f"details#run-{crashed}").get_attribute("open") is not None

        # The order view spreads the marks out: x becomes each mark's place in the trace.
        page.locator("#mode-order").click()
        assert page.locator("#timeline").get_attribute("data-mode") == "order"
        assert Counter(page.evaluate(LANES_OF, CRASH)) == expected
        opened.screenshot(tmp_path / "report.png")
        assert opened.errors == []
    finally:
        page.close()


def test_the_page_of_ten_thousand_events_in_a_browser(browser: Any, tmp_path: Path) -> None:
    sim = ten_thousand_events()
    try:
        path = sim.write_report(tmp_path / "big.html", violations=["a violation, for the page"])
        runs = len(sim.runs)
    finally:
        sim.close()
    opened = Opened(browser, path)
    page = opened.page
    try:
        assert opened.errors == []
        traces = page.evaluate(
            "() => document.getElementById('timeline')._fullData.map(t => [t.type, t.x.length])"
        )
        assert sum(length for kind, length in traces if kind == "scattergl") > 25_000
        started = time.monotonic()
        page.locator("#mode-order").click()
        page.wait_for_function(
            "document.getElementById('timeline').getAttribute('data-mode') === 'order'"
        )
        switched = time.monotonic() - started
        summary = page.locator("details.run > summary")
        assert summary.count() == runs
        summary.first.click()  # a log opens, drawn 500 rows at a time
        page.locator("details.run[open] tbody tr").first.wait_for(timeout=5_000)
        total = page.evaluate("() => window.pyworkflowReport.data.runs[0].total")
        assert page.locator("details.run[open] tbody tr").count() == min(total, 500)
        opened.screenshot(tmp_path / "big.png")
        assert opened.errors == []
        print(
            f"10k-event report ({path.stat().st_size / 1e6:.1f} MB) loaded and plotted in"
            f" {opened.load_seconds:.2f}s; order view in {switched:.2f}s"
        )
    finally:
        page.close()
