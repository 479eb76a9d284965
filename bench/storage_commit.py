"""Micro-benchmark of ``StorageBackend.commit``: the engine's per-step write.

Each commit appends two events (step started and completed) at an expected sequence and updates
the run row, as an activation that ran one inline step does. Prints JSON with the p50/p99
latency in microseconds per backend; asserts nothing about speed.

    python bench/storage_commit.py [--commits 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.schemas import Commit, RunStatus, WorkflowRun
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend

WARMUP = 50


def _step_events(run_id: str, step: int, now: datetime) -> list[Event]:
    command_id = f"step:charge:{step}"
    return [
        Event(
            run_id,
            EventType.STEP_STARTED,
            {"command_id": command_id, "step_name": "charge", "attempt": 1},
            timestamp=now,
        ),
        Event(
            run_id,
            EventType.STEP_COMPLETED,
            {"command_id": command_id, "step_name": "charge", "attempt": 1, "result": '"ok"'},
            timestamp=now,
        ),
    ]


async def _measure(backend: StorageBackend, commits: int) -> dict[str, float]:
    run_id = "bench-run"
    now = datetime.now(UTC)
    run, _ = await backend.create_run(WorkflowRun(run_id, "bench"), [])
    head = run.last_sequence
    timings: list[float] = []
    for step in range(WARMUP + commits):
        commit = Commit(
            run_id,
            _step_events(run_id, step, now),
            expected_sequence=head,
            now=now,
            status=RunStatus.RUNNING,
        )
        start = time.perf_counter_ns()
        head = await backend.commit(commit)
        elapsed = time.perf_counter_ns() - start
        if step >= WARMUP:
            timings.append(elapsed / 1000)
    await backend.close()
    timings.sort()
    return {
        "p50_us": round(statistics.median(timings), 1),
        "p99_us": round(timings[int(len(timings) * 0.99) - 1], 1),
        "commits": commits,
    }


async def main(commits: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        factories: dict[str, Callable[[], StorageBackend]] = {
            "memory": InMemoryStorageBackend,
            "sqlite": lambda: SQLiteStorageBackend(Path(tmp) / "bench.db"),
        }
        results = {name: await _measure(make(), commits) for name, make in factories.items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    asyncio.run(main(parser.parse_args().commits))
