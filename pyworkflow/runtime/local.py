"""``LocalRuntime``: runs workflows in this process on the wall clock.

Steps run inline in the activation by default (``dispatch_steps=True`` sends them through an
in-process queue instead, the same path Celery takes). An ``EngineService`` per storage backend
(the one Celery workers run) fires due timers (woken at the engine's timer hints, polling for
timers other processes set), sweeps runs whose lease expired (a crashed process's runs), and
renews the leases of the runs this process is activating. It lives as long as the event loop that
started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from loguru import logger

from pyworkflow.config import configured_hook_key
from pyworkflow.core.registry import WorkflowDefinition, list_workflows
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.blocking import blocked_kind
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.outcome import Outcome
from pyworkflow.engine.ports import Clock, SystemClock
from pyworkflow.model.exceptions import WorkflowNotFoundError
from pyworkflow.model.schemas import BlockedKind
from pyworkflow.runtime.base import Runtime, advance_when_free
from pyworkflow.runtime.service import EngineService
from pyworkflow.storage.base import StorageBackend


class InProcessQueue:
    """A ``TaskQueue`` that runs activations and step attempts as tasks on this event loop."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queued: set[str] = set()
        self._strangers: set[str] = set()  # runs of unknown workflows (logged once each)

    async def enqueue_activation(self, run_id: str) -> None:
        if run_id in self._queued:
            return  # one queued activation will see everything that arrived before it starts
        self._queued.add(run_id)
        self._spawn(self._activate(run_id))

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        assert self.engine is not None
        self._spawn(self.engine.execute_step(run_id, step_id, attempt))

    async def _activate(self, run_id: str) -> None:
        self._queued.discard(run_id)
        assert self.engine is not None
        try:
            await self.engine.advance(run_id)
        except WorkflowNotFoundError as exc:
            run = await self.engine.storage.get_run(run_id)
            if run is None or run.workflow_name in list_workflows():
                raise
            # A run of a workflow this process does not know (another process's): the first
            # time, its timer goes back to the storage at once rather than waiting out our
            # claim; should it come back to us (no process that has the workflow took it),
            # the run is blocked (``engine.blocking``) and the claim runs its course (no claim
            # and hand-back every poll for a run nobody here can run).
            if run_id in self._strangers:
                await self.engine.record_block(run_id, exc, retry=False)
            else:
                if len(self._strangers) >= 10_000:
                    self._strangers.clear()  # (bounded: a run may be logged again)
                self._strangers.add(run_id)
                logger.warning(
                    "run {} is a run of workflow {!r}, which is not registered in this process;"
                    " left to a process that has it",
                    run_id,
                    run.workflow_name,
                )
                await self.engine.hand_back_timer(run_id)
        except Exception as exc:
            if blocked_kind(exc) in (None, BlockedKind.ENGINE_ERROR):
                raise  # (logged with its traceback by _done)
            run = await self.engine.storage.get_run(run_id)
            if run is None or run.blocked is None:
                raise
            # The run is blocked: the engine said so on the run and in one warning line.

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("background workflow task failed")

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def drain(self) -> None:
        """Wait until no queued work is left (tests and orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# How many storage objects one local runtime serves at once (an engine and a polling service
# each); past it, idle ones are let go.
MAX_STORAGES = 32


class LocalRuntime(Runtime):
    """In-process runtime on the wall clock; see the module docstring."""

    name = "local"

    def __init__(
        self,
        *,
        dispatch_steps: bool = False,
        clock: Clock | None = None,
        poll_interval: float = 1.0,
        lease_ttl: float = 30.0,
        event_limit: int = 50_000,
        owner: str | None = None,
        max_nesting_depth: int = 3,
        logical_order: bool = True,
        inline_children: bool = True,
    ) -> None:
        self.dispatch_steps = dispatch_steps
        self.clock = clock or SystemClock()
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.event_limit = event_limit
        self.max_nesting_depth = max_nesting_depth
        self.logical_order = logical_order
        self.inline_children = inline_children
        self.owner = owner or f"local:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Per storage object, most recently used last; at most MAX_STORAGES of them (past it,
        # an idle one's engine and service are let go: each polls its storage).
        self._engines: OrderedDict[int, tuple[asyncio.AbstractEventLoop, Engine, InProcessQueue]]
        self._engines = OrderedDict()
        self._services: dict[int, EngineService] = {}

    def engine_for(self, storage: StorageBackend) -> Engine:
        return self._entry(storage)[1]

    def queue_for(self, storage: StorageBackend) -> InProcessQueue:
        return self._entry(storage)[2]

    def _entry(
        self, storage: StorageBackend
    ) -> tuple[asyncio.AbstractEventLoop, Engine, InProcessQueue]:
        loop = asyncio.get_running_loop()
        entry = self._engines.get(id(storage))
        if entry is not None and entry[0] is loop and entry[1].storage is storage:
            self._engines.move_to_end(id(storage))
            return entry
        # First use, or a new event loop (asyncio.run called again): start afresh on this loop.
        queue = InProcessQueue()
        options = EngineOptions(
            owner=self.owner,
            dispatch_steps=self.dispatch_steps,
            lease_ttl=timedelta(seconds=self.lease_ttl),
            event_limit=self.event_limit,
            max_nesting_depth=self.max_nesting_depth,
            logical_order=self.logical_order,
            inline_children=self.inline_children,
            block_unregistered=False,
            hook_key=configured_hook_key(),
        )
        engine = Engine(storage, self.clock, queue, options=options)
        queue.engine = engine
        entry = (loop, engine, queue)
        self._engines.pop(id(storage), None)
        self._engines[id(storage)] = entry
        self._services.pop(id(storage), None)
        self._let_go_of_idle()
        return entry

    def _let_go_of_idle(self) -> None:
        """Past ``MAX_STORAGES`` storage objects, forget the least recently used ones that need
        nothing from this process: in-memory storage with no work here (activation, step,
        queued task) and no timer or lease to serve. Their service stops polling; a later use
        starts afresh (a hook payload, say). Storage other processes share is kept: its
        sleeping runs need this process's timer service."""
        for key in list(self._engines)[: max(0, len(self._engines) - MAX_STORAGES)]:
            _, engine, queue = self._engines[key]
            storage = engine.storage
            next_wakeup = getattr(storage, "next_wakeup", None)  # (process-local storage)
            if (
                engine.active
                or engine.executing
                or queue.busy
                or storage.shared_between_processes
                or next_wakeup is None
                or next_wakeup() is not None
            ):
                continue
            service = self._services.pop(key, None)
            if service is not None:
                service.task.cancel()
            engine.evict()
            del self._engines[key]

    async def ensure_running(self, storage: StorageBackend) -> None:
        engine = self.engine_for(storage)
        service = self._services.get(id(storage))
        if service is None or service.engine is not engine or service.task.done():
            self._services[id(storage)] = EngineService(engine, self.poll_interval)

    async def start(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        storage: StorageBackend,
        idempotency_key: str | None = None,
    ) -> tuple[str, Outcome | None]:
        engine = self.engine_for(storage)
        await self.ensure_running(storage)
        run, created = await engine.start_run(
            definition, args, kwargs, idempotency_key=idempotency_key, activate_here=True
        )
        if not created:
            return run.run_id, None
        return run.run_id, await engine.advance(run.run_id, new_run=run)

    async def resume(self, run_id: str, *, storage: StorageBackend) -> Outcome:
        await self.ensure_running(storage)
        return await advance_when_free(self.engine_for(storage), run_id)

    async def drain(self, storage: StorageBackend) -> None:
        await self.queue_for(storage).drain()

    async def shutdown(self) -> None:
        """Stop background services (their runs stay durable and resume elsewhere)."""
        for service in self._services.values():
            service.task.cancel()
        for service in self._services.values():
            with contextlib.suppress(RuntimeError):  # a service of an event loop that is gone
                await service.stop()
        self._services.clear()


__all__ = ["InProcessQueue", "LocalRuntime"]
