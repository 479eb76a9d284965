"""Engine benchmarks on the local runtime: per-step cost, start latency, scaling, cold resume,
cancellation latency, a child against a step, and a long continue-as-new chain.

Prints one JSON object and writes it to ``bench/results/engine.json``. It measures and reports;
it never asserts anything about speed (targets are printed next to the numbers, see README.md).
Every run uses inline no-op steps, a ``LocalRuntime(poll_interval=3600)`` so the timer service
stays out of the way, and explicit ``runtime=`` / ``storage=`` arguments.

    .venv/bin/python bench/engine.py            # full sizes (about half a minute)
    .venv/bin/python bench/engine.py --quick    # small sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyworkflow import continue_as_new, sleep, start_child_workflow, step, workflow
from pyworkflow.api import cancel_workflow, resume, start
from pyworkflow.model.events import Event
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend

RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"

# The targets of the performance issue (see README.md); reported, never asserted.
TARGETS = {
    "sqlite_per_step_p50_us": 100.0,
    "sqlite_per_step_p50_us_stretch": 50.0,
    "one_step_start_us": 300.0,
    "memory_per_step_us": 30.0,
    "scaling_ratio": 12.0,
    "cold_resume_us_per_event": 3.0,
    "cancel_sleeping_p50_us": 5_000.0,  # cancel -> terminal for a sleeping run, SQLite
    "child_over_step_ratio": 3.0,  # a child started and its result received / a step, SQLite
    "chain_growth_ratio": 1.5,  # late generations / early ones of a long chain: no growth
}


@dataclass(frozen=True, slots=True)
class Sizes:
    steps: int  # sequential steps for the per-step numbers
    starts: int  # one-step workflow starts
    scaling_small: int
    scaling_large: int
    resume_steps: int  # steps before the sleep of the cold-resume run (events = 2 * steps + 2)
    repeats: int  # whole-run timings are the median of this many runs
    children: int  # sequential children (and as many steps) for the child/step ratio
    generations: int  # length of the continue-as-new chain


FULL = Sizes(
    steps=2_000,
    starts=1_000,
    scaling_small=100,
    scaling_large=1_000,
    resume_steps=4_999,
    repeats=5,
    children=500,
    generations=10_000,
)
QUICK = Sizes(
    steps=100,
    starts=30,
    scaling_small=10,
    scaling_large=100,
    resume_steps=99,
    repeats=1,
    children=20,
    generations=100,
)


# -- the workflows ---------------------------------------------------------------------------------

_marks: list[int] = []  # perf_counter_ns() at the start of each ``tick`` body


@step()
async def noop() -> None:
    return None


@step()
async def tick() -> None:
    _marks.append(time.perf_counter_ns())


@workflow(durable=True)
async def bench_noop_steps(n: int) -> None:
    for _ in range(n):
        await noop()


@workflow(durable=True)
async def bench_tick_steps(n: int) -> None:
    for _ in range(n):
        await tick()


@workflow(durable=True)
async def bench_one_step() -> None:
    await noop()


@workflow(name="bench_sleeper")
async def bench_sleeper() -> str:
    await sleep("1d")
    return "woke"


@workflow(durable=True)
async def bench_steps_then_sleep(n: int) -> None:
    for _ in range(n):
        await noop()
    await sleep("1h")


@workflow(durable=True)
async def bench_noop_child() -> None:
    return None


@workflow(durable=True)
async def bench_children(n: int) -> None:
    for _ in range(n):
        await start_child_workflow(bench_noop_child)


@workflow(durable=True)
async def bench_chain(generation: int, last: int) -> int:
    await tick()
    if generation < last:
        await continue_as_new(generation + 1, last)
    return generation


class FrozenClock:
    """A clock that never moves: a sleeping run stays asleep, so resuming only replays."""

    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current


class TimedSQLite(SQLiteStorageBackend):
    """SQLite storage that adds up the time spent in ``get_events`` and in the other calls."""

    def __init__(self, db_path: str) -> None:
        super().__init__(db_path)
        self.get_events_ns = 0
        self.other_ns = 0

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        began = time.perf_counter_ns()
        try:
            return await super().get_events(run_id, after_sequence, command_id)
        finally:
            self.get_events_ns += time.perf_counter_ns() - began

    async def _timed(self, call: Callable[[], Awaitable[Any]]) -> Any:
        began = time.perf_counter_ns()
        try:
            return await call()
        finally:
            self.other_ns += time.perf_counter_ns() - began

    async def get_run(self, run_id: str) -> Any:
        return await self._timed(lambda: super(TimedSQLite, self).get_run(run_id))

    async def get_timer(self, run_id: str) -> Any:
        return await self._timed(lambda: super(TimedSQLite, self).get_timer(run_id))

    async def commit(self, commit: Any) -> int:
        result: int = await self._timed(lambda: super(TimedSQLite, self).commit(commit))
        return result


# -- measuring -------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 < q <= 100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _summary_us(ns: list[int]) -> dict[str, float]:
    us = [n / 1_000 for n in ns]
    return {
        "p50": round(_percentile(us, 50), 2),
        "p90": round(_percentile(us, 90), 2),
        "p99": round(_percentile(us, 99), 2),
        "mean": round(statistics.fmean(us), 2),
    }


async def _fresh(kind: str, tmp: Path, name: str) -> StorageBackend:
    if kind == "memory":
        return InMemoryStorageBackend()
    storage = SQLiteStorageBackend(tmp / f"{name}.db")
    await storage.connect()
    return storage


async def _timed_run(rt: LocalRuntime, st: StorageBackend, wf: Any, *args: Any) -> int:
    began = time.perf_counter_ns()
    await start(wf, *args, runtime=rt, storage=st)
    return time.perf_counter_ns() - began


async def bench_per_step(kind: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Whole-run µs/step of N no-op steps, and the sampled gaps between step bodies."""
    rt = LocalRuntime(poll_interval=3600)
    st = await _fresh(kind, tmp, "per_step")
    await start(bench_noop_steps, 10, runtime=rt, storage=st)  # warm up
    runs = [await _timed_run(rt, st, bench_noop_steps, sizes.steps) for _ in range(sizes.repeats)]
    _marks.clear()
    await start(bench_tick_steps, sizes.steps, runtime=rt, storage=st)
    gaps = [later - earlier for earlier, later in zip(_marks, _marks[1:], strict=False)]
    await rt.shutdown()
    await st.close()
    return {
        "steps": sizes.steps,
        "whole_run_us_per_step": round(statistics.median(runs) / sizes.steps / 1_000, 2),
        "sampled_us": _summary_us(gaps),
    }


async def bench_start(kind: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Latency of ``await start(one_step_wf)``, which runs it to completion here."""
    rt = LocalRuntime(poll_interval=3600)
    st = await _fresh(kind, tmp, "start")
    for _ in range(10):  # warm up
        await start(bench_one_step, runtime=rt, storage=st)
    samples = [await _timed_run(rt, st, bench_one_step) for _ in range(sizes.starts)]
    await rt.shutdown()
    await st.close()
    return {"starts": sizes.starts, "us": _summary_us(samples)}


async def bench_cancel_sleeping(kind: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Latency of ``await cancel_workflow(run_id, wait=True)`` for a run sleeping a day: the
    request recorded, the run woken, ``CancellationError`` delivered, the run ended cancelled."""
    rt = LocalRuntime(poll_interval=3600)
    st = await _fresh(kind, tmp, "cancel")
    samples = []
    for index in range(sizes.starts + 10):
        run_id = await start(bench_sleeper, runtime=rt, storage=st)
        began = time.perf_counter_ns()
        await cancel_workflow(run_id, wait=True, storage=st, runtime=rt)
        if index >= 10:  # the first ten warm up
            samples.append(time.perf_counter_ns() - began)
    await rt.shutdown()
    await st.close()
    return {"runs": sizes.starts, "us": _summary_us(samples)}


async def bench_child_vs_step(kind: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """A child workflow started and its result received, against a step: N of each in a row,
    whole runs (the children run on this runtime's in-process queue)."""
    rt = LocalRuntime(poll_interval=3600)
    st = await _fresh(kind, tmp, "children")

    async def whole(wf: Any, n: int) -> int:
        began = time.perf_counter_ns()
        run_id = await start(wf, n, runtime=rt, storage=st)
        await rt.drain(st)
        run = await st.get_run(run_id)
        assert run is not None and run.status.value == "completed", run
        return time.perf_counter_ns() - began

    await whole(bench_children, 5)  # warm up
    await whole(bench_noop_steps, 5)
    n = sizes.children
    child_ns = statistics.median([await whole(bench_children, n) for _ in range(sizes.repeats)])
    step_ns = statistics.median([await whole(bench_noop_steps, n) for _ in range(sizes.repeats)])
    await rt.shutdown()
    await st.close()
    return {
        "children": n,
        "us_per_child": round(child_ns / n / 1_000, 2),
        "us_per_step": round(step_ns / n / 1_000, 2),
        "ratio": round(child_ns / step_ns, 2),
    }


async def bench_chain_generations(kind: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """A continue-as-new chain of G generations: the time between generations (one step each)
    early in the chain and late in it. Constant cost per generation gives a ratio near 1."""
    rt = LocalRuntime(poll_interval=3600)
    st = await _fresh(kind, tmp, "chain")
    _marks.clear()
    began = time.perf_counter_ns()
    await start(bench_chain, 1, sizes.generations, runtime=rt, storage=st)
    await rt.drain(st)
    total = time.perf_counter_ns() - began
    gaps = [later - earlier for earlier, later in zip(_marks, _marks[1:], strict=False)]
    window = max(len(gaps) // 10, 1)
    early, late = statistics.median(gaps[:window]), statistics.median(gaps[-window:])
    await rt.shutdown()
    await st.close()
    return {
        "generations": sizes.generations,
        "us_per_generation": round(total / sizes.generations / 1_000, 2),
        "early_us": round(early / 1_000, 2),
        "late_us": round(late / 1_000, 2),
        "growth_ratio": round(late / early, 2),
    }


async def bench_scaling(kind: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Time of a large run over time of a small one; linear cost gives large/small."""
    rt = LocalRuntime(poll_interval=3600)
    st = await _fresh(kind, tmp, "scaling")
    await start(bench_noop_steps, 10, runtime=rt, storage=st)  # warm up
    small, large = [], []
    for _ in range(sizes.repeats):
        small.append(await _timed_run(rt, st, bench_noop_steps, sizes.scaling_small))
        large.append(await _timed_run(rt, st, bench_noop_steps, sizes.scaling_large))
    await rt.shutdown()
    await st.close()
    small_ns, large_ns = statistics.median(small), statistics.median(large)
    return {
        "small_steps": sizes.scaling_small,
        "large_steps": sizes.scaling_large,
        "small_ms": round(small_ns / 1e6, 3),
        "large_ms": round(large_ns / 1e6, 3),
        "ratio": round(large_ns / small_ns, 2),
        "ideal_ratio": sizes.scaling_large / sizes.scaling_small,
    }


async def _build_sleeping_run(rt: LocalRuntime, st: StorageBackend, steps: int) -> tuple[str, int]:
    run_id = await start(bench_steps_then_sleep, steps, runtime=rt, storage=st)
    events = len(await st.get_events(run_id))
    run = await st.get_run(run_id)
    assert run is not None and run.status.value == "suspended", run
    rt.engine_for(st).evict()
    return run_id, events


async def bench_cold_resume_sqlite(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Resume a sleeping run from a fresh runtime and storage object: load + replay + block."""
    clock = FrozenClock()
    path = tmp / "cold_resume.db"
    builder_rt = LocalRuntime(clock=clock, poll_interval=3600)
    builder_st = SQLiteStorageBackend(path)
    run_id, events = await _build_sleeping_run(builder_rt, builder_st, sizes.resume_steps)
    await builder_rt.shutdown()
    await builder_st.close()
    totals, fetches, others = [], [], []
    for _ in range(sizes.repeats):
        rt = LocalRuntime(clock=clock, poll_interval=3600)
        st = TimedSQLite(str(path))
        await st.connect()
        began = time.perf_counter_ns()
        await resume(run_id, runtime=rt, storage=st)
        totals.append(time.perf_counter_ns() - began)
        fetches.append(st.get_events_ns)
        others.append(st.other_ns)
        assert len(await st.get_events(run_id)) == events, "resuming must not record anything"
        await rt.shutdown()
        await st.close()
    pick = sorted(range(len(totals)), key=totals.__getitem__)[len(totals) // 2]  # the median run
    total, fetch, other = totals[pick], fetches[pick], others[pick]
    return {
        "events": events,
        "total_ms": round(total / 1e6, 3),
        "us_per_event": round(total / events / 1_000, 3),
        "get_events_ms": round(fetch / 1e6, 3),
        "other_storage_ms": round(other / 1e6, 3),
        "replay_ms": round((total - fetch - other) / 1e6, 3),
        "replay_us_per_event": round((total - fetch - other) / events / 1_000, 3),
    }


async def bench_cold_resume_memory(sizes: Sizes) -> dict[str, Any]:
    """Resume after evicting the cached instance (same storage): memory load + replay + block."""
    clock = FrozenClock()
    rt = LocalRuntime(clock=clock, poll_interval=3600)
    st = InMemoryStorageBackend()
    run_id, events = await _build_sleeping_run(rt, st, sizes.resume_steps)
    totals = []
    for _ in range(sizes.repeats):
        rt.engine_for(st).evict()
        began = time.perf_counter_ns()
        await resume(run_id, runtime=rt, storage=st)
        totals.append(time.perf_counter_ns() - began)
    await rt.shutdown()
    total = statistics.median(totals)
    return {
        "events": events,
        "total_ms": round(total / 1e6, 3),
        "us_per_event": round(total / events / 1_000, 3),
    }


def _verdicts(results: dict[str, Any]) -> dict[str, Any]:
    sqlite_p50 = results["per_step"]["sqlite"]["sampled_us"]["p50"]
    start_p50 = results["start_one_step"]["sqlite"]["us"]["p50"]
    memory_step = results["per_step"]["memory"]["whole_run_us_per_step"]
    ratio = max(results["scaling"][kind]["ratio"] for kind in ("sqlite", "memory"))
    resume_us = results["cold_resume"]["sqlite"]["us_per_event"]
    cancel_us = results["cancel_sleeping"]["sqlite"]["us"]["p50"]
    child_ratio = results["child_vs_step"]["sqlite"]["ratio"]
    growth = max(results["chain"][kind]["growth_ratio"] for kind in ("sqlite", "memory"))
    checks = {
        "sqlite_per_step_p50_us": (sqlite_p50, TARGETS["sqlite_per_step_p50_us"]),
        "sqlite_per_step_p50_us_stretch": (sqlite_p50, TARGETS["sqlite_per_step_p50_us_stretch"]),
        "one_step_start_us": (start_p50, TARGETS["one_step_start_us"]),
        "memory_per_step_us": (memory_step, TARGETS["memory_per_step_us"]),
        "scaling_ratio": (ratio, TARGETS["scaling_ratio"]),
        "cold_resume_us_per_event": (resume_us, TARGETS["cold_resume_us_per_event"]),
        "cancel_sleeping_p50_us": (cancel_us, TARGETS["cancel_sleeping_p50_us"]),
        "child_over_step_ratio": (child_ratio, TARGETS["child_over_step_ratio"]),
        "chain_growth_ratio": (growth, TARGETS["chain_growth_ratio"]),
    }
    return {
        name: {"value": value, "target": target, "met": value <= target}
        for name, (value, target) in checks.items()
    }


async def run_all(sizes: Sizes, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "quick": quick,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "per_step": {},
        "start_one_step": {},
        "scaling": {},
        "cancel_sleeping": {},
        "child_vs_step": {},
        "chain": {},
        "cold_resume": {},
    }
    with tempfile.TemporaryDirectory(prefix="pyworkflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for kind in ("sqlite", "memory"):
            results["per_step"][kind] = await bench_per_step(kind, tmp, sizes)
            results["start_one_step"][kind] = await bench_start(kind, tmp, sizes)
            results["scaling"][kind] = await bench_scaling(kind, tmp, sizes)
            results["cancel_sleeping"][kind] = await bench_cancel_sleeping(kind, tmp, sizes)
            results["child_vs_step"][kind] = await bench_child_vs_step(kind, tmp, sizes)
            results["chain"][kind] = await bench_chain_generations(kind, tmp, sizes)
        results["cold_resume"]["sqlite"] = await bench_cold_resume_sqlite(tmp, sizes)
        results["cold_resume"]["memory_evicted"] = await bench_cold_resume_memory(sizes)
    results["targets"] = _verdicts(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    options = parser.parse_args(argv)
    sizes = QUICK if options.quick else FULL
    results = asyncio.run(run_all(sizes, options.quick))
    text = json.dumps(results, indent=2)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
