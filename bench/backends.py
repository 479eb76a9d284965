"""Engine benchmarks on any storage: per-step cost of one run, and throughput of concurrent runs.

    .venv/bin/python bench/backends.py postgres             # starts a throwaway PostgreSQL
    .venv/bin/python bench/backends.py redis                # starts a throwaway Redis
    .venv/bin/python bench/backends.py --url postgresql://user:pw@host:5432/db
    .venv/bin/python bench/backends.py --url redis://localhost:6379/0
    .venv/bin/python bench/backends.py sqlite               # or memory: the embedded backends

The storage is built with ``config_to_storage`` from the URL, so any backend works. A PostgreSQL
URL without ``?schema=`` gets a fresh schema (dropped afterwards); a Redis one a fresh key prefix.
Without ``--url``, a server is started from ``tests/servers.py`` and stopped at the end.

Prints one JSON object and writes it to ``bench/results/backends-<kind>.json``. It measures and
reports; it never asserts anything about speed. The workflows, the step-gap sampling and the
percentiles are those of ``bench/engine.py`` (imported, not copied).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.servers and bench.engine, when run as a script

from bench.engine import _marks, _summary_us, bench_noop_steps, bench_tick_steps  # noqa: E402
from pyworkflow.api import start  # noqa: E402
from pyworkflow.runtime.local import LocalRuntime  # noqa: E402
from pyworkflow.storage import config_to_storage, storage_to_config  # noqa: E402
from pyworkflow.storage.base import StorageBackend  # noqa: E402
from tests import servers  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# The targets of the storage issue (see README.md); reported, never asserted.
TARGETS: dict[str, dict[str, float]] = {
    "postgres": {"per_step_p50_us": 500.0, "concurrent_steps_per_s": 8_000.0},
    "redis": {"per_step_p50_us": 200.0},
}


@dataclass(frozen=True, slots=True)
class Sizes:
    steps: int  # sequential steps of the one-run measurement
    runs: int  # runs started at once
    run_steps: int  # steps of each concurrent run
    repeats: int  # the concurrent measurement is the median of this many


FULL = Sizes(steps=2_000, runs=16, run_steps=500, repeats=3)
QUICK = Sizes(steps=100, runs=4, run_steps=50, repeats=1)

# -- the storage under test ---------------------------------------------------------------------


def _kind_of(url: str) -> str:
    scheme = url.partition(":")[0].lower()
    return {"postgresql": "postgres", "rediss": "redis", "sqlite3": "sqlite"}.get(scheme, scheme)


@contextlib.contextmanager
def _server_url(kind: str) -> Iterator[str]:
    """A URL for ``kind``: a throwaway server for PostgreSQL and Redis, a temporary file for
    SQLite."""
    if kind == "postgres":
        with servers.postgres_server() as server:
            yield server.dsn
    elif kind == "redis":
        with servers.redis_server() as server:
            yield server.url
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pyworkflow-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    elif kind == "memory":
        yield "memory://"
    else:
        raise SystemExit(f"unknown storage kind {kind!r}: use postgres, redis, sqlite or memory")


def _storage_config(url: str, namespace: str) -> dict[str, Any]:
    """The config of ``url`` in a namespace of its own (a schema, a key prefix)."""
    kind = _kind_of(url)
    if kind == "postgres" and "schema=" not in url:
        return {"url": f"{url}{'&' if '?' in url else '?'}schema={namespace}"}
    if kind == "redis":
        return {"url": url, "prefix": namespace}
    return {"url": url}


async def _drop_schema(storage: StorageBackend, namespace: str) -> None:
    """Remove the schema the benchmark made in a PostgreSQL database it was pointed at."""
    import asyncpg

    config = storage_to_config(storage)
    dsn = str(config["dsn"]).split("?")[0]
    settings = ("host", "port", "user", "password", "database")
    options = {name: config[name] for name in settings if name in config}
    conn = await asyncpg.connect(dsn, **options)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
    finally:
        await conn.close()


# -- measuring ----------------------------------------------------------------------------------


async def bench_one_run(rt: LocalRuntime, st: StorageBackend, sizes: Sizes) -> dict[str, Any]:
    """One run of ``steps`` sequential no-op steps: gaps between step bodies, and the whole run."""
    await start(bench_noop_steps, 20, runtime=rt, storage=st)  # warm up: pool, statements
    _marks.clear()
    began = time.perf_counter_ns()
    await start(bench_tick_steps, sizes.steps, runtime=rt, storage=st)
    whole = time.perf_counter_ns() - began
    gaps = [later - earlier for earlier, later in zip(_marks, _marks[1:], strict=False)]
    return {
        "steps": sizes.steps,
        "whole_run_us_per_step": round(whole / sizes.steps / 1_000, 2),
        "sampled_us": _summary_us(gaps),
    }


async def bench_read_round_trip(st: StorageBackend, samples: int = 2_000) -> dict[str, float]:
    """The storage's bare round trip: ``get_timer`` of an unknown run (one indexed read).

    Per-step cost minus this is what the engine and the commit add; on a machine whose loopback
    is slow (a busy or throttled VM) the per-step figure moves with this one.
    """
    for _ in range(20):
        await st.get_timer("bench-no-such-run")
    times = []
    for _ in range(samples):
        began = time.perf_counter_ns()
        await st.get_timer("bench-no-such-run")
        times.append(time.perf_counter_ns() - began)
    return _summary_us(times)


async def bench_concurrent(rt: LocalRuntime, st: StorageBackend, sizes: Sizes) -> dict[str, Any]:
    """``runs`` runs of ``run_steps`` steps started at once: steps per second over all of them."""

    async def all_runs() -> float:
        began = time.perf_counter()
        await asyncio.gather(
            *(
                start(bench_noop_steps, sizes.run_steps, runtime=rt, storage=st)
                for _ in range(sizes.runs)
            )
        )
        return time.perf_counter() - began

    await asyncio.gather(*(start(bench_noop_steps, 5, runtime=rt, storage=st) for _ in range(4)))
    seconds = [await all_runs() for _ in range(sizes.repeats)]
    total = sizes.runs * sizes.run_steps
    return {
        "runs": sizes.runs,
        "steps_per_run": sizes.run_steps,
        "seconds": [round(s, 3) for s in seconds],
        "steps_per_s": round(total / statistics.median(seconds)),
    }


def _verdicts(kind: str, results: dict[str, Any]) -> dict[str, Any]:
    measured = {
        "per_step_p50_us": (results["one_run"]["sampled_us"]["p50"], "max"),
        "concurrent_steps_per_s": (results["concurrent"]["steps_per_s"], "min"),
    }
    verdicts = {}
    for name, target in TARGETS.get(kind, {}).items():
        value, bound = measured[name]
        met = value <= target if bound == "max" else value >= target
        verdicts[name] = {"value": value, "target": target, "met": met}
    return verdicts


async def run(url: str, sizes: Sizes, quick: bool) -> dict[str, Any]:
    kind = _kind_of(url)
    namespace = f"bench_{uuid.uuid4().hex[:12]}"
    config = _storage_config(url, namespace)
    storage = config_to_storage(config)
    rt = LocalRuntime(poll_interval=3600)
    try:
        results: dict[str, Any] = {
            "meta": {
                "storage": kind,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "quick": quick,
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            "one_run": await bench_one_run(rt, storage, sizes),
            "read_round_trip_us": await bench_read_round_trip(storage),
            "concurrent": await bench_concurrent(rt, storage, sizes),
        }
    finally:
        await rt.shutdown()
        if kind == "postgres" and "schema=" not in url:
            await _drop_schema(storage, namespace)
        await storage.close()
    results["targets"] = _verdicts(kind, results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "kind", nargs="?", help="postgres, redis, sqlite or memory (a fresh one); or give --url"
    )
    parser.add_argument(
        "--url", help="a storage URL (postgresql://..., redis://..., sqlite:///...)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--output", type=Path, help="default: bench/results/backends-<kind>.json")
    options = parser.parse_args(argv)
    if (options.kind is None) == (options.url is None):
        parser.error("give a storage kind or --url")
    sizes = QUICK if options.quick else FULL
    with contextlib.ExitStack() as stack:
        url = options.url or stack.enter_context(_server_url(options.kind))
        results = asyncio.run(run(url, sizes, options.quick))
    text = json.dumps(results, indent=2)
    output = options.output or RESULTS / f"backends-{results['meta']['storage']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
