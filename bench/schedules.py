"""Schedule benchmarks: the scheduler's tick among many schedules, and slot lateness locally.

- **tick**: ``--schedules`` (10,000) active schedules in a SQLite file, their next slots spread
  over the next day; one scheduler tick (``Engine.fire_due_schedules``: the claim of the due ones
  through the poll-time index, and serving them) when none is due, and when one is (that one
  served: its run created and enqueued). Target: under 5 ms on SQLite.
- **local lateness**: ``--every-second`` schedules with ``interval="1s"`` served by a
  ``LocalScheduler`` on SQLite for ``--seconds``; each run's creation minus its slot. Targets:
  p50 under 50 ms, p99 under 500 ms. (On Celery: ``bench/celery.py``, ``slot_lateness_ms``.)

Prints JSON and writes it to ``bench/results/schedules.json`` (``--output``); asserts nothing.

    .venv/bin/python bench/schedules.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from pyworkflow import LocalScheduler, ScheduleSpec, step, workflow  # noqa: E402
from pyworkflow.engine.activation import Engine  # noqa: E402
from pyworkflow.engine.ports import SystemClock  # noqa: E402
from pyworkflow.model.schedules import Schedule  # noqa: E402
from pyworkflow.runtime.local import LocalRuntime  # noqa: E402
from pyworkflow.storage.sqlite import SQLiteStorageBackend  # noqa: E402

TARGETS = {"tick_p50_ms": 5.0, "local_lateness_p50_ms": 50.0, "local_lateness_p99_ms": 500.0}


@step(name="bench_schedule_noop")
async def noop() -> None:
    return None


@workflow(name="bench_scheduled")
async def scheduled() -> None:
    await noop()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "n": len(ordered),
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


class _NoQueue:
    async def enqueue_activation(self, run_id: str) -> None:
        del run_id

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        del run_id, step_id, attempt


async def tick(count: int, ticks: int, folder: Path) -> dict[str, Any]:
    storage = SQLiteStorageBackend(str(folder / "tick.db"))
    engine = Engine(storage, SystemClock(), _NoQueue())
    now = datetime.now(UTC)
    spec = ScheduleSpec(interval=timedelta(days=1))
    for start in range(0, count, 500):
        await asyncio.gather(
            *(
                storage.create_schedule(
                    Schedule(
                        schedule_id=f"s{i:05d}",
                        workflow_name="bench_scheduled",
                        spec=spec,
                        created_at=now,
                        next_run_time=now + timedelta(hours=1, seconds=i * 8),
                        poll_at=now + timedelta(hours=1, seconds=i * 8),
                    )
                )
                for i in range(start, min(count, start + 500))
            )
        )
    idle: list[float] = []
    for _ in range(ticks):
        began = time.perf_counter()
        await engine.fire_due_schedules()
        idle.append((time.perf_counter() - began) * 1000)
    serving: list[float] = []
    for n in range(ticks):
        # One schedule due now: the tick claims it, creates its run and moves it a day on.
        schedule = await storage.get_schedule(f"s{n:05d}")
        assert schedule is not None
        schedule.next_run_time = schedule.poll_at = datetime.now(UTC) - timedelta(seconds=1)
        await storage.update_schedule(schedule, schedule.revision)
        began = time.perf_counter()
        created = await engine.fire_due_schedules()
        serving.append((time.perf_counter() - began) * 1000)
        assert len(created) == 1, created
    await storage.close()
    return {
        "schedules": count,
        "idle_tick_ms": _percentiles(idle),
        "one_due_tick_ms": _percentiles(serving),
    }


async def local_lateness(schedules: int, seconds: float, folder: Path) -> dict[str, Any]:
    from pyworkflow.scheduling import create_schedule, pause_schedule

    storage = SQLiteStorageBackend(str(folder / "lateness.db"))
    runtime = LocalRuntime(poll_interval=3600)
    ids = [
        (
            await create_schedule(
                scheduled, ScheduleSpec(interval="1s"), storage=storage, schedule_id=f"l{n}"
            )
        ).schedule_id
        for n in range(schedules)
    ]
    scheduler = LocalScheduler(storage=storage, poll_interval=1.0, runtime=runtime)
    await scheduler.run(duration=seconds)
    for schedule_id in ids:
        await pause_schedule(schedule_id, storage=storage)
    await runtime.drain(storage)
    runs, _ = await storage.list_runs(workflow_name="bench_scheduled", limit=100_000)
    lateness = [
        (run.created_at - datetime.fromisoformat(run.context["scheduled_time"])).total_seconds()
        * 1000
        for run in runs
        if run.created_at is not None
    ]
    await runtime.shutdown()
    await storage.close()
    return {"schedules": schedules, "seconds": seconds, "slot_lateness_ms": _percentiles(lateness)}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pyworkflow-bench-schedules-") as tmp:
        folder = Path(tmp)
        ticked = await tick(args.schedules, args.ticks, folder)
        late = await local_lateness(args.every_second, args.seconds, folder)
    measured = {
        "tick_p50_ms": ticked["one_due_tick_ms"]["p50"],
        "local_lateness_p50_ms": late["slot_lateness_ms"].get("p50"),
        "local_lateness_p99_ms": late["slot_lateness_ms"].get("p99"),
    }
    return {
        "tick": ticked,
        "local": late,
        "targets": {
            key: {
                "target": TARGETS[key],
                "measured": value,
                "met": value is not None and value < TARGETS[key],
            }
            for key, value in measured.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--every-second", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument(
        "--output", default=str(ROOT / "bench" / "results" / "schedules.json"), help="JSON file"
    )
    args = parser.parse_args()
    if args.quick:
        args.schedules, args.ticks, args.every_second, args.seconds = 500, 5, 2, 2.5
    result = asyncio.run(_main(args))
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
