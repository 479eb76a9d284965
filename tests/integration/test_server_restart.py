"""Runs in flight survive their storage server restarting, on the local runtime.

PostgreSQL stops (as a crash does: ``pg_ctl stop -m immediate``) in the middle of work and comes
back two seconds later; Redis (storage, with its append-only file) is SIGKILLed and restarted.
Every run finishes once the server is back, each step recorded once, without the process being
told anything: its connections come back by themselves.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pyworkflow import api, sleep, step, workflow
from pyworkflow.model.events import EventType
from pyworkflow.model.schemas import RunStatus
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.postgres import PostgresStorageBackend
from pyworkflow.storage.redis import RedisStorageBackend
from tests import servers

RUNS = 8
DEADLINE = 90.0


@step(name="restart_add")
async def add(total: int, n: int) -> int:
    return total + n


@workflow(name="restart_pipeline", max_recovery_attempts=50)
async def pipeline(seed: int) -> int:
    total = seed
    for n in range(4):
        total = await add(total, n)
        await sleep(0.3)
    return total


async def _all_complete(storage: StorageBackend, run_ids: list[str]) -> None:
    """Every run ends (polling with a deadline), completed, each step recorded once."""
    began = time.monotonic()
    while True:
        runs = [await storage.get_run(run_id) for run_id in run_ids]
        if all(run is not None and run.status.is_terminal for run in runs):
            break
        assert time.monotonic() - began < DEADLINE, [
            (run.run_id, run.status.value) for run in runs if run is not None
        ]
        await asyncio.sleep(0.1)
    for seed, run_id in enumerate(run_ids):
        assert await api.get_workflow_result(run_id, storage=storage) == seed + 6
        events = await storage.get_events(run_id)
        completed = [e for e in events if e.type is EventType.STEP_COMPLETED]
        assert len(completed) == 4  # each step recorded once
        run = await storage.get_run(run_id)
        assert run is not None and run.status is RunStatus.COMPLETED


async def test_runs_finish_after_postgres_restarts_mid_work() -> None:
    with servers.postgres_server() as server:
        storage = PostgresStorageBackend(server.dsn, schema="restart")
        runtime = LocalRuntime(poll_interval=0.2, lease_ttl=2.0)
        try:
            run_ids = [
                await api.start(pipeline, seed, runtime=runtime, storage=storage)
                for seed in range(RUNS)
            ]
            await asyncio.sleep(0.4)  # mid-work: runs sleeping, timers due soon
            server.stop()
            await asyncio.sleep(2.0)  # the outage
            server.start()
            await _all_complete(storage, run_ids)
        finally:
            await runtime.shutdown()
            await storage.close()


async def test_runs_finish_after_redis_storage_restarts_mid_work(tmp_path: Path) -> None:
    server = servers.RedisServer(servers.free_port(), tmp_path, persistent=True)
    server.start()
    storage = RedisStorageBackend(server.url, prefix="restart")
    runtime = LocalRuntime(poll_interval=0.2, lease_ttl=2.0)
    try:
        run_ids = [
            await api.start(pipeline, seed, runtime=runtime, storage=storage)
            for seed in range(RUNS)
        ]
        await asyncio.sleep(0.4)
        server.restart()  # SIGKILL, then back at once from its append-only file
        await asyncio.sleep(1.0)
        await _all_complete(storage, run_ids)
    finally:
        await runtime.shutdown()
        await storage.close()
        server.stop()
