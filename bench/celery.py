"""Celery runtime benchmarks: step round trips, step throughput and timer lateness on real workers.

Starts a Redis server (``tests/servers.py``; or uses ``--broker``), a SQLite file in a temporary
folder (or ``--storage URL``) and ``--workers`` worker processes (``pyworkflow worker run``,
``--pool``), then measures, from the event logs (every timestamp comes from the same clock):

- **round trip**: one sequential chain of dispatched steps at a time; from one ``step.started``
  to the next: the step message crosses the broker, a worker runs the step and records it, the
  run is activated and the next step is dispatched. Also ``step.started`` → ``step.completed``.
- **throughput**: ``--chains`` chains of ``--steps`` steps at once; steps completed per second
  from the first ``step.started`` to the last ``step.completed``.
- **timer lateness**: ``--sleepers`` runs that each sleep 1 s; ``sleep.completed`` minus the
  sleep's ``resume_at``.
- **slot lateness**: ``--schedules`` every-second schedules served by the workers for
  ``--schedule-seconds``; each run's creation minus its slot (``scheduled_time``).

Prints JSON and writes it to ``bench/results/celery.json`` (``--output``); asserts nothing
about speed.

    .venv/bin/python bench/celery.py [--workers 2] [--pool solo] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path, and this file would shadow `celery`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

from pyworkflow import sleep, step, workflow  # noqa: E402

TARGETS = {"round_trip_p50_ms": 5.0, "round_trip_p99_ms": 20.0, "steps_per_second": 800.0}


@step(name="bench_celery_add")
async def add(total: int, i: int) -> int:
    return total + i


@workflow(name="bench_celery_chain", max_recovery_attempts=100)
async def chain(steps: int) -> int:
    total = 0
    for i in range(steps):
        total = await add(total, i)
    return total


@workflow(name="bench_celery_sleeper")
async def sleeper(seconds: float) -> str:
    await sleep(seconds)
    return "awake"


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children (Linux ``/proc``), in seconds."""
    ticks = 0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        todo += [int(child) for child in children]
    return ticks / os.sysconf("SC_CLK_TCK")


def _ms(a: datetime | None, b: datetime | None) -> float:
    assert a is not None and b is not None
    return (b - a).total_seconds() * 1000


@contextlib.contextmanager
def _broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.servers import redis_server

    with redis_server() as server:
        yield server.url


@contextlib.contextmanager
def _workers(count: int, pool: str, env: dict[str, str], logs: Path) -> Iterator[list[Any]]:
    exe = Path(sys.executable).parent / "pyworkflow"
    procs = []
    try:
        for index in range(count):
            log = (logs / f"worker-{index}.log").open("wb")
            cmd = [str(exe), "--module", "bench.celery", "worker", "run", "--pool", pool]
            if pool != "solo":
                cmd += ["--concurrency", "1"]
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def _finish(storage: Any, run_ids: list[str], timeout: float) -> None:
    from pyworkflow import get_workflow_result

    for run_id in run_ids:
        await get_workflow_result(run_id, timeout=timeout, storage=storage)


async def _events(storage: Any, run_id: str) -> list[Any]:
    return list(await storage.get_events(run_id))


async def measure(
    args: argparse.Namespace, storage: Any, runtime: Any, pids: list[int]
) -> dict[str, Any]:
    from pyworkflow import api

    async def start(wf: Any, *a: Any) -> str:
        return await api.start(wf, *a, runtime=runtime, storage=storage)

    # Warm up: every worker process imports, connects and caches.
    await _finish(storage, [await start(chain, 20) for _ in range(4)], 60)

    trips: list[float] = []
    attempts: list[float] = []
    for _ in range(args.latency_chains):
        run_id = await start(chain, args.latency_steps)
        await _finish(storage, [run_id], 120)
        events = await _events(storage, run_id)
        started = [e.timestamp for e in events if e.type.value == "step.started"]
        done = [e.timestamp for e in events if e.type.value == "step.completed"]
        trips += [_ms(a, b) for a, b in zip(started, started[1:], strict=False)]
        attempts += [_ms(a, b) for a, b in zip(started, done, strict=False)]

    cpu_before = _cpu_seconds(pids)
    run_ids = [await start(chain, args.steps) for _ in range(args.chains)]
    await _finish(storage, run_ids, 300)
    worker_cpu = _cpu_seconds(pids) - cpu_before
    first: datetime | None = None
    last: datetime | None = None
    steps = 0
    for run_id in run_ids:
        for event in await _events(storage, run_id):
            if event.type.value == "step.started" and (first is None or event.timestamp < first):
                first = event.timestamp
            if event.type.value == "step.completed":
                steps += 1
                if last is None or event.timestamp > last:
                    last = event.timestamp
    elapsed = _ms(first, last) / 1000

    sleepers = [await start(sleeper, 1.0) for _ in range(args.sleepers)]
    await _finish(storage, sleepers, 60)
    lateness = []
    for run_id in sleepers:
        events = await _events(storage, run_id)
        begun = next(e for e in events if e.type.value == "sleep.started")
        woke = next(e for e in events if e.type.value == "sleep.completed")
        due = datetime.fromisoformat(begun.data["resume_at"])
        lateness.append(_ms(due, woke.timestamp))

    from pyworkflow import ScheduleSpec
    from pyworkflow.scheduling import create_schedule, pause_schedule

    schedule_ids = [
        (
            await create_schedule(
                sleeper, ScheduleSpec(interval="1s"), 0.0, storage=storage, schedule_id=f"b{n}"
            )
        ).schedule_id
        for n in range(args.schedules)
    ]
    await asyncio.sleep(args.schedule_seconds)
    for schedule_id in schedule_ids:
        await pause_schedule(schedule_id, storage=storage)
    slot_lateness = []
    page, _ = await storage.list_runs(workflow_name="bench_celery_sleeper", limit=100_000)
    for run in page:
        slot = run.context.get("scheduled_time")
        if slot is not None and run.created_at is not None:
            slot_lateness.append(_ms(datetime.fromisoformat(slot), run.created_at))

    return {
        "slot_lateness_ms": _percentiles(slot_lateness),
        "round_trip_ms": _percentiles(trips),
        "step_attempt_ms": _percentiles(attempts),
        "throughput": {
            "chains": args.chains,
            "steps": steps,
            "seconds": round(elapsed, 3),
            "steps_per_second": round(steps / elapsed, 1),
            # CPU the worker processes spent per step (includes starting the runs): what the
            # throughput would be on otherwise idle cores, whatever else the machine is doing.
            "worker_cpu_ms_per_step": round(worker_cpu * 1000 / steps, 3),
        },
        "timer_lateness_ms": _percentiles(lateness),
    }


async def _main(args: argparse.Namespace, broker: str, storage_url: str, logs: Path) -> Any:
    from pyworkflow.celery import CeleryRuntime, CelerySettings
    from pyworkflow.storage import config_to_storage

    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYWORKFLOW_CELERY_BROKER=broker,
        PYWORKFLOW_STORAGE_URL=storage_url,
    )
    storage = config_to_storage({"url": storage_url})
    runtime = CeleryRuntime(settings=CelerySettings(broker_url=broker))
    try:
        with _workers(args.workers, args.pool, env, logs) as procs:
            return await measure(args, storage, runtime, [proc.pid for proc in procs])
    finally:
        await runtime.shutdown()
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", choices=["solo", "prefork", "threads"], default="solo")
    parser.add_argument("--broker", help="Redis URL (default: start a server)")
    parser.add_argument("--storage", help="storage URL (default: SQLite in a temporary folder)")
    parser.add_argument("--latency-chains", type=int, default=3)
    parser.add_argument("--latency-steps", type=int, default=100)
    parser.add_argument("--chains", type=int, default=40)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sleepers", type=int, default=100)
    parser.add_argument("--schedules", type=int, default=5)
    parser.add_argument("--schedule-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument(
        "--output", default=str(ROOT / "bench" / "results" / "celery.json"), help="JSON file"
    )
    args = parser.parse_args()
    if args.quick:
        args.latency_chains, args.latency_steps = 1, 20
        args.chains, args.steps, args.sleepers = 4, 10, 10
        args.schedules, args.schedule_seconds = 2, 3.0
    with (
        tempfile.TemporaryDirectory(prefix="pyworkflow-bench-celery-") as tmp,
        _broker(args.broker) as broker,
    ):
        storage_url = args.storage or f"sqlite:///{tmp}/runs.db"
        load_before = [round(x, 2) for x in os.getloadavg()]
        started = time.perf_counter()
        results = asyncio.run(_main(args, broker, storage_url, Path(tmp)))
        results["meta"] = {
            "workers": args.workers,
            "pool": args.pool,
            "storage": storage_url.split(":", 1)[0],
            "quick": args.quick,
            "load_average_before": load_before,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        results["targets"] = TARGETS
    text = json.dumps(results, indent=2)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
