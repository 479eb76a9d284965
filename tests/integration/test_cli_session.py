"""A user with only a shell: the ``pyworkflow`` command as real processes, on SQLite.

The project is a folder with a workflows module and a config written by ``pyworkflow setup``;
every command runs as ``python -m pyworkflow.cli`` in that folder, as a user would type it. What
one process leaves (a run waiting on a hook, a run sleeping for an hour) another finds, answers or
cancels. Waiting is polling with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0

FLOWS = '''
from pyworkflow import hook, sleep, step, workflow


@step()
async def session_greeting(name: str) -> str:
    return f"hello {name}"


@workflow()
async def session_greet(name: str) -> str:
    """Greet NAME."""
    return await session_greeting(name)


@workflow()
async def session_approval(order: str = "o1") -> str:
    """Wait for an approval."""
    decision = await hook("approval")
    return f"{order} approved by {decision['by']}" if decision["approved"] else "rejected"


@workflow()
async def session_sleeper() -> str:
    await sleep("1h")
    return "woke"
'''


class Shell:
    """``python -m pyworkflow.cli ...`` in the project folder, with the repository importable."""

    def __init__(self, project: Path) -> None:
        self.project = project
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYWORKFLOW_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.env = env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pyworkflow.cli", *args]

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert done.returncode == code, f"{args}: {done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--output", "json").stdout)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    (tmp_path / "flows.py").write_text(FLOWS)
    sh = Shell(tmp_path)
    sh.run("setup", "--storage", "sqlite", "--storage-path", "./runs.db", "--module", "flows")
    return sh


def line_matching(stream: Any, needle: str, deadline: float) -> str:
    """The first line of ``stream`` holding ``needle``, read by a thread, within ``deadline``."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    end = time.monotonic() + deadline
    while True:
        left = end - time.monotonic()
        assert left > 0, f"no line with {needle!r} within {deadline}s"
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if needle in line:
            return line


def test_a_shell_session_runs_answers_follows_and_cancels(shell: Shell) -> None:
    listed = shell.run("workflows", "list").stdout
    assert "session_greet" in listed and "Greet NAME." in listed

    greeted = shell.json("workflows", "run", "session_greet", "--arg", "name=ada")
    assert (greeted["status"], greeted["result"]) == ("completed", "hello ada")

    run_id = shell.run("workflows", "run", "session_approval", "--no-wait").stdout.strip()
    hooks = shell.json("hooks", "list", "--status", "pending")
    [token] = [h["token"] for h in hooks if h["run_id"] == run_id]
    answered = shell.json("hooks", "resume", token, "--payload", '{"approved": true, "by": "bo"}')
    assert (answered["run_id"], answered["run_status"]) == (run_id, "completed")
    logs = shell.run("runs", "logs", run_id).stdout
    assert (
        logs.index("hook.created") < logs.index("hook.received") < logs.index("workflow.completed")
    )
    status = shell.json("runs", "status", run_id)
    assert (status["status"], status["result"]) == ("completed", "o1 approved by bo")

    sleeping = shell.run("workflows", "run", "session_sleeper", "--no-wait").stdout.strip()
    assert shell.json("runs", "status", sleeping)["status"] == "suspended"
    cancelled = shell.run("runs", "cancel", sleeping, "--wait", "--timeout", "30").stdout
    assert cancelled.strip() == f"cancellation of run {sleeping} recorded; status: cancelled"
    assert shell.json("runs", "status", sleeping)["status"] == "cancelled"


def test_a_waiting_run_is_answered_from_another_shell(shell: Shell) -> None:
    waiting = shell.spawn("workflows", "run", "session_approval", "--arg", "order=o9", "-o", "json")
    try:
        assert waiting.stderr is not None
        line = line_matching(waiting.stderr, "pyworkflow hooks resume ", DEADLINE)
        token = line.split("pyworkflow hooks resume ", 1)[1].split()[0]
        shell.run("hooks", "resume", token, "--payload", '{"approved": true, "by": "cy"}')
        out, _ = waiting.communicate(timeout=DEADLINE)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0
    document = json.loads(out)
    assert (document["status"], document["result"]) == ("completed", "o9 approved by cy")


def test_a_hook_answered_where_the_workflow_is_not_imported_waits_for_a_process_that_has_it(
    shell: Shell, tmp_path: Path
) -> None:
    run_id = shell.run("workflows", "run", "session_approval", "--no-wait").stdout.strip()
    [token] = [h["token"] for h in shell.json("hooks", "list") if h["run_id"] == run_id]
    elsewhere = tmp_path / "elsewhere"  # no config file there, so no workflow module imported
    elsewhere.mkdir()
    stranger = Shell(elsewhere)
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    answered = stranger.run(
        "--storage", storage, "hooks", "resume", token, "--payload", '{"approved": true, "by": "x"}'
    )
    assert "is not imported here, so the run was not advanced" in answered.stderr
    left = shell.json("runs", "status", run_id)
    assert (left["status"], left["blocked"]) == ("suspended", None)
    assert shell.run("runs", "resume", run_id).stdout.splitlines()[0] == f"{run_id}: completed"
    assert shell.json("runs", "status", run_id)["result"] == "o1 approved by x"


def test_errors_in_a_shell_are_one_line_with_the_exit_code(shell: Shell) -> None:
    nothing_yet = shell.run("runs", "list", code=1)
    assert "no SQLite database at " in nothing_yet.stderr and "runs.db" in nothing_yet.stderr
    shell.run("workflows", "run", "session_greet", "--arg", "name=x")
    unknown = shell.run("runs", "status", "nope", code=1)
    assert unknown.stderr.strip() == "Error: no workflow run with id 'nope'"
    bad_json = shell.run("workflows", "run", "session_greet", "--args-json", "{", code=2)
    assert len(bad_json.stderr.strip().splitlines()) == 1 and "is not JSON" in bad_json.stderr
    typo = shell.run("--storage", "sqlite:///nowhere/runs.db", "runs", "list", code=1)
    assert typo.stderr.strip().startswith("Error: no SQLite database at ")


CHANGED = """
from pyworkflow import sleep, step, workflow


@step()
async def pick() -> str:
    return "picked"


@step()
async def pack() -> str:
    return "packed"


@workflow()
async def session_changing() -> list[str]:
    out = [await {first}(), await {second}()]
    await sleep("1h")
    return out
"""

WAIT_FOR_RESULT = """
import asyncio, sys
from pyworkflow import NonDeterminismError, configure_from_yaml, get_workflow_result
import changing

async def main() -> None:
    configure_from_yaml("pyworkflow.config.yaml")
    try:
        await get_workflow_result(sys.argv[1], timeout=600)
    except NonDeterminismError as exc:
        print("raised", exc.position, exc.expected, "|", exc.actual)

asyncio.run(main())
"""


def test_a_run_whose_code_changed_under_it_shows_the_divergence(shell: Shell) -> None:
    # (no .pyc: the module changes within the second, at the same size)
    shell.env["PYTHONDONTWRITEBYTECODE"] = "1"
    module = shell.project / "changing.py"
    module.write_text(CHANGED.format(first="pick", second="pack"))
    run_id = shell.run(
        "--module", "changing", "workflows", "run", "session_changing", "--no-wait"
    ).stdout.strip()
    # a deploy swaps the steps while the run sleeps
    module.write_text(CHANGED.format(first="pack", second="pick"))
    resumed = shell.run("--module", "changing", "runs", "resume", run_id, code=1)
    assert resumed.stderr.startswith("Error: workflow 'session_changing' run ")
    assert "not deterministic" in resumed.stderr and len(resumed.stderr.splitlines()) == 1
    status = shell.json("runs", "status", run_id)
    assert status["status"] == "suspended"
    blocked = status["blocked"]
    assert blocked["kind"] == "non_determinism"
    assert blocked["detail"]["expected"] == "step 'pick' (step:pick:1)"
    assert blocked["detail"]["actual"] == "step 'pack' (step:pack:1)"
    shown = shell.run("runs", "status", run_id).stdout
    assert "blocked" in shown and "step 'pack' (step:pack:1)" in shown
    listed = shell.run("runs", "list", "--status", "blocked", "-o", "plain").stdout
    assert listed.split("\t")[0] == run_id
    # a caller waiting on the result hears the divergence instead of waiting out its timeout
    (shell.project / "wait_for_result.py").write_text(WAIT_FOR_RESULT)
    waited = subprocess.run(
        [sys.executable, "wait_for_result.py", run_id],
        cwd=shell.project,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert waited.stdout.strip() == (
        "raised 1 step 'pick' (step:pick:1) | step 'pack' (step:pack:1)"
    ), waited.stderr
    # the code is fixed: the run carries on from where it stopped, and is no longer blocked
    module.write_text(CHANGED.format(first="pick", second="pack"))
    shell.run("--module", "changing", "runs", "resume", run_id)
    fixed = shell.json("runs", "status", run_id)
    assert (fixed["status"], fixed["blocked"]) == ("suspended", None)
