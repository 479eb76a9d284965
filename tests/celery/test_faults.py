"""Losing workers and the broker: every run still finishes, and nothing is recorded twice.

- Workers are SIGKILLed at random moments, repeatedly, while runs start and progress: a whole
  worker (its process group: a prefork worker's children die with it), also while it is still
  starting, or one child of a prefork worker that is up.
  Their in-flight messages come back by Celery's requeue (a lost child), Redis's visibility
  timeout, or — whatever the message did — the sweeper, once the run's lease runs out.
- The broker (Redis) is killed, stays away for 2 s and comes back empty: every queued message is
  gone, and timers and leases in storage bring every run back.

Set ``PYWORKFLOW_KILL_SEED`` to replay a kill schedule; a failure prints the seed it used.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from tests.celery import workflows as wf
from tests.celery.conftest import Client, until
from tests.celery.test_workers import check_logs
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

KILLS = 6
RUNS = 20


async def test_workers_killed_at_random_moments_lose_no_run(client: Client) -> None:
    cluster = client.cluster
    seed = int(os.environ.get("PYWORKFLOW_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    ledger = str(cluster.ledger)
    kills: list[str] = []

    async def pool_is_up(name: str) -> bool:
        # Celery gives up on a prefork worker whose child dies while its pool is still starting
        # ("Could not start worker processes"): kill a child only once the worker answers.
        loop = asyncio.get_running_loop()
        return bool(await loop.run_in_executor(None, cluster.ping, client.app, [name], 0.3))

    async def chaos() -> None:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.2, 0.7))
            victim = rng.choice(["a", "b"])
            child = victim == "a" and rng.random() < 0.4 and await pool_is_up("a")
            if child and cluster.kill_child("a"):
                kills.append("a:child")
                continue
            cluster.kill(victim)
            kills.append(victim)
            cluster.start(victim)

    run_ids: list[str] = []
    saboteur = asyncio.create_task(chaos())
    try:
        for n in range(RUNS):  # runs start while workers die: some are lost mid-start
            run_ids.append(await client.start(wf.pipeline, ledger, n))
            await asyncio.sleep(rng.uniform(0.0, 0.12))
        await saboteur
    finally:
        saboteur.cancel()
    context = f"seed {seed}, kills {kills}"
    try:
        results = await client.completed(run_ids, deadline=45)
    except AssertionError as exc:
        raise AssertionError(f"{context}\n{exc}") from None
    assert results == [wf.pipeline_result(n) for n in range(RUNS)], context
    await check_logs(client, run_ids)
    assert all(worker.alive() for worker in cluster.workers.values()), cluster.logs()
    await cluster.wait_ready(client.app)  # leave the next test a settled cluster


async def park_on_prefork(client: Client, tmp: Path) -> tuple[list[str], list[Path]]:
    """Leave worker ``a`` (prefork) running one parked step while it waits for more messages.

    That is when kombu's own Redis transport would crash the worker on a lost connection (see
    ``pyworkflow/celery/transport.py``). The first parked step lands anywhere; if it took the
    solo worker's only slot, the second one can only go to ``a``.
    """
    cluster = client.cluster
    runs: list[str] = []
    gos: list[Path] = []
    prefork = cluster.workers["a"].pids()
    for index in range(2):
        go = tmp / f"go-{index}"
        run_id = await client.start(wf.parked_run, str(cluster.ledger), str(go))
        runs.append(run_id)
        gos.append(go)

        def parked_pid(run_id: str = run_id) -> int | None:
            lines = [line for line in client.ledger() if line["run_id"] == run_id]
            return int(lines[0]["pid"]) if lines else None

        if await until(parked_pid, "a step to park") in prefork:
            break
    return runs, gos


async def test_the_broker_stopping_for_two_seconds_loses_no_run(
    client: Client, redis_server: RedisServer, tmp_path: Path
) -> None:
    cluster = client.cluster
    await cluster.wait_ready(client.app)
    ledger = str(cluster.ledger)
    parked, gos = await park_on_prefork(client, tmp_path)
    before = len(client.ledger())
    run_ids = [await client.start(wf.pipeline, ledger, 100 + n) for n in range(10)]
    await until(lambda: len(client.ledger()) >= before + 5, "the runs to get going")
    redis_server.kill()
    await asyncio.sleep(2.0)  # the outage itself, not a wait for a condition
    redis_server.start()
    for go in gos:
        go.touch()
    results = await client.completed(run_ids + parked, deadline=45)
    assert results == [wf.pipeline_result(100 + n) for n in range(10)] + ["released"] * len(parked)
    await check_logs(client, run_ids + parked)
    assert all(worker.alive() for worker in cluster.workers.values()), cluster.logs()
    await cluster.wait_ready(client.app)  # and they consume again
