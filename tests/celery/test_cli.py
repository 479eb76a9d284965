"""``pyworkflow worker run|status|list|queues`` as users run them.

A worker that cannot reach its broker or its storage, or is given a queue that does not exist,
exits with code 1 and one line of error (no traceback, no reconnect loop). ``worker status``
lists the workers that answer and the length of each queue.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pyworkflow.celery import QUEUES
from tests.celery.conftest import PYWORKFLOW, REPO_ROOT, Client
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.integration


def _env(**settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for key in list(env):
        if key.startswith("PYWORKFLOW_"):
            del env[key]
    env.update(settings)
    return env


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(PYWORKFLOW), "--module", "tests.celery.workflows", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_that_cannot_start_says_why_in_one_line(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    good_broker = f"redis://127.0.0.1:{redis_server.port}/13"
    good_storage = {
        "PYWORKFLOW_STORAGE_TYPE": "sqlite",
        "PYWORKFLOW_STORAGE_PATH": str(tmp_path / "unused.db"),
    }
    cases = {
        "cannot reach the Celery broker at redis://127.0.0.1:": _env(
            PYWORKFLOW_CELERY_BROKER=f"redis://127.0.0.1:{free_port()}/0",
            PYWORKFLOW_STORAGE_TYPE="sqlite",
            PYWORKFLOW_STORAGE_PATH=str(tmp_path / "ok.db"),
        ),
        "cannot use the storage (SQLiteStorageBackend)": _env(
            PYWORKFLOW_CELERY_BROKER=good_broker,
            PYWORKFLOW_STORAGE_TYPE="sqlite",
            PYWORKFLOW_STORAGE_PATH=str(not_a_folder / "runs.db"),
        ),
        "unknown queue(s) pyworkflow.nope": _env(
            PYWORKFLOW_CELERY_BROKER=good_broker, **good_storage
        ),
    }
    procs = {}
    for expected, env in cases.items():  # all at once: each pays the interpreter start-up
        extra = ["--queues", "pyworkflow.steps,pyworkflow.nope"] if "queue" in expected else []
        procs[expected] = _spawn(env, "worker", "run", "--pool", "solo", *extra)
    for expected, proc in procs.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, (expected, out, err)
        lines = (out + err).strip().splitlines()
        assert len(lines) == 1, f"expected one line, got:\n{out}{err}"
        assert lines[0].startswith("Error: "), lines
        assert expected in lines[0], lines


async def test_worker_status_lists_the_workers_and_the_queues(client: Client) -> None:
    cluster = client.cluster
    await cluster.wait_ready(client.app)
    proc = _spawn(
        _env(PYWORKFLOW_CELERY_BROKER=cluster.broker),
        "worker",
        "status",
        "--json",
        "--timeout",
        "1",
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    status = json.loads(out)
    workers = {row["name"]: row for row in status["workers"]}
    assert set(workers) == {w.hostname for w in cluster.workers.values()}
    assert workers["a@pyworkflow-tests"]["pool"] == "prefork"
    assert len(workers["a@pyworkflow-tests"]["processes"]) == 2
    assert workers["b@pyworkflow-tests"]["pool"] == "solo"
    assert all(row["queues"] == sorted(QUEUES) for row in workers.values())
    assert set(status["queues"]) == set(QUEUES)
    assert "@" not in status["broker"].split("//", 1)[1] or "***" in status["broker"]


async def test_worker_list_and_queues_answer_from_the_real_workers(client: Client) -> None:
    cluster = client.cluster
    await cluster.wait_ready(client.app)
    env = _env(PYWORKFLOW_CELERY_BROKER=cluster.broker)
    listing = _spawn(env, "worker", "list", "--output", "json", "--timeout", "1")
    queues = _spawn(env, "--output", "plain", "worker", "queues", "--timeout", "1")
    out, err = listing.communicate(timeout=30)
    assert listing.returncode == 0, err
    workers = {row["name"]: row for row in json.loads(out)}
    assert set(workers) == {w.hostname for w in cluster.workers.values()}
    assert workers["b@pyworkflow-tests"]["pool"] == "solo"
    out, err = queues.communicate(timeout=30)
    assert queues.returncode == 0, err
    lengths = dict(line.split("\t") for line in out.splitlines())
    assert set(lengths) == set(QUEUES) and all(n.isdigit() for n in lengths.values())
