"""SIGTERM hands in-flight work back at once: not after a visibility timeout, not after the step.

This test runs its own two workers (Redis database 12, its own SQLite file) with a 60 s
visibility timeout, so the only way a stopped worker's message can reach the other worker within
seconds is being handed back. A step parks until its "go" file exists; the test SIGTERMs the
worker running it (its main process only, as ``kill PID`` does) and expects:

- the other worker to start the same attempt again within 2 s;
- the stopped worker to exit within 5 s (the parked step would run for up to 30 s);
- the run to finish with one ``step.completed`` and no ``workflow.interrupted`` (no lease had to
  expire: the hand-back alone moved the work).

Both pools hand back: the first step lands on whichever worker takes it; the second runs while
only the other one is up, and a fresh worker of the first kind is started to take it over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.celery import workflows as wf
from tests.celery.conftest import Client, Cluster, client_of, new_cluster, until
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

HAND_BACK_WITHIN = 2.0
EXIT_WITHIN = 5.0


async def park(client: Client, go: Path) -> tuple[str, int]:
    """Start a run whose step parks; return the run id and the pid of the process running it."""
    run_id = await client.start(wf.parked_run, str(client.cluster.ledger), str(go))

    def parked() -> int | None:
        lines = [line for line in client.ledger() if line["run_id"] == run_id]
        return int(lines[0]["pid"]) if lines else None

    return run_id, await until(parked, f"the step of {run_id} to park")


def owner(cluster: Cluster, pid: int) -> str:
    return next(name for name, worker in cluster.workers.items() if pid in worker.pids())


async def hand_back(client: Client, run_id: str, victim: str, go: Path) -> None:
    """SIGTERM ``victim`` (running ``run_id``'s parked step); check the hand-back; release."""
    cluster = client.cluster
    loop = asyncio.get_running_loop()
    others = {pid for name, w in cluster.workers.items() if name != victim for pid in w.pids()}
    victim_proc = cluster.workers[victim].proc
    assert victim_proc is not None
    sent = loop.time()
    cluster.terminate(victim)

    def restarted_elsewhere() -> bool:
        lines = [line for line in client.ledger() if line["run_id"] == run_id]
        return len(lines) >= 2 and int(lines[-1]["pid"]) in others

    await until(restarted_elsewhere, f"{victim}'s step to be taken over", deadline=10)
    took = loop.time() - sent
    await until(lambda: victim_proc.poll() is not None, f"{victim} to exit", deadline=10)
    exited = loop.time() - sent
    assert took < HAND_BACK_WITHIN, f"the step was taken over {took:.2f}s after SIGTERM"
    assert exited < EXIT_WITHIN, f"{victim} exited {exited:.2f}s after SIGTERM"
    lines = [line for line in client.ledger() if line["run_id"] == run_id]
    assert [line["attempt"] for line in lines] == [1, 1]  # the same attempt, handed back

    go.touch()
    assert await client.completed([run_id]) == ["released"]
    types = [e.type.value for e in await client.events(run_id)]
    assert types.count("step.completed") == 1
    assert "workflow.interrupted" not in types


async def test_sigterm_hands_in_flight_work_back_at_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cluster = new_cluster(redis_server, tmp_path, 12, visibility_timeout=60.0)
    cluster.add("p", "prefork")
    cluster.add("s", "solo")
    cluster.start("p")
    cluster.start("s")
    try:
        async with client_of(cluster) as client:
            await cluster.wait_ready(client.app)
            first, pid = await park(client, tmp_path / "go-1")
            x = owner(cluster, pid)
            y = "s" if x == "p" else "p"
            await hand_back(client, first, x, tmp_path / "go-1")

            second, pid = await park(client, tmp_path / "go-2")  # only y is up now
            assert owner(cluster, pid) == y
            cluster.start(x)
            await cluster.wait_ready(client.app, x)
            await hand_back(client, second, y, tmp_path / "go-2")
    finally:
        cluster.stop_all()
