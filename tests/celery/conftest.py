"""Real Celery workers for the integration tests: a broker, a SQLite file, worker processes.

``Cluster`` runs ``pyworkflow --config ... --module tests.celery.workflows worker run`` processes
(each in its own session, so SIGKILL of the process group takes a prefork worker's children
too) against one Redis database of the session's ``redis_server`` and one SQLite file. Settings
are small so recovery is quick: ``lease_ttl`` 2 s, timer polling 0.2 s, a 3 s visibility timeout.

``client`` is what a test talks to: a caller-side ``CeleryRuntime`` on its own Celery app (so
two clusters on two broker databases never share a connection pool) and the test's own view of
the SQLite file. Everything waits by polling with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from pyworkflow import api, configure
from pyworkflow.celery import CeleryRuntime, CelerySettings
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.storage import SQLiteStorageBackend, config_to_storage
from pyworkflow.storage.base import StorageBackend
from tests import polling
from tests.servers import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
PYWORKFLOW = Path(sys.executable).parent / "pyworkflow"
DEADLINE = 30.0
LEASE_TTL = 2.0
POLL = 0.2
VISIBILITY_TIMEOUT = 3.0


async def until(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy; fail at the deadline."""
    return await polling.until(check, what, deadline)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def child_pids(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(part) for part in text.split()}


@dataclass
class Worker:
    name: str
    pool: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    queues: str | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@pyworkflow-tests"

    def pids(self) -> set[int]:
        """The main process and, for prefork, its children."""
        if self.proc is None or self.proc.poll() is not None:
            return set()
        return {self.proc.pid} | child_pids(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """Worker processes sharing one broker database and one SQLite file (module docstring)."""

    broker: str
    db: Path
    ledger: Path
    tmp: Path
    visibility_timeout: float = VISIBILITY_TIMEOUT
    workers: dict[str, Worker] = field(default_factory=dict)
    storage_url: str | None = None  # a server's storage instead of the SQLite file ``db``
    modules: tuple[str, ...] = ("tests.celery.workflows",)  # what the workers import

    @property
    def config(self) -> Path:
        path = self.tmp / "pyworkflow.config.yaml"
        if not path.exists():
            path.write_text(
                "runtime: celery\n"
                f"lease_ttl: {LEASE_TTL}\n"
                f"timer_poll_interval: {POLL}\n"
                "celery:\n"
                f"  visibility_timeout: {self.visibility_timeout}\n"
            )
        return path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            PYWORKFLOW_CELERY_BROKER=self.broker,
        )
        if self.storage_url is None:
            env.update(PYWORKFLOW_STORAGE_TYPE="sqlite", PYWORKFLOW_STORAGE_PATH=str(self.db))
        else:
            env["PYWORKFLOW_STORAGE_URL"] = self.storage_url
        return env

    def storage(self) -> StorageBackend:
        """A backend object over the cluster's storage, as the workers open it."""
        if self.storage_url is None:
            return SQLiteStorageBackend(str(self.db))
        return config_to_storage({"url": self.storage_url})

    def add(self, name: str, pool: str, queues: str | None = None) -> Worker:
        worker = Worker(name, pool, self.tmp / f"{name}.log", queues=queues)
        self.workers[name] = worker
        return worker

    def start(self, name: str) -> Worker:
        worker = self.workers[name]
        assert not worker.alive(), f"worker {name} is already running"
        cmd = [
            str(PYWORKFLOW),
            "--config",
            str(self.config),
            *(arg for module in self.modules for arg in ("--module", module)),
            "worker",
            "run",
            "--pool",
            worker.pool,
            "--hostname",
            worker.hostname,
        ]
        if worker.pool != "solo":
            cmd += ["--concurrency", "2"]
        if worker.queues:
            cmd += ["--queues", worker.queues]
        with worker.log.open("ab") as log:
            log.write(f"--- start {time.time():.3f} {' '.join(cmd)}\n".encode())
            log.flush()
            worker.proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return worker

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (a prefork worker's children too)."""
        worker = self.workers[name]
        if worker.alive():
            assert worker.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(10)

    def kill_child(self, name: str) -> bool:
        """SIGKILL one pool child of a prefork worker (the worker itself stays); False if none."""
        worker = self.workers[name]
        children = sorted(child_pids(worker.proc.pid)) if worker.alive() else []
        if not children:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(children[0], signal.SIGKILL)
        return True

    def terminate(self, name: str) -> None:
        """SIGTERM the worker's main process only (what ``kill PID`` does)."""
        worker = self.workers[name]
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)

    def stop_all(self) -> None:
        for name in self.workers:
            self.kill(name)

    def logs(self) -> str:
        parts = []
        for worker in self.workers.values():
            text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
            tail = "\n".join(text.splitlines()[-400:])
            parts.append(f"===== {worker.name} ({worker.pool}) =====\n{tail}")
        return "\n".join(parts)

    def app(self) -> Any:
        return Celery(f"pyworkflow-tests-{uuid.uuid4().hex[:6]}")

    def ping(self, app: Any, names: list[str], timeout: float = 0.5) -> set[str]:
        """The workers among ``names`` that answer a ping (on a fresh broker connection)."""
        hostnames = [self.workers[name].hostname for name in names]
        try:
            with app.connection_for_write() as conn:
                replies = app.control.ping(
                    destination=hostnames, timeout=timeout, limit=len(hostnames), connection=conn
                )
        except Exception:  # noqa: BLE001 - the broker may be coming back: ask again
            return set()
        answered = {host for reply in replies or [] for host in reply}
        return {name for name in names if self.workers[name].hostname in answered}

    async def wait_ready(self, app: Any, *names: str, deadline: float = DEADLINE) -> None:
        loop = asyncio.get_running_loop()
        wanted = list(names) or list(self.workers)

        async def ready() -> bool:
            for name in wanted:
                worker = self.workers[name]
                assert worker.alive(), f"worker {name} exited:\n{self.logs()}"
            answered = await loop.run_in_executor(None, self.ping, app, wanted)
            return answered == set(wanted)

        await until(ready, f"workers {wanted} to answer a ping", deadline)


def new_cluster(server: RedisServer, tmp: Path, db_number: int, **kwargs: Any) -> Cluster:
    broker = f"redis://127.0.0.1:{server.port}/{db_number}"
    redis.Redis.from_url(broker).flushdb()
    return Cluster(
        broker=broker, db=tmp / "runs.db", ledger=tmp / "ledger.jsonl", tmp=tmp, **kwargs
    )


@pytest.fixture(scope="package")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two workers for the whole package: ``a`` (prefork, 2 children) and ``b`` (solo)."""
    made = new_cluster(redis_server, tmp_path_factory.mktemp("celery-cluster"), 11)
    made.add("a", "prefork")
    made.add("b", "solo")
    made.start("a")
    made.start("b")
    try:
        yield made
    finally:
        made.stop_all()


@dataclass
class Client:
    """A test's side of a cluster: start runs, read the SQLite file, talk to the workers."""

    cluster: Cluster
    runtime: CeleryRuntime
    storage: StorageBackend
    app: Any

    async def start(self, wf: Any, *args: Any, **kwargs: Any) -> str:
        return await api.start(wf, *args, runtime=self.runtime, storage=self.storage, **kwargs)

    async def run(self, run_id: str) -> WorkflowRun:
        found = await self.storage.get_run(run_id)
        assert found is not None
        return found

    async def finished(self, run_ids: list[str], deadline: float = DEADLINE) -> list[WorkflowRun]:
        """Wait until every run is terminal (failing with the workers' logs if not)."""

        async def all_done() -> list[WorkflowRun] | None:
            runs = [await self.run(run_id) for run_id in run_ids]
            return runs if all(run.status.is_terminal for run in runs) else None

        try:
            return list(await until(all_done, f"{len(run_ids)} runs to finish", deadline))
        except AssertionError:
            runs = [await self.run(run_id) for run_id in run_ids]
            statuses = {run.run_id: run.status.value for run in runs if not run.status.is_terminal}
            raise AssertionError(f"unfinished runs: {statuses}\n{self.cluster.logs()}") from None

    async def completed(self, run_ids: list[str], deadline: float = DEADLINE) -> list[Any]:
        """Wait for the runs and return their results (each must have completed)."""
        from pyworkflow.serialization import loads

        runs = await self.finished(run_ids, deadline)
        failed = {run.run_id: run.error for run in runs if run.status is not RunStatus.COMPLETED}
        assert not failed, f"runs did not complete: {failed}\n{self.cluster.logs()}"
        return [None if run.result is None else loads(run.result) for run in runs]

    async def events(self, run_id: str) -> list[Any]:
        return list(await self.storage.get_events(run_id))

    def ledger(self) -> list[dict[str, Any]]:
        return read_ledger(self.cluster.ledger)


@contextlib.asynccontextmanager
async def client_of(cluster: Cluster) -> AsyncIterator[Client]:
    app = cluster.app()
    settings = CelerySettings(
        broker_url=cluster.broker,
        visibility_timeout=cluster.visibility_timeout,
        lease_ttl=LEASE_TTL,
        timer_poll_interval=POLL,
    )
    runtime = CeleryRuntime(settings=settings, app=app)
    storage = cluster.storage()
    api.set_runtime("celery", runtime)
    configure(default_runtime="celery", storage=storage)
    try:
        yield Client(cluster, runtime, storage, app)
    finally:
        await runtime.shutdown()
        await storage.close()
        app.close()


async def heal(cluster: Cluster, app: Any, server: RedisServer, deadline: float = DEADLINE) -> None:
    """Leave the package's cluster as a test expects it: the broker up, every worker alive and
    answering a ping. A test that failed midway (a broker that did not come back in time, a
    worker that stopped consuming after an outage) must not fail every test after it: workers
    that do not answer within the deadline are started again."""
    if not server.alive():
        server.start()
    for name, worker in cluster.workers.items():
        if not worker.alive():
            cluster.start(name)
    try:
        await cluster.wait_ready(app, deadline=deadline)
    except AssertionError:
        for name in cluster.workers:
            cluster.kill(name)
            cluster.start(name)
        await cluster.wait_ready(app)


@pytest.fixture
async def client(cluster: Cluster, redis_server: RedisServer) -> AsyncIterator[Client]:
    async with client_of(cluster) as made:
        await heal(cluster, made.app, redis_server)
        yield made
