"""The README's shell session runs as printed, in a fresh folder, and ends as it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _session() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"<!-- test: shell -->\n```sh\n(.*?)```", text, re.S)
    assert found, "the README lost its shell session"
    return found.group(1)


def test_the_readme_shell_session_runs_as_printed(tmp_path: Path) -> None:
    script = (
        "set -euo pipefail\n"
        + _session()
        + 'printf "\\n@@%s@@\\n" "$(pyworkflow -o json runs status "$RUN")"\n'
        + 'printf "\\n@@%s@@\\n" "$(pyworkflow -o json runs status "$SLEEPER")"\n'
    )
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("PYWORKFLOW_STORAGE_URL", None)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finals = [json.loads(part) for part in re.findall(r"@@(.*?)@@", done.stdout, re.S)]
    approved, cancelled = finals
    assert approved["status"] == "completed"
    assert approved["result"] == "order o-1 shipped, approved by ada"
    assert cancelled["status"] == "cancelled"
    assert "Hello, Ada!" in done.stdout
    assert "approve_order" in done.stdout and "remind" in done.stdout
