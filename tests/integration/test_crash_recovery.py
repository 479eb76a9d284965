"""Crash recovery with real processes: SIGKILL a worker mid-run, finish the run in a new one.

Each test starts ``tests/integration/crash_workflows.py`` in a subprocess on a SQLite file in
``tmp_path``, waits (polling storage and the step ledger with a deadline) until the run is at a
known point, kills the process with SIGKILL, and lets a brand-new process finish the run: by an
explicit ``resume``, by the timer service alone, or by lease recovery alone. The ledger the steps
append to says how many times each step body really ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyworkflow import RunStatus, get_workflow_events
from pyworkflow.storage import SQLiteStorageBackend
from tests.polling import until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = "import sys; from tests.integration.crash_workflows import main; main(sys.argv[1:])"
DEADLINE = 15.0
PIPELINE_RESULT = "reserved order-7; charged order-7; packed order-7; shipped order-7"

Spawn = Callable[..., subprocess.Popen[bytes]]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, *args]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start CLI processes in the background; whatever is still alive is killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def _spawn(*args: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        proc = subprocess.Popen(
            _command(*args), cwd=REPO_ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        started.append(proc)
        return proc

    try:
        yield _spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, str, str]:
    return str(tmp_path / "runs.db"), str(tmp_path / "ledger.jsonl"), str(tmp_path / "go")


@pytest.fixture
async def store(paths: tuple[str, str, str]) -> AsyncIterator[SQLiteStorageBackend]:
    """The test's own view of the SQLite file; it only reads, it never advances a run."""
    backend = SQLiteStorageBackend(paths[0])
    yield backend
    await backend.close()


def _run_cli(*args: str) -> Any:
    """Run a CLI command to completion in a new process; return its JSON ``result``."""
    done = subprocess.run(
        _command(*args), cwd=REPO_ROOT, env=_env(), capture_output=True, timeout=DEADLINE
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"{args[0]} process failed:\n{output}"
    return json.loads(done.stdout.decode().strip().splitlines()[-1])["result"]


def _ledger(path: str) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _executions(path: str) -> Counter[str]:
    return Counter(entry["step"] for entry in _ledger(path))


async def _poll(check: Callable[[], Any], what: str, proc: subprocess.Popen[bytes]) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy, or fail at a deadline."""

    def worker_alive() -> None:
        assert proc.poll() is None, f"worker exited with {proc.returncode} before {what}"

    return await until(check, what, DEADLINE, still_possible=worker_alive)


async def _park_in_pack(ledger: str, worker: subprocess.Popen[bytes]) -> str:
    """Wait until the worker is inside ``crash_pack``; return the run id."""
    entry = await _poll(
        lambda: next((e for e in _ledger(ledger) if e["step"] == "crash_pack"), None),
        "the worker to enter crash_pack",
        worker,
    )
    return str(entry["run_id"])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # SIGKILL: no cleanup, no final commit
    assert proc.wait(timeout=DEADLINE) == -9


async def _completed_steps(store: SQLiteStorageBackend, run_id: str) -> list[str]:
    events = await get_workflow_events(run_id, storage=store)
    return [e.data["step_name"] for e in events if e.type.value == "step.completed"]


async def test_run_killed_mid_step_is_finished_by_resume_in_a_new_process(
    spawn: Spawn, paths: tuple[str, str, str], store: SQLiteStorageBackend
) -> None:
    db, ledger, go = paths
    # A short lease: the killed worker holds the run until it runs out, and resume waits for that.
    worker = spawn("start", db, "crash_pipeline", ledger, go, "1.5")
    run_id = await _park_in_pack(ledger, worker)
    _kill(worker)

    run = await store.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING
    assert await _completed_steps(store, run_id) == ["crash_reserve", "crash_charge"]

    Path(go).touch()
    assert _run_cli("resume", db, run_id) == PIPELINE_RESULT

    run = await store.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert json.loads(run.result or "null") == PIPELINE_RESULT
    # completed steps came from the log; the step in flight at the kill ran exactly once more
    assert _executions(ledger) == {
        "crash_reserve": 1,
        "crash_charge": 1,
        "crash_pack": 2,
        "crash_ship": 1,
    }
    pack_pids = [e["pid"] for e in _ledger(ledger) if e["step"] == "crash_pack"]
    assert pack_pids[0] == worker.pid and pack_pids[1] != worker.pid
    assert await _completed_steps(store, run_id) == [
        "crash_reserve",
        "crash_charge",
        "crash_pack",
        "crash_ship",
    ]


async def test_run_killed_while_sleeping_is_woken_by_a_new_process_timer_service(
    spawn: Spawn, paths: tuple[str, str, str], store: SQLiteStorageBackend
) -> None:
    db, ledger, go = paths
    worker = spawn("start", db, "crash_sleeper", ledger, go)
    entry = await _poll(lambda: _ledger(ledger), "crash_reserve to run", worker)
    run_id = entry[0]["run_id"]
    timer = await _poll(lambda: store.get_timer(run_id), "the sleep's timer", worker)
    _kill(worker)

    run = await store.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUSPENDED, "killed too late: sleep over"
    assert _executions(ledger) == {"crash_reserve": 1}

    # the new process is told nothing but the storage and the run id
    assert _run_cli("result", db, run_id) == "reserved order-8; shipped order-8"

    run = await store.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert _executions(ledger) == {"crash_reserve": 1, "crash_ship": 1}
    events = await get_workflow_events(run_id, storage=store)
    woke = next(e for e in events if e.type.value == "sleep.completed")
    assert woke.timestamp >= timer.fire_at


async def test_run_left_running_by_a_killed_worker_is_recovered_through_its_lease(
    spawn: Spawn, paths: tuple[str, str, str], store: SQLiteStorageBackend
) -> None:
    db, ledger, go = paths
    worker = spawn("start", db, "crash_pipeline", ledger, go, "1.0")
    run_id = await _park_in_pack(ledger, worker)
    _kill(worker)
    run = await store.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING and run.lease_owner is not None

    Path(go).touch()
    # no resume: the new process's sweeper must find the expired lease by itself
    assert _run_cli("result", db, run_id, "1.0") == PIPELINE_RESULT

    run = await store.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert run.recovery_attempts == 0  # reset by the steps completed after the recovery
    events = await get_workflow_events(run_id, storage=store)
    assert [e.data for e in events if e.type.value == "workflow.interrupted"] == [
        {"recovery_attempt": 1}
    ]
    types = [e.type.value for e in events]
    assert "workflow.interrupted" in types
    interrupted = types.index("workflow.interrupted")
    assert types[interrupted - 1] == "step.completed"  # crash_charge, the last committed step
    assert types[interrupted + 1 :].count("step.completed") == 2  # crash_pack, crash_ship
    assert _executions(ledger) == {
        "crash_reserve": 1,
        "crash_charge": 1,
        "crash_pack": 2,
        "crash_ship": 1,
    }
