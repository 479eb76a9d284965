"""The celery runtime on the production storages: PostgreSQL and Redis instead of a SQLite file.

One solo worker per backend, SIGKILLed once while its runs are under way; every run completes
and every log records each completion once, replays from scratch and is well formed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.celery import workflows as wf
from tests.celery.conftest import Cluster, client_of, until
from tests.celery.test_workers import answer_every_hook, check_logs
from tests.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration

RUNS = 6
BROKER_DB = 13  # the other celery tests use 11 and 12
STORAGE_DB = 14


@pytest.fixture(params=["postgres", "redis"])
def server_cluster(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        storage_url = f"{postgres.dsn}?schema=celery_{tmp_path.name[-12:].replace('-', '_')}"
    else:
        storage_url = f"redis://127.0.0.1:{redis_server.port}/{STORAGE_DB}"
        redis.Redis.from_url(storage_url).flushdb()
    broker = f"redis://127.0.0.1:{redis_server.port}/{BROKER_DB}"
    redis.Redis.from_url(broker).flushdb()
    cluster = Cluster(
        broker=broker,
        db=tmp_path / "unused.db",
        ledger=tmp_path / "ledger.jsonl",
        tmp=tmp_path,
        storage_url=storage_url,
    )
    cluster.add("s", "solo")
    cluster.start("s")
    try:
        yield cluster
    finally:
        cluster.stop_all()


async def test_runs_survive_a_killed_worker_on_server_storage(server_cluster: Cluster) -> None:
    cluster = server_cluster
    async with client_of(cluster) as client:
        await cluster.wait_ready(client.app, "s")
        ledger = str(cluster.ledger)
        run_ids = [await client.start(wf.order, ledger, n) for n in range(RUNS)]

        async def some_work_done() -> bool:
            return len(client.ledger()) >= RUNS

        await until(some_work_done, "the worker to start on the runs")
        cluster.kill("s")  # SIGKILL, mid-run
        cluster.start("s")
        await cluster.wait_ready(client.app, "s")

        await answer_every_hook(client, run_ids, {"ok": True})
        results = await client.completed(run_ids)
        assert results == [wf.order_result(n) for n in range(RUNS)]
        await check_logs(client, run_ids)
