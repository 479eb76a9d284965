"""The celery runtime on the production storages: PostgreSQL and Redis instead of a SQLite file.

One solo worker per backend, SIGKILLed once while its runs are under way; and two workers while
the storage server itself restarts as a crash would (PostgreSQL stopped immediately, Redis
SIGKILLed and back from its append-only file). Every run completes and every log records each
completion once, replays from scratch and is well formed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.celery import workflows as wf
from tests.celery.conftest import Cluster, client_of, until
from tests.celery.test_workers import answer_every_hook, check_logs
from tests.servers import PostgresServer, RedisServer, free_port, postgres_server

pytestmark = pytest.mark.integration

RUNS = 6
BROKER_DB = 13  # the other celery tests use 11 and 12
STORAGE_DB = 14


def _server_cluster(
    redis_server: RedisServer, tmp_path: Path, storage_url: str, *workers: str
) -> Cluster:
    """Solo workers on a fresh broker database of the session's Redis, storing in
    ``storage_url``: started (stop them with ``stop_all``)."""
    broker = f"redis://127.0.0.1:{redis_server.port}/{BROKER_DB}"
    redis.Redis.from_url(broker).flushdb()
    cluster = Cluster(
        broker=broker,
        db=tmp_path / "unused.db",
        ledger=tmp_path / "ledger.jsonl",
        tmp=tmp_path,
        storage_url=storage_url,
    )
    for name in workers:
        cluster.add(name, "solo")
        cluster.start(name)
    return cluster


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
    cluster = _server_cluster(redis_server, tmp_path, storage_url, "s")
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


@pytest.fixture(params=["postgres", "redis"])
def restartable_storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A storage server of this test's own (restarting the session's would disturb the other
    tests), its URL, and how to restart it as a crash would."""
    if request.param == "postgres":
        # durable: a crash must not lose a commit the server acknowledged (the test servers'
        # usual fsync=off / synchronous_commit=off would, and no engine survives that)
        with postgres_server(durable=True) as postgres:

            def restart_postgres() -> None:
                postgres.stop()  # immediate: as a crash
                time.sleep(2.0)  # the outage itself, not a wait for something
                postgres.start()

            yield f"{postgres.dsn}?schema=celery_restart", restart_postgres
        return
    (tmp_path / "storage-redis").mkdir()
    server = RedisServer(free_port(), tmp_path / "storage-redis", persistent=True)
    server.start()
    try:
        yield f"{server.url.rsplit('/', 1)[0]}/0", server.restart  # SIGKILL, back from its AOF
    finally:
        server.stop()


async def test_two_workers_finish_every_run_after_the_storage_server_restarts(
    restartable_storage: tuple[str, Callable[[], None]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    storage_url, restart = restartable_storage
    cluster = _server_cluster(redis_server, tmp_path, storage_url, "r1", "r2")
    try:
        async with client_of(cluster) as client:
            await cluster.wait_ready(client.app, "r1", "r2")
            ledger = str(cluster.ledger)
            run_ids = [await client.start(wf.pipeline, ledger, n) for n in range(RUNS)]
            await until(lambda: len(client.ledger()) >= RUNS, "the workers to get going")
            await asyncio.to_thread(restart)  # mid-work: steps running, sleeps pending
            results = await client.completed(run_ids, deadline=90)
            assert results == [wf.pipeline_result(n) for n in range(RUNS)]
            await check_logs(client, run_ids)  # nothing recorded twice
            assert all(w.alive() for w in cluster.workers.values()), cluster.logs()
            # each worker's service says so once per outage (not once per failed tick)
            outage_lines = [
                line for line in cluster.logs().splitlines() if "engine service tick failed" in line
            ]
            assert len(outage_lines) <= 2 * 2, outage_lines
    finally:
        cluster.stop_all()
