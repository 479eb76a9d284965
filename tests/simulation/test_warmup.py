"""A sweep warms its process once before forking its seeds, and leaves no trace of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import random, threading
from pyworkflow.core.registry import list_steps, list_workflows
from pyworkflow_testing import warmup

random.seed(7)
before = random.getstate()
workflows, steps = set(list_workflows()), set(list_steps())
ran = []
original = warmup._simulate

async def counted():
    await original()
    ran.append(1)

warmup._simulate = counted
warmup.warm_up()
warmup.warm_up()  # once per process
assert ran == [1], ran  # the simulation ran, without an error swallowed
assert set(list_workflows()) == workflows and set(list_steps()) == steps
assert threading.active_count() == 1  # the sweep can fork its seeds
assert random.getstate() == before
print("ok")
"""


def test_the_warm_up_runs_once_and_leaves_nothing_behind() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
