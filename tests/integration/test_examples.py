"""The runnable examples and the README quick start, run as a user would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


# The examples of ``examples/local`` (each also in ``examples/celery``): what their output must
# show, line fragments in order.
EXAMPLES: dict[str, list[str]] = {
    "cancellation": [
        "cancellation recorded: True",
        "status: cancelled",
        "get_workflow_result raised CancellationError",
        "customer changed their mind",
        "steps recorded: reserve_inventory, release_inventory",
        "export: cancelled before the end of its step",
    ],
    "child_workflows": [
        "order A-1: {'order': 'A-1', 'status': 'shipped', 'receipt': 'payment-A-1',"
        " 'tracking': 'tracking-A-1'}",
        "child payment: completed",
        "child shipping: completed",
        "order B-2: {'order': 'B-2', 'status': 'payment failed',"
        " 'why': 'card declined for 5000'}",
    ],
    "child_workflow_patterns": [
        "gallery: {'thumbnails': ['cat.png@128px', 'dog.png@128px', 'owl.png@128px'],"
        " 'banner': 'banner.png@1200px', 'report': ['running', True, 'ended with"
        " pyworkflow.core.exceptions:CancellationError']}",
        "three levels: 3",
        "four levels: refused by MaxNestingDepthError: True",
    ],
    "continue_as_new": [
        "total: 1225 (expected 1225)",
        "chain of 6 runs: continued_as_new -> continued_as_new -> continued_as_new ->"
        " continued_as_new -> continued_as_new -> completed",
        "longest log in the chain: ",
    ],
    "schedules": [
        "created metrics: next run at",
        "nightly runs at 09:00 Prague time: True",
        "metrics fired ",
        "last metrics run: api: 21",
        "heartbeat declared in code: True",
        "sync (buffer_one) ran ",
        "paused: paused",
        "triggered while paused: api: 21",
        "backfill twice, same runs: True",
        "resumed: active",
        "schedules: [('heartbeat', 'active'), ('metrics', 'active'), ('nightly', 'active'),"
        " ('sync', 'active'), ('twice-a-day', 'deleted')]",
    ],
    "child_from_step": [
        "the step started run_",
        "child result: audited: imported report.csv",
        "child's parent: True, depth 1",
        "waiting in a step: refused: start_child_workflow('audit') in step",
    ],
}


def check_output(name: str, done: subprocess.CompletedProcess[str], logs: str = "") -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output}\n{logs}"
    at = 0
    for fragment in EXAMPLES[name]:
        found = done.stdout.find(fragment, at)
        assert found >= 0, f"{name}: {fragment!r} missing (in order) from:\n{output}\n{logs}"
        at = found + len(fragment)
    assert "Traceback" not in output, output


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_local_example_runs(name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "local" / f"{name}.py")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_output(name, done)
    assert (tmp_path / "pyworkflow_data").exists()  # the embedded SQLite default


def _quick_start_code() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README.md has no ```python block under 'Quick start'"
    return match.group(1)


def test_onboarding_demo_kills_a_worker_and_finishes_the_run_in_another() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "onboarding_demo.py")],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(
        r"worker 1 killed with SIGKILL after steps create_account, send_welcome_email;"
        r" the run is suspended",
        output,
    ), output
    assert "the run finished with: 'ada: account acct-ada created" in output, output
    assert "activated via email link" in output, output
    assert "3. The run is completed." in output, output
    assert "no completed step ran twice" in output, output
    assert "FAILED" not in output, output


def test_readme_quick_start_runs_and_prints_the_result(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(_quick_start_code(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "charged 42.0 for order-1; shipped order-1"
    assert (tmp_path / "pyworkflow_data" / "pyworkflow.db").exists()
