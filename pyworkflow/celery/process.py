"""``WorkerProcess``: what one Celery worker process owns — a persistent event loop and its engine.

Celery task bodies are synchronous; PyWorkflow is async. Every worker process (each prefork
child, the solo worker, the threads worker) therefore starts one asyncio event loop in a daemon
thread and keeps it for its whole life. A task body hands its coroutine to that loop and waits for
the result, so async database pools, the engine's instance cache and the ``EngineService`` (timer
loop, sweeper, lease renewal) survive from one task to the next and keep running between tasks.
The loop is created in the process that uses it, never inherited across a fork.

Graceful shutdown hands work back: ``hand_back`` cancels the coroutines in flight (a cancelled
step attempt records nothing; a cancelled activation commits nothing more) and makes every later
task refuse to start, so the task layer can requeue their messages at once.

This module must never decide what a task does (``tasks.py``) or when a worker stops
(``worker.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from loguru import logger

from pyworkflow.celery.app import CelerySettings, celery_app
from pyworkflow.celery.runtime import CeleryRuntime
from pyworkflow.config import get_storage
from pyworkflow.engine.activation import Engine
from pyworkflow.runtime.service import EngineService
from pyworkflow.storage.base import StorageBackend

T = TypeVar("T")
Work = Callable[["WorkerProcess"], Coroutine[Any, Any, T]]

STOP_TIMEOUT = 5.0


class HandedBack(Exception):
    """The process is shutting down: the work was not done (or was cancelled) and goes back."""


class WorkerProcess:
    """See the module docstring. ``WorkerProcess.current()`` is this process's one instance."""

    _current: WorkerProcess | None = None
    _lock = threading.Lock()

    def __init__(
        self, settings: CelerySettings | None = None, storage: StorageBackend | None = None
    ) -> None:
        self.pid = os.getpid()
        self.runtime = CeleryRuntime(settings=settings, app=celery_app, serve=True)
        self.storage = storage if storage is not None else get_storage()
        self.draining = False
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()  # in-flight work; touched on the loop only
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._futures_lock = threading.RLock()  # reentrant: hand_back runs in signal handlers
        self._thread = threading.Thread(target=self._run_loop, name="pyworkflow-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._boot(), self.loop).result()

    @classmethod
    def current(cls) -> WorkerProcess:
        """This process's instance, started on first use (and anew in a forked child)."""
        with cls._lock:
            process = cls._current
            if process is None or process.pid != os.getpid():
                process = cls._current = WorkerProcess()
            return process

    @classmethod
    def existing(cls) -> WorkerProcess | None:
        """This process's instance if it was started here, else None."""
        process = cls._current
        return process if process is not None and process.pid == os.getpid() else None

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _boot(self) -> None:
        try:
            await self.storage.connect()
        except Exception as exc:  # noqa: BLE001 - every storage call reconnects; keep serving
            logger.warning("storage unreachable at worker start ({}); retrying on use", exc)
        await self.runtime.ensure_running(self.storage)

    @property
    def engine(self) -> Engine:
        """The engine on the persistent loop (call from the loop)."""
        return self.runtime.engine_for(self.storage)

    @property
    def service(self) -> EngineService | None:
        """The timer loop/sweeper/lease renewal of this process (call from the loop)."""
        return self.runtime.service_for(self.storage)

    # -- running work --------------------------------------------------------------------------

    def run(self, work: Work[T]) -> T:
        """Run ``work(self)`` on the persistent loop and wait for it (from a task's thread).

        Raises ``HandedBack`` if the process is draining or the work was cancelled by
        ``hand_back``; any other exception of the work propagates.
        """
        if self.draining:
            raise HandedBack("the worker is shutting down")
        future = asyncio.run_coroutine_threadsafe(self._guarded(work), self.loop)
        with self._futures_lock:
            self._futures.add(future)
        try:
            return future.result()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            if self.draining:
                raise HandedBack("the worker is shutting down") from None
            raise
        finally:
            with self._futures_lock:
                self._futures.discard(future)

    async def _guarded(self, work: Work[T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.draining:
                raise asyncio.CancelledError
            return await work(self)
        finally:
            self._tasks.discard(task)

    @property
    def busy(self) -> bool:
        with self._futures_lock:
            return bool(self._futures)

    def hand_back(self, wait: float = 0.0) -> bool:
        """Stop taking work and cancel the work in flight; True if there was any.

        Thread-safe and signal-handler-safe. With ``wait``, blocks up to that many seconds for
        the cancelled work to unwind.
        """
        self.draining = True
        with self._futures_lock:
            futures = list(self._futures)
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self._cancel_everything)
        if futures and wait > 0:
            concurrent.futures.wait(futures, timeout=wait)
        return bool(futures)

    def _cancel_everything(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        service = self.service
        if service is not None:
            service.task.cancel()

    def stop(self) -> None:
        """Hand back what is in flight, stop the services, close storage, end the loop thread."""
        if not self._thread.is_alive():
            return
        self.hand_back(wait=STOP_TIMEOUT)

        async def shutdown() -> None:
            await self.runtime.shutdown()
            await self.storage.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(STOP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - stopping must not raise
            logger.warning("worker process shutdown was not clean: {}", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)


__all__ = ["HandedBack", "WorkerProcess"]
