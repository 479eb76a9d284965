"""Two processes serving one SQLite file never run a step body twice when nobody crashes.

Regression test, on real processes, for a double execution with inline steps: a step fails once
and is retried a second later, then a long step runs. The retry's timer fires and its claim
lasts ``lease_ttl``; if the activation that runs the long step leaves that timer row in place,
the claim runs out mid-step, the timer fires again in the other process, and that process's
activation takes the run's lease and runs the long step a second time.

Process B (``serve``) starts first and only serves the storage: timer loop, sweeper, lease
renewal. Process A (``start``) then starts ``RUNS`` runs of ``flaky_then_long`` and serves them.
Both run a ``LocalRuntime`` with inline steps and a 1s lease_ttl; the long step (3.5s) outlasts
three claims of its timer. The test waits (polling storage with a deadline) until every run has
finished, kills both processes, and compares the ledger the step bodies append to with the
committed log: every (run, step, attempt) body started exactly once.

Why the bug shows almost surely, not one time in two: whoever claims a timer tends to claim it
again when the claim runs out, because the service loop's ticks repeat with a period of exactly
lease_ttl (renewal every third, sweep every half of it, polls chained from those). So process A
starts its runs ``START_GAP_SECONDS`` apart and not on a tick of its own (each first claim then
falls at its own phase, a separate chance), and B polls five times as often as A (10 ms against
50 ms), so B usually claims a refired timer first.

Nothing else may run a body twice here: steps run inline (no redelivery), no process crashes,
and each lease (1s) is renewed every third of a second by the process holding it. Should a
lease run out anyway (a machine stalled for most of a second), the sweeper records a
``workflow.interrupted`` event, and the failure message names the runs it happened to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pyworkflow import RunStatus, get_workflow_events
from pyworkflow.storage import SQLiteStorageBackend
from tests.polling import until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = "import sys; from tests.integration.double_workflows import main; main(sys.argv[1:])"
DEADLINE = 15.0
LEASE_TTL = "1.0"
POLL_A = "0.05"
POLL_B = "0.01"
RUNS = 3
RESULT = "flaky ok; long ok"

Spawn = Callable[..., subprocess.Popen[bytes]]
Key = tuple[str, str, int]  # (run_id, step_id, attempt)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start worker processes (stdout to ``NAME.out``, stderr to ``NAME.err``); all are killed
    at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def _spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (
            (tmp_path / f"{name}.out").open("wb") as out,
            (tmp_path / f"{name}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-c", RUNNER, *args],
                cwd=REPO_ROOT,
                env=_env(),
                stdout=out,
                stderr=err,
            )
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
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorageBackend]:
    """The test's own view of the SQLite file; it only reads, it never advances a run."""
    backend = SQLiteStorageBackend(tmp_path / "runs.db")
    yield backend
    await backend.close()


def _alive(tmp_path: Path, **procs: subprocess.Popen[bytes]) -> Callable[[], None]:
    """A ``still_possible`` check: every named process is still running."""

    def check() -> None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                err = (tmp_path / f"{name}.err").read_text(errors="replace")
                raise AssertionError(f"process {name} exited with {proc.returncode}:\n{err}")

    return check


def _printed_run_ids(out: Path) -> list[str] | None:
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.startswith('{"run_ids"') and line.endswith("}"):
            return list(json.loads(line)["run_ids"])
    return None


def _ledger(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _ledger_keys(lines: list[str]) -> Counter[Key]:
    keys: Counter[Key] = Counter()
    for line in lines:
        run_id, step_id, attempt, _pid = line.split()
        keys[(run_id, step_id, int(attempt))] += 1
    return keys


async def _finished(store: SQLiteStorageBackend, run_ids: list[str]) -> bool:
    for run_id in run_ids:
        run = await store.get_run(run_id)
        if run is None or not run.status.is_terminal:
            return False
    return True


async def test_a_retried_step_then_a_long_step_run_once_with_two_processes_serving(
    spawn: Spawn, store: SQLiteStorageBackend, tmp_path: Path
) -> None:
    db, ledger, ready = str(tmp_path / "runs.db"), tmp_path / "ledger.txt", tmp_path / "ready"

    server = spawn("b", "serve", db, LEASE_TTL, POLL_B, str(ready))
    await until(
        ready.exists, "process B to serve", DEADLINE, still_possible=_alive(tmp_path, b=server)
    )
    starter = spawn("a", "start", db, LEASE_TTL, POLL_A, str(ledger), str(RUNS))
    both_alive = _alive(tmp_path, a=starter, b=server)
    run_ids: list[str] = await until(
        lambda: _printed_run_ids(tmp_path / "a.out"),
        "process A to start its runs",
        DEADLINE,
        still_possible=both_alive,
    )
    await until(
        lambda: _finished(store, run_ids),
        "the runs to finish",
        DEADLINE,
        still_possible=both_alive,
    )
    for proc in (starter, server):  # the ledger is final once nobody can run a body any more
        proc.kill()
        proc.wait()

    logs = {run_id: await get_workflow_events(run_id, storage=store) for run_id in run_ids}
    started: list[Key] = [
        (run_id, e.data["command_id"], e.data["attempt"])
        for run_id, events in logs.items()
        for e in events
        if e.type.value == "step.started"
    ]
    interrupted = [
        run_id
        for run_id, events in logs.items()
        if any(e.type.value == "workflow.interrupted" for e in events)
    ]
    lines = _ledger(ledger)
    ledger_text = "\n".join(lines)
    assert _ledger_keys(lines) == Counter(started), (
        "a step body did not run exactly once per (run, step, attempt) in the log; the ledger"
        f" (run_id step_id attempt pid; A is {starter.pid}, B is {server.pid}):\n{ledger_text}\n"
        f"runs whose lease ran out and was recovered (a stalled process): {interrupted or 'none'}"
    )

    for run_id, events in logs.items():
        steps = [
            (e.data["step_name"], e.data["attempt"])
            for e in events
            if e.type.value == "step.started"
        ]
        assert steps == [("double_flaky", 1), ("double_flaky", 2), ("double_long", 1)], run_id
        run = await store.get_run(run_id)
        assert run is not None and run.status is RunStatus.COMPLETED, run
        assert json.loads(run.result or "null") == RESULT
