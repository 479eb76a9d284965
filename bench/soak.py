"""A bounded soak: many runs on Celery workers and PostgreSQL while workers are SIGKILLed and each
server restarts once. Prints what became of every run; asserts nothing about speed.

Starts a Redis broker (with its append-only file, as production runs one) and a PostgreSQL
server (``tests/servers.py``) and ``--workers`` worker
processes (``pyworkflow worker run``, solo pool), then submits ``--runs`` runs of a three-step
pipeline with two short sleeps, spread over the first half of ``--minutes``. Meanwhile a worker
is SIGKILLed (and started again) every ``--kill-every`` seconds, the broker restarts once (a
third of the way in) and PostgreSQL restarts once (two thirds of the way in, as a crash:
``pg_ctl stop -m immediate``). Then it waits, up to the end of ``--minutes``, for every run to
end, and reports from storage:

- ``finished``: runs that completed with the right result; ``failed``: runs that ended otherwise;
- ``lost``: runs not ended at the deadline;
- ``duplicated``: completions recorded twice for one step command (must be 0), and runs whose
  result is wrong;
- ``step_latency_ms``: ``step.started`` to ``step.completed``, p50/p99;
- the kills and restarts made.

    .venv/bin/python bench/soak.py [--minutes 10] [--runs 10000] [--workers 2] [--quick]

Writes the JSON to ``bench/results/soak.json`` (``--output``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

from pyworkflow import sleep, step, workflow  # noqa: E402


@step(name="soak_add", max_retries=5, retry_delay=0.2)
async def add(total: int, n: int) -> int:
    return total + n


@workflow(name="soak_pipeline", max_recovery_attempts=100)
async def pipeline(seed: int) -> int:
    total = await add(seed, 1)
    await sleep(0.2)
    total = await add(total, 2)
    await sleep(0.2)
    return await add(total, 3)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 2)}


class Workers:
    """Worker processes, each in its own session (a kill takes its children too)."""

    def __init__(self, count: int, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        for index in range(count):
            self.start(index)

    def start(self, index: int) -> None:
        exe = Path(sys.executable).parent / "pyworkflow"
        log = (self.logs / f"worker-{index}.log").open("ab")
        cmd = [str(exe), "--module", "bench.soak", "worker", "run", "--pool", "solo"]
        self.procs[index] = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for index, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(index)


async def soak(args: argparse.Namespace, broker: Any, postgres: Any, logs: Path) -> dict[str, Any]:
    from pyworkflow import api
    from pyworkflow.celery import CeleryRuntime, CelerySettings
    from pyworkflow.storage.postgres import PostgresStorageBackend

    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYWORKFLOW_CELERY_BROKER=broker.url,
        PYWORKFLOW_STORAGE_URL=postgres.dsn,
        # The steps here are instant: a message a killed worker had taken comes back after
        # this (docs/deployment.md: keep it above your longest step; the default is an hour).
        PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT=str(args.visibility_timeout),
    )
    storage = PostgresStorageBackend(postgres.dsn)
    runtime = CeleryRuntime(settings=CelerySettings(broker_url=broker.url))
    workers = Workers(args.workers, env, logs)
    rng = random.Random(args.seed)
    total = args.minutes * 60.0
    began = time.monotonic()
    events: list[str] = []
    run_ids: list[str] = []

    def elapsed() -> float:
        return time.monotonic() - began

    async def chaos() -> None:
        broker_done = postgres_done = False
        next_kill = args.kill_every
        while elapsed() < total / 2 + 5:
            await asyncio.sleep(0.2)
            if elapsed() >= next_kill:
                next_kill += args.kill_every
                victim = rng.randrange(args.workers)
                workers.kill(victim)
                events.append(f"{elapsed():.1f}s: worker {victim} SIGKILLed")
                await asyncio.sleep(0.5)
                workers.start(victim)
            if not broker_done and elapsed() >= total / 6:
                broker_done = True
                await asyncio.get_running_loop().run_in_executor(None, broker.restart)
                events.append(f"{elapsed():.1f}s: broker restarted")
            if not postgres_done and elapsed() >= total / 3:
                postgres_done = True
                await asyncio.get_running_loop().run_in_executor(None, postgres.stop)
                await asyncio.sleep(2.0)
                await asyncio.get_running_loop().run_in_executor(None, postgres.start)
                events.append(f"{elapsed():.1f}s: PostgreSQL stopped (immediate) for 2s")

    async def submit() -> None:
        gap = (total / 3) / args.runs
        for seed in range(args.runs):
            while True:
                try:
                    run_ids.append(
                        await api.start(pipeline, seed, runtime=runtime, storage=storage)
                    )
                    break
                except Exception:  # noqa: BLE001 - a server is restarting: try again
                    await asyncio.sleep(0.5)
            await asyncio.sleep(gap)

    try:
        await asyncio.gather(chaos(), submit())
        ended: dict[str, Any] = {}
        while elapsed() < total and len(ended) < len(run_ids):
            for run_id in run_ids:
                if run_id in ended:
                    continue
                try:
                    run = await storage.get_run(run_id)
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.5)
                    break
                if run is not None and run.status.is_terminal:
                    ended[run_id] = run
            await asyncio.sleep(1.0)
        finished = failed = wrong = duplicated = 0
        latency: list[float] = []
        for seed, run_id in enumerate(run_ids):
            run = ended.get(run_id)
            if run is None:
                continue
            if run.status.value != "completed":
                failed += 1
                continue
            if run.result is None or json.loads(run.result) != seed + 6:
                wrong += 1
            finished += 1
            log = await storage.get_events(run_id)
            keys = Counter(e.completion_key for e in log if e.completion_key is not None)
            duplicated += sum(count - 1 for count in keys.values() if count > 1)
            started: dict[str, Any] = {}
            for event in log:
                command = event.data.get("command_id")
                if event.type.value == "step.started":
                    started[command] = event.timestamp
                elif event.type.value == "step.completed" and command in started:
                    gap_ms = (event.timestamp - started[command]).total_seconds() * 1000
                    latency.append(gap_ms)
        lost_detail = []
        for run_id in [r for r in run_ids if r not in ended][:5]:
            run = await storage.get_run(run_id)
            timer = await storage.get_timer(run_id)
            log = await storage.get_events(run_id)
            lost_detail.append(
                {
                    "run_id": run_id,
                    "status": None if run is None else run.status.value,
                    "lease": None if run is None else [run.lease_owner, str(run.lease_expires_at)],
                    "timer": None if timer is None else str(timer.fire_at),
                    "recovery_attempts": None if run is None else run.recovery_attempts,
                    "last_events": [(e.sequence, e.type.value, str(e.timestamp)) for e in log[-4:]],
                }
            )
        return {
            "lost_runs": lost_detail,
            "runs": len(run_ids),
            "finished": finished,
            "failed": failed,
            "lost": len(run_ids) - len(ended),
            "duplicated_completions": duplicated,
            "wrong_results": wrong,
            "step_latency_ms": _percentiles(latency),
            "seconds": round(elapsed(), 1),
            "chaos": events,
        }
    finally:
        workers.stop_all()
        await runtime.shutdown()
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--visibility-timeout", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="1.5 minutes, 300 runs")
    parser.add_argument(
        "--output", default=str(ROOT / "bench" / "results" / "soak.json"), help="JSON file"
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.runs, args.kill_every = 1.5, 300, 10.0
    from tests.servers import RedisServer, free_port, postgres_server

    with (
        tempfile.TemporaryDirectory(prefix="pyworkflow-soak-") as tmp,
        postgres_server(durable=True) as postgres,  # a crash keeps what it acknowledged
    ):
        # A broker as production runs one: with its append-only file, so a restart keeps the
        # queued messages.
        broker = RedisServer(free_port(), Path(tmp), persistent=True)
        broker.start()
        try:
            result = asyncio.run(soak(args, broker, postgres, Path(tmp)))
        finally:
            broker.stop()
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
