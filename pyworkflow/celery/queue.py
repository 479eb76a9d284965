"""``BrokerQueue``: the engine's ``TaskQueue`` port over Celery.

``enqueue_activation`` and ``enqueue_step`` publish a task message (ids only) to the workflows or
the steps queue. Publishing is blocking socket I/O in kombu. A healthy publish (one LPUSH on a
connection this thread already holds, well under a millisecond) runs right on the event loop: a
hop to another thread and back would cost more, the same trade the SQLite backend makes. A
publish that fails is retried on a publisher thread with kombu's retry policy (reconnecting, for a
few seconds), so the event loop never sleeps or waits on an absent broker, and timers and lease
renewal keep running. Broker sockets have timeouts (``app.py``), so a half-open connection
cannot block the loop either.

One shortcut: a worker that just recorded a step's outcome continues the run itself. Inside
``continuation(run_id)``, ``enqueue_activation(run_id)`` publishes nothing and marks the
continuation instead; the caller then runs the activation right away (one broker round trip less
per step). Should the process die first, the outcome's commit set the run's timer to "now", so the
timer loop wakes the run anyway.

This module must never decide anything about a run: it only carries ids to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from loguru import logger

from pyworkflow.celery.app import ACTIVATE_TASK, STEP_QUEUE, STEP_TASK, WORKFLOW_QUEUE

# kombu's publish retry: about 6 s of attempts while the broker is unreachable, then give up
# (the run is safe either way: its timer row or its lease brings it back).
PUBLISH_RETRY_POLICY = {
    "max_retries": 12,
    "interval_start": 0.0,
    "interval_step": 0.1,
    "interval_max": 1.0,
}


@dataclass(slots=True)
class Continuation:
    """A request, made while recording a step's outcome, to activate ``run_id`` here next."""

    run_id: str
    requested: bool = False


_continuation: ContextVar[Continuation | None] = ContextVar("pyworkflow_continuation", default=None)


class Publisher:
    """Publishes task messages; see the module docstring. One per runtime, fork-aware.

    With ``hold=True`` (workers: only the event loop's thread and the publisher thread publish)
    each publishing thread keeps one producer, and its broker connection, for good: half the cost
    of a publish. Otherwise (callers, which may publish from any number of threads) every publish
    borrows a producer from the app's pool and returns it.
    """

    def __init__(self, app: Any, *, hold: bool = False) -> None:
        self.app = app
        self.hold = hold
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()  # a holding thread's producer
        self._held: list[Any] = []  # every held producer, to release on close
        self._lock = threading.Lock()
        self._pid = 0

    def _owned(self) -> None:
        if self._pid != os.getpid():  # a forked child must not use its parent's connections
            self._executor = None
            self._local = threading.local()
            self._held = []
            self._pid = os.getpid()

    def _thread(self) -> ThreadPoolExecutor:
        self._owned()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="pyworkflow-publish")
        return self._executor

    async def send(self, task: str, args: tuple[Any, ...], queue: str) -> None:
        """Publish one message for ``task`` on ``queue``; returns once the broker has it."""
        try:
            self.send_now(task, args, queue, retry=False)
            return
        except Exception as exc:  # noqa: BLE001 - retried below, off the event loop
            logger.debug("publishing {} failed ({}); retrying on the publisher thread", task, exc)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._thread(), functools.partial(self.send_now, task, args, queue, retry=True)
        )

    def send_now(self, task: str, args: tuple[Any, ...], queue: str, *, retry: bool = True) -> None:
        """Publish from the calling thread (blocking)."""
        self._owned()
        if not self.hold:
            with self.app.producer_or_acquire() as producer:
                self._publish(producer, task, args, queue, retry)
            return
        producer = getattr(self._local, "producer", None)
        if producer is None:
            producer = self._local.producer = self.app.producer_pool.acquire(block=True)
            with self._lock:
                self._held.append(producer)
        try:
            self._publish(producer, task, args, queue, retry)
        except BaseException:
            self._local.producer = None  # its connection may be broken: take a fresh one next
            self._release(producer)
            raise

    def _publish(
        self, producer: Any, task: str, args: tuple[Any, ...], queue: str, retry: bool
    ) -> None:
        self.app.send_task(
            task,
            args=list(args),
            queue=queue,
            producer=producer,
            retry=retry,
            retry_policy=PUBLISH_RETRY_POLICY,
            ignore_result=True,
            argsrepr=repr(args),  # ids only: no need for Celery's (slower) safe repr
            kwargsrepr="{}",
        )

    def _release(self, producer: Any) -> None:
        with self._lock:
            if producer in self._held:
                self._held.remove(producer)
        with contextlib.suppress(Exception):
            producer.release()

    def close(self) -> None:
        """Stop the publisher thread and give every held producer back to the pool."""
        if self._pid != os.getpid():
            return
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            held, self._held = self._held, []
        for producer in held:
            with contextlib.suppress(Exception):
                producer.release()
        self._local = threading.local()


class BrokerQueue:
    """The ``TaskQueue`` port: activations and step attempts become Celery task messages."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def enqueue_activation(self, run_id: str) -> None:
        here = _continuation.get()
        if here is not None and here.run_id == run_id:
            here.requested = True
            return
        await self.publisher.send(ACTIVATE_TASK, (run_id,), WORKFLOW_QUEUE)

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        await self.publisher.send(STEP_TASK, (run_id, step_id, attempt), STEP_QUEUE)

    @staticmethod
    @contextlib.contextmanager
    def continuation(run_id: str) -> Iterator[Continuation]:
        """While inside, an activation asked for ``run_id`` is left to the caller (see above)."""
        here = Continuation(run_id)
        token = _continuation.set(here)
        try:
            yield here
        finally:
            _continuation.reset(token)


__all__ = ["BrokerQueue", "Continuation", "PUBLISH_RETRY_POLICY", "Publisher"]
