"""Logs: a run's lifecycle at INFO with its ids bound, one JSON object per line on request,
nothing at all until configured, and no line twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys
from pyworkflow import (
    configure, configure_logging, get_workflow_result, hook, resume_hook, sleep, start, step,
    workflow,
)
from pyworkflow.storage.memory import InMemoryStorageBackend

calls = []

@step(name="log_flaky", max_retries=1, retry_delay=[0.01])
async def flaky() -> int:
    calls.append(1)
    if len(calls) == 1:
        raise ConnectionError("flaky")
    return 1

@workflow(name="log_flow")
async def flow() -> str:
    await flaky()
    await sleep(0.02)
    answer = await hook("approval", on_created=tokens.append)
    return answer["ok"]

tokens = []

async def main() -> None:
    configure(storage=InMemoryStorageBackend())
    mode = sys.argv[1]
    if mode != "none":
        configure_logging(level=sys.argv[2], json_logs=mode == "json")
    run_id = await start(flow)
    for _ in range(500):
        if tokens:
            break
        await asyncio.sleep(0.01)
    await resume_hook(tokens[0], {"ok": "yes"})
    print(await get_workflow_result(run_id, timeout=10))

asyncio.run(main())
"""


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "log_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "yes"
    return done


def test_json_logs_give_one_object_per_line_with_the_lifecycle_and_its_ids(
    tmp_path: Path,
) -> None:
    lines = _run(tmp_path, "json", "INFO").stderr.splitlines()
    records = [json.loads(line)["record"] for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    run_ids = {r["extra"].get("run_id") for r in records}
    assert len(run_ids) == 1 and None not in run_ids  # every line names the run
    for expected in (
        "started",
        "step log_flaky attempt 1 failed (flaky); retrying",
        "suspended",
        "timer of run",
        "resumed",
        "hook",
        "completed",
    ):
        assert any(expected in m for m in messages), (expected, messages)
    started = next(r for r in records if r["message"].endswith("started"))
    assert started["extra"]["workflow"] == "log_flow" and started["level"]["name"] == "INFO"
    failed = next(r for r in records if "attempt 1 failed" in r["message"])
    assert failed["extra"]["step_id"] == "step:log_flaky:1"
    assert sum(m.endswith("started") for m in messages) == 1  # no line twice
    assert sum(m.endswith("completed") for m in messages) == 1


def test_nothing_is_printed_until_configured_and_warning_keeps_the_lifecycle_out(
    tmp_path: Path,
) -> None:
    assert _run(tmp_path, "none", "-").stderr == ""
    assert _run(tmp_path, "text", "WARNING").stderr == ""
    text = _run(tmp_path, "text", "INFO").stderr.splitlines()
    started = [line for line in text if "| INFO    | pyworkflow.engine.runs | run " in line]
    assert len(started) == 1  # once: loguru's default handler does not print it again
