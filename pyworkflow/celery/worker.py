"""Worker lifecycle: start a Celery worker for PyWorkflow, wire its processes, shut it down.

``run_worker`` is what ``pyworkflow worker run`` calls. Before starting Celery it checks that the
broker and the storage answer, and reports a problem as one ``WorkerStartupError`` line instead of
a reconnect loop of tracebacks. It serves every queue unless told otherwise.

The Celery signal handlers below make each process that executes tasks own a ``WorkerProcess``
(persistent event loop, engine, timer loop, sweeper, lease renewal): each prefork child when it
starts, the solo worker when its pool is built, the threads worker when it is ready. The prefork
parent never runs a loop (it forks children, and a thread must not be running across a fork).

Shutdown (SIGTERM, a warm shutdown in Celery's words) hands in-flight work back at once instead of
finishing it or leaving its message to the visibility timeout:

- solo/threads: ``worker_shutting_down`` (in the worker's main process) calls ``hand_back``: the
  running coroutines are cancelled, their tasks raise ``Reject(requeue=True)``, and their messages
  are back on the broker before the process exits; tasks that arrive later are refused the same way.
- prefork: the parent sends ``SIGUSR2`` to its children, and each does the same ``hand_back``
  (its task raises ``Reject(requeue=True)`` and the parent requeues the message); the children
  then exit when Celery closes the pool. A child that gets SIGTERM itself (``systemd`` signals
  the whole control group) dies at once, and Celery requeues its task's message as that of a
  lost worker (``task_reject_on_worker_lost``): handed back at once too, just with a louder log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from billiard.process import current_process  # type: ignore[import-untyped]
from celery import signals
from loguru import logger

from pyworkflow.celery.app import QUEUES, CelerySettings, celery_app, configure_app
from pyworkflow.celery.process import WorkerProcess
from pyworkflow.config import get_storage
from pyworkflow.storage.base import StorageBackend
from pyworkflow.utils.urls import redact_url

POOLS = ("prefork", "solo", "threads")
HAND_BACK_SIGNAL = signal.SIGUSR2  # parent -> prefork children: hand your work back
PROBE_TIMEOUT = 5.0

_consumer: Any = None  # the worker's consumer (set when ready): its pool knows the children


class WorkerStartupError(Exception):
    """The worker cannot start (broker or storage unreachable, bad option); one line for users."""


# -- process wiring (Celery signals) -------------------------------------------------------------


def _in_main_process() -> bool:
    return bool(current_process()._name == "MainProcess")


def _is_prefork(pool: Any) -> bool:
    from celery.concurrency.prefork import TaskPool as PreforkPool

    return isinstance(pool, PreforkPool)


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    """A prefork child starts, or the solo pool is built: this process will execute tasks."""
    WorkerProcess.current()
    if not _in_main_process():
        signal.signal(HAND_BACK_SIGNAL, _on_hand_back_signal)


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """The threads pool executes in this (main) process: start its loop now, not on first task."""
    global _consumer
    _consumer = sender
    pool = getattr(sender, "pool", None)
    if pool is not None and not _is_prefork(pool):
        WorkerProcess.current()


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    """SIGTERM reached the worker's main process: hand in-flight work back (module docstring)."""
    process = WorkerProcess.existing()
    if process is not None:
        process.hand_back()
        return
    for pid in _pool_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, HAND_BACK_SIGNAL)


def _pool_children() -> set[int]:
    """The pids of this prefork worker's children (those running a task at least)."""
    from celery.worker import state

    pids = {getattr(request, "worker_pid", None) for request in list(state.active_requests)}
    pool = getattr(_consumer, "pool", None)
    with contextlib.suppress(Exception):  # the pool may be starting or stopping
        pids.update(pool.info.get("processes", []) if pool is not None else [])
    return {pid for pid in pids if isinstance(pid, int) and pid != os.getpid()}


def _on_hand_back_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    """In a prefork child: cancel the work in flight and refuse more; Celery closes the pool."""
    process = WorkerProcess.existing()
    if process is not None:
        process.hand_back()


@signals.worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    process = WorkerProcess.existing()
    if process is not None:
        process.stop()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    process = WorkerProcess.existing()
    if process is not None:
        process.stop()


# -- starting a worker ---------------------------------------------------------------------------


# redis-py names a client by its whole configuration (a Sentinel that found no master lists every
# sentinel's that way); a message needs only the address.
_REDIS_CLIENT = re.compile(
    r"<redis\.client\.Redis\(<redis\.connection\.ConnectionPool\(<redis\.connection\.Connection"
    r"\(.*?,host=([^,]+),port=(\d+),.*?\)>\)>\)>"
)


def _one_line(exc: BaseException) -> str:
    text = _REDIS_CLIENT.sub(r"\1:\2", " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def check_broker(app: Any, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``WorkerStartupError`` unless the broker accepts a connection."""
    url = str(app.conf.get("pyworkflow_broker_url") or app.conf.broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1,
                interval_start=0,
                interval_step=0.2,
                interval_max=0.2,
                timeout=timeout,
            )
            conn.default_channel  # noqa: B018 - opening a channel talks to the server
    except Exception as exc:  # noqa: BLE001 - any failure is reported as one line
        raise WorkerStartupError(
            f"cannot reach the Celery broker at {redact_url(url)}: {_one_line(exc)}"
        ) from None


async def _probe(storage: StorageBackend) -> None:
    try:
        await storage.connect()
        await storage.get_run("pyworkflow-worker-startup-probe")
    finally:
        await storage.close()


def check_storage(storage: StorageBackend, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``WorkerStartupError`` unless ``storage`` connects and answers a read."""
    try:
        asyncio.run(asyncio.wait_for(_probe(storage), timeout))
    except Exception as exc:  # noqa: BLE001 - any failure is reported as one line
        raise WorkerStartupError(
            f"cannot use the storage ({type(storage).__name__}): {_one_line(exc)}"
        ) from None


def parse_queues(queues: str | Sequence[str] | None) -> list[str]:
    """Comma-separated or listed queue names (default: all four), checked against ``QUEUES``."""
    if queues is None:
        return list(QUEUES)
    items = queues.split(",") if isinstance(queues, str) else list(queues)
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUEUES]
    if unknown or not names:
        raise WorkerStartupError(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; the queues are"
            f" {', '.join(QUEUES)}"
        )
    return names


def run_worker(
    *,
    queues: str | Sequence[str] | None = None,
    concurrency: int | None = None,
    pool: str = "prefork",
    loglevel: str = "WARNING",
    hostname: str | None = None,
) -> int:
    """Check the broker and the storage, then run a Celery worker until it is stopped.

    Returns the worker's exit code. Raises ``WorkerStartupError`` before starting anything if
    an option is wrong or the broker or the storage cannot be reached.
    """
    if pool not in POOLS:
        raise WorkerStartupError(f"unknown pool {pool!r}; expected one of {', '.join(POOLS)}")
    names = parse_queues(queues)
    settings = CelerySettings.from_config()
    app = configure_app(celery_app, settings)
    check_broker(app)
    check_storage(get_storage())
    worker = app.Worker(
        hostname=hostname or f"pyworkflow-{os.getpid()}@{socket.gethostname()}",
        pool_cls=pool,
        concurrency=1 if pool == "solo" else concurrency,
        queues=names,
        loglevel=loglevel,
        quiet=True,
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
    )
    logger.info(
        "worker {} serving {} on {} ({} pool)",
        worker.hostname,
        names,
        redact_url(settings.broker_url),
        pool,
    )
    worker.start()
    return int(worker.exitcode or 0)


# -- status --------------------------------------------------------------------------------------


def _queue_lengths(app: Any) -> dict[str, int]:
    lengths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for name in QUEUES:
            try:
                lengths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # noqa: BLE001 - a queue never declared holds nothing
                lengths[name] = 0
    return lengths


def _pool_name(implementation: str) -> str:
    """``celery.concurrency.prefork:TaskPool`` -> ``prefork`` (``thread`` -> ``threads``)."""
    module = implementation.partition(":")[0].rpartition(".")[2]
    return "threads" if module == "thread" else module


def worker_status(timeout: float = 1.0) -> dict[str, Any]:
    """The workers answering within ``timeout`` seconds, and the messages each queue holds."""
    settings = CelerySettings.from_config()
    app = configure_app(celery_app, settings)
    check_broker(app)
    inspect = app.control.inspect(timeout=timeout)
    with ThreadPoolExecutor(3) as pool:  # each request waits out ``timeout``: ask all at once
        asked = [pool.submit(ask) for ask in (inspect.stats, inspect.active, inspect.active_queues)]
        stats, active, consuming = (future.result() or {} for future in asked)
    workers = []
    for name in sorted(stats):
        info = stats[name]
        pool = info.get("pool", {})
        workers.append(
            {
                "name": name,
                "pid": info.get("pid"),
                "pool": _pool_name(str(pool.get("implementation", ""))),
                "concurrency": pool.get("max-concurrency"),
                "processes": pool.get("processes", []),
                "active": len(active.get(name, [])),
                "queues": sorted(q.get("name", "") for q in consuming.get(name, [])),
            }
        )
    return {
        "broker": redact_url(settings.broker_url),
        "workers": workers,
        "queues": _queue_lengths(app),
    }


__all__ = [
    "POOLS",
    "WorkerStartupError",
    "check_broker",
    "check_storage",
    "parse_queues",
    "run_worker",
    "worker_status",
]
