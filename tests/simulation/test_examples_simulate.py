"""``pyworkflow simulate`` over the example workflows of ``examples/local``: 500 seeds each, every
fault kind, as a user would run it (the issue's bar for cancellation, children and chains)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYWORKFLOW = Path(sys.executable).parent / "pyworkflow"

# (module:workflow, arguments)
EXAMPLE_WORKFLOWS = [
    ("examples.local.cancellation:order_with_cleanup", ["order-1"]),
    ("examples.local.child_workflows:order", ["A-1", 120]),
    ("examples.local.child_workflows:order", ["B-2", 5000]),
    ("examples.local.child_workflow_patterns:gallery", [["a.png", "b.png"]]),
    ("examples.local.child_workflow_patterns:too_deep", []),
    ("examples.local.continue_as_new:batch_processor", [0]),
    ("examples.local.child_from_step:importer", ["r.csv"]),
]


@pytest.mark.parametrize(
    ("target", "args"), EXAMPLE_WORKFLOWS, ids=[f"{t}{a}" for t, a in EXAMPLE_WORKFLOWS]
)
def test_simulate_passes_500_seeds_with_every_fault(target: str, args: list[object]) -> None:
    done = subprocess.run(
        [
            str(PYWORKFLOW),
            "simulate",
            target,
            "--args",
            json.dumps(args),
            "--seeds",
            "0..499",
            "--faults",
            "all",
            "--jobs",
            "2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "500 passed, 0 failed" in done.stdout, done.stdout[-2000:]
