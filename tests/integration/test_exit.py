"""A plain script exits: ``asyncio.run(main())`` that configures storage and starts a run sleeping a
second, then waits for its result or returns at once, exits, on every backend, every time.

Regression test (issue: "a plain script never exits"): on Python 3.11 ``asyncio.wait_for`` in the
engine service's loop could swallow the cancellation ``asyncio.run`` sends at exit, when the
service's wake event was set in the same loop iteration; the service then looped for ever and
``asyncio.run`` waited for it for ever. Each try is a fresh process with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import namespace_for
from tests.servers import PostgresServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
TRIES = {"wait": 2, "return": 6}  # returning at once hung two tries in three on PostgreSQL
DEADLINE = 30.0

SCRIPT = """
import asyncio, json, sys
from pyworkflow import configure, get_workflow_result, sleep, start, step, workflow
from pyworkflow.storage import config_to_storage

@step()
async def hello(name: str) -> str:
    return f"hello {name}"

@workflow()
async def greet(name: str) -> str:
    await sleep(1)
    return await hello(name)

async def main() -> None:
    configure(storage=config_to_storage(json.loads(sys.argv[1])), default_durable=True)
    run_id = await start(greet, "there")
    if sys.argv[2] == "wait":
        print(await get_workflow_result(run_id, timeout=20), flush=True)
    else:
        print("started", flush=True)  # and return at once: the run sleeps on in storage

asyncio.run(main())
print("exited", flush=True)
"""


def _config(kind: str, tmp: Path, redis: RedisServer, postgres: PostgresServer) -> str:
    """Fresh storage for one try: a new file, PostgreSQL schema or Redis prefix."""
    fresh = namespace_for(tmp)
    config = {
        "sqlite": {"url": f"sqlite:///{tmp}/runs.db"},
        "file": {"type": "file", "base_path": str(tmp / "files")},
        "postgres": {"url": postgres.dsn, "schema": fresh},
        "redis": {"url": redis.url, "prefix": fresh},
    }[kind]
    return json.dumps(config)


@pytest.mark.parametrize("mode", ["wait", "return"])
@pytest.mark.parametrize("kind", ["sqlite", "file", "postgres", "redis"])
def test_a_script_that_starts_a_sleeping_run_exits(
    kind: str,
    mode: str,
    tmp_path: Path,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    for attempt in range(TRIES[mode]):
        folder = tmp_path / f"try-{attempt}"
        folder.mkdir()
        config = _config(kind, folder, redis_server, postgres_server)
        try:
            done = subprocess.run(
                [sys.executable, str(script), config, mode],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=DEADLINE,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{kind}, try {attempt}: the script did not exit in {DEADLINE}s: {exc}")
        assert done.returncode == 0, done.stdout + done.stderr
        shown = "hello there" if mode == "wait" else "started"
        assert done.stdout.splitlines() == [shown, "exited"], done.stdout + done.stderr
