"""Durability, shown: an onboarding run survives ``kill -9`` on embedded SQLite.

``python examples/onboarding_demo.py`` (what ``bash scripts/demo`` runs) tells a short story:

1. worker 1, a child process, starts ``examples.onboarding:onboarding``; it creates the account,
   retries the welcome email once, and goes to sleep on a durable timer. Then we SIGKILL it.
2. worker 2, a fresh process that shares nothing with worker 1 but the SQLite file, resumes the
   run: its timer service wakes the sleep, the run waits for the activation hook, worker 2 answers
   the hook and the run finishes.
3. we print the event log and how many times each step body ran (from a ledger the steps append
   to), and fail with exit code 1 if any step that had completed ran again.

Everything lives in a fresh temporary directory. The parent process only reads storage; it never
advances the run itself. Modes: no argument (the story), ``worker DIR``, ``finish DIR RUN_ID``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pyworkflow import (
    RunStatus,
    configure,
    get_hook_token,
    get_workflow_events,
    get_workflow_result,
    get_workflow_run,
    resume,
    resume_hook,
    start,
)
from pyworkflow.storage import HookStatus, SQLiteStorageBackend

# Run as a script, only examples/ is on sys.path; the workflow is imported as examples.onboarding.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.onboarding import LEDGER_ENV, WELCOME_PAUSE, onboarding

REPO_ROOT = Path(__file__).resolve().parents[1]
USER_ID, EMAIL = "ada", "ada@example.com"
ACTIVATION = {"via": "email link", "ip": "203.0.113.7"}
DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.05


def _paths(workdir: Path) -> tuple[Path, Path, Path]:
    """The SQLite file, the step ledger and the file worker 1 writes the run id to."""
    return workdir / "pyworkflow.db", workdir / "ledger.jsonl", workdir / "run_id"


def _say(text: str) -> None:
    print(text, flush=True)


def _ledger(ledger: Path) -> list[dict[str, Any]]:
    if not ledger.exists():
        return []
    lines = ledger.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# -- child processes ------------------------------------------------------------------------


async def _worker(workdir: Path) -> None:
    """Worker 1: start the run, publish its id, then keep serving its timers until killed."""
    db, _, run_file = _paths(workdir)
    configure(storage=SQLiteStorageBackend(db))
    run_id = await start(onboarding, USER_ID, EMAIL)
    tmp = run_file.with_suffix(".tmp")
    tmp.write_text(run_id)
    tmp.replace(run_file)
    _say(f"  [worker 1, pid {os.getpid()}] started run {run_id}; serving its timers")
    await get_workflow_result(run_id, timeout=DEADLINE_SECONDS)
    _say("  [worker 1] the run finished here: it was not killed in time")


async def _wait_for_hook_token(storage: SQLiteStorageBackend, run_id: str) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while loop.time() < deadline:
        hooks = await storage.list_hooks(run_id, status=HookStatus.PENDING)
        if hooks:  # storage keeps only a digest of the token: the hook key makes it again
            return await get_hook_token(run_id, hooks[0].hook_id, storage=storage)
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"run {run_id} created no activation hook within {DEADLINE_SECONDS}s")


async def _finish(workdir: Path, run_id: str) -> None:
    """Worker 2: resume the run, answer its activation hook and wait for the result."""
    db, _, _ = _paths(workdir)
    storage = SQLiteStorageBackend(db)
    configure(storage=storage)
    tag = f"  [worker 2, pid {os.getpid()}]"
    await resume(run_id)
    run = await get_workflow_run(run_id)
    assert run is not None
    _say(f"{tag} resumed run {run_id} from SQLite: it is {run.status.value}")
    timer = await storage.get_timer(run_id)
    if timer is not None:
        _say(f"{tag} its sleep ends at {timer.fire_at:%H:%M:%S.%f}; our timer service will wake it")
    token = await _wait_for_hook_token(storage, run_id)
    _say(f"{tag} the run is waiting for the user to activate; clicking the link: {ACTIVATION}")
    await resume_hook(token, ACTIVATION)
    result = await get_workflow_result(run_id, timeout=DEADLINE_SECONDS)
    _say(f"{tag} the run finished with: {result!r}")


# -- the story (parent process) -------------------------------------------------------------


def _child(mode: str, *args: str, ledger: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, LEDGER_ENV: str(ledger)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, __file__, mode, *args], env=env, cwd=REPO_ROOT)


async def _is_sleeping(storage: SQLiteStorageBackend, run_file: Path) -> bool:
    """True once the welcome email is done and the run is suspended on its durable sleep."""
    if not run_file.exists():
        return False
    run_id = run_file.read_text()
    run = await get_workflow_run(run_id, storage=storage)
    if run is None or run.status is not RunStatus.SUSPENDED:
        return False
    events = await get_workflow_events(run_id, storage=storage)
    return any(e.type.value == "sleep.started" for e in events)


async def _wait_until_sleeping(
    storage: SQLiteStorageBackend, run_file: Path, worker: subprocess.Popen[bytes]
) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while not await _is_sleeping(storage, run_file):
        if worker.poll() is not None:
            raise RuntimeError(f"worker 1 exited early with code {worker.returncode}")
        if loop.time() > deadline:
            raise TimeoutError(f"the run did not reach its sleep within {DEADLINE_SECONDS}s")
        await asyncio.sleep(POLL_SECONDS)
    return run_file.read_text()


def _completed_steps(ledger: Path, run_id: str) -> list[str]:
    entries = [e for e in _ledger(ledger) if e.get("run_id") == run_id]
    done = {e["step"] for e in entries if e["outcome"] == "completed"}
    return [name for name in dict.fromkeys(e["step"] for e in entries) if name in done]


async def _act_one(workdir: Path, storage: SQLiteStorageBackend) -> str:
    db, ledger, run_file = _paths(workdir)
    _say(f"1. Worker 1 starts an onboarding run for {USER_ID!r} on SQLite ({db}).")
    worker = _child("worker", str(workdir), ledger=ledger)
    try:
        run_id = await _wait_until_sleeping(storage, run_file, worker)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
        worker.wait()
    run = await get_workflow_run(run_id, storage=storage)
    assert run is not None
    steps = ", ".join(_completed_steps(ledger, run_id))
    _say(
        f"   worker 1 killed with SIGKILL after steps {steps}; the run is {run.status.value}"
        f" (in its {WELCOME_PAUSE} sleep) in SQLite at {db}"
    )
    return run_id


def _act_two(workdir: Path, run_id: str) -> None:
    _, ledger, _ = _paths(workdir)
    _say("2. Worker 2, a brand-new process, finishes the run from what SQLite remembers.")
    finisher = _child("finish", str(workdir), run_id, ledger=ledger)
    try:
        code = finisher.wait(timeout=DEADLINE_SECONDS * 2)
    finally:
        if finisher.poll() is None:
            finisher.kill()
            finisher.wait()
    if code != 0:
        raise RuntimeError(f"worker 2 failed with exit code {code}")
    _say("   worker 2 finished the run.")


def _print_events(events: list[Any]) -> None:
    _say(f"   {'seq':>3}  {'event':<20} {'command id':<34} attempt")
    for event in events:
        command = event.data.get("command_id", "")
        attempt = event.data.get("attempt", "")
        _say(f"   {event.sequence:>3}  {event.type.value:<20} {command:<34} {attempt}")


def _check_steps(events: list[Any], entries: list[dict[str, Any]]) -> list[str]:
    """Print executions per step; return the problems (a completed step that ran again)."""
    runs = Counter((e["step_id"], e["attempt"]) for e in entries)
    completions = Counter(e["step_id"] for e in entries if e["outcome"] == "completed")
    problems = [f"{sid} attempt {att} ran {n} times" for (sid, att), n in runs.items() if n > 1]
    for event in events:
        if event.type.value != "step.completed":
            continue
        step_id = event.data["command_id"]
        mine = [e for e in entries if e["step_id"] == step_id]
        attempts = [e["attempt"] for e in mine]
        pids = sorted({e["pid"] for e in mine})
        _say(f"   {step_id:<34} body ran {len(mine)}x (attempts {attempts}) in pid {pids}")
        if completions[step_id] != 1:
            problems.append(f"{step_id} completed {completions[step_id]} times")
    return problems


async def _act_three(workdir: Path, storage: SQLiteStorageBackend, run_id: str) -> int:
    _, ledger, _ = _paths(workdir)
    run = await get_workflow_run(run_id, storage=storage)
    assert run is not None
    events = await get_workflow_events(run_id, storage=storage)
    _say(f"3. The run is {run.status.value}. Its event log, as stored in SQLite:")
    _print_events(events)
    _say("   How many times each step's body executed (from the ledger the steps append to):")
    entries = [e for e in _ledger(ledger) if e.get("run_id") == run_id]
    problems = _check_steps(events, entries)
    if run.status is not RunStatus.COMPLETED:
        problems.append(f"the run ended {run.status.value}, not completed")
    if problems:
        _say("FAILED: " + "; ".join(problems))
        return 1
    _say("   OK: no completed step ran twice; the only repeat is the failed email attempt's retry.")
    return 0


async def _story() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="pyworkflow-demo-"))
    storage = SQLiteStorageBackend(_paths(workdir)[0])
    try:
        run_id = await _act_one(workdir, storage)
        _act_two(workdir, run_id)
        return await _act_three(workdir, storage, run_id)
    finally:
        await storage.close()


def main(argv: list[str]) -> int:
    if not argv:
        return asyncio.run(_story())
    if argv[0] == "worker" and len(argv) == 2:
        asyncio.run(_worker(Path(argv[1])))
        return 0
    if argv[0] == "finish" and len(argv) == 3:
        asyncio.run(_finish(Path(argv[1]), argv[2]))
        return 0
    print(f"usage: {Path(__file__).name} [worker DIR | finish DIR RUN_ID]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
