"""The celery runtime with its broker behind Redis Sentinel (``sentinel://``), for real.

A real worker process (``pyworkflow worker run``, its broker a ``sentinel://`` URL naming three
sentinels, ``tests/sentinel.py``) runs workflows to completion; then the broker's master is
SIGKILLed while runs are in flight, Sentinel promotes the replica, and every run still completes
with each completion recorded once. A broker URL whose sentinels do not answer, or do not know
the master's name, stops the worker before it starts, with one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from pyworkflow.celery import CelerySettings
from pyworkflow.celery.app import configure_app
from pyworkflow.celery.worker import WorkerStartupError, check_broker
from tests.celery import workflows as wf
from tests.celery.conftest import Cluster, client_of, until
from tests.celery.test_workers import check_logs
from tests.sentinel import SentinelGroup, sentinel_group
from tests.servers import free_port

pytestmark = pytest.mark.integration

RUNS = 6
BROKER_DB = 2


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with sentinel_group() as made:
        yield made


@pytest.fixture
def cluster(group: SentinelGroup, tmp_path: Path) -> Iterator[Cluster]:
    """One prefork worker (two children) whose broker is the group's master, found by URL."""
    made = Cluster(
        broker=group.url(db=BROKER_DB),
        db=tmp_path / "runs.db",
        ledger=tmp_path / "ledger.jsonl",
        tmp=tmp_path,
    )
    made.add("w", "prefork")
    made.start("w")
    try:
        yield made
    finally:
        made.stop_all()


async def test_a_worker_on_a_sentinel_broker_finishes_every_run_across_a_failover(
    group: SentinelGroup, cluster: Cluster
) -> None:
    async with client_of(cluster) as client:
        await cluster.wait_ready(client.app, "w")
        ledger = str(cluster.ledger)
        first = await client.start(wf.pipeline, ledger, 0)
        assert await client.completed([first]) == [wf.pipeline_result(0)]
        old_master = group.master()
        with redis.Redis(port=old_master.port, db=BROKER_DB) as broker:
            assert broker.keys("_kombu.binding*")  # the broker's data: on the master, in its db

        run_ids = [await client.start(wf.pipeline, ledger, n) for n in range(1, RUNS + 1)]
        started = {line["run_id"] for line in client.ledger()}

        def under_way() -> bool:
            return len({line["run_id"] for line in client.ledger()} - started) >= RUNS // 2

        await until(under_way, "the worker to be under way on the runs")
        old, new = await asyncio.to_thread(group.kill_master)
        assert old is old_master and group.master() is new

        results = await client.completed(run_ids)
        assert results == [wf.pipeline_result(n) for n in range(1, RUNS + 1)]
        await check_logs(client, [first, *run_ids])
        # The worker rode the failover out (the same process), and works through the new master.
        assert cluster.workers["w"].alive(), cluster.logs()
        last = await client.start(wf.pipeline, ledger, RUNS + 1)
        assert await client.completed([last]) == [wf.pipeline_result(RUNS + 1)]


def _app_on(broker: str) -> Celery:
    app = Celery("pyworkflow-sentinel-tests")
    return configure_app(app, CelerySettings(broker_url=broker))


def test_a_broker_whose_sentinels_do_not_answer_stops_the_worker_with_one_line() -> None:
    ports = free_port(), free_port()
    url = f"sentinel://:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster"
    app = _app_on(url)
    try:
        with pytest.raises(WorkerStartupError) as refused:
            check_broker(app, timeout=2.0)
    finally:
        app.close()
    message = str(refused.value)
    shown = url.replace("s3cret", "***")
    assert message.startswith(f"cannot reach the Celery broker at {shown}: No master found")
    assert all(f"127.0.0.1:{port} - " in message for port in ports)  # each sentinel, briefly
    assert "s3cret" not in message and "\n" not in message


def test_a_broker_master_name_no_sentinel_knows_stops_the_worker(group: SentinelGroup) -> None:
    app = _app_on(group.url(db=BROKER_DB, master_name="nosuchmaster"))
    try:
        with pytest.raises(WorkerStartupError, match="No master found for 'nosuchmaster'"):
            check_broker(app, timeout=2.0)
    finally:
        app.close()
