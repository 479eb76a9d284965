"""``CeleryRuntime``: workflows run on Celery workers; the caller only records and enqueues.

``start`` writes the run and its ``workflow.started`` in the caller (atomically, and
idempotently per ``idempotency_key``), then publishes the first activation, then returns the run
id: an id ``start`` returned always names a stored run. The run is created holding a lease, so if
the caller dies between the write and the publish the sweeper starts the run after ``lease_ttl``.

Workers use the same class with ``serve=True``: their engine dispatches steps to the steps queue
and ``ensure_running`` starts the process's ``EngineService`` (timer loop, sweeper, lease
renewal). Callers (``serve=False``) serve nothing: timers and recovery are the workers' job.
Steps are dispatched (``force_local=True`` steps run inline in the activation).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from loguru import logger

from pyworkflow.celery.app import CelerySettings, celery_app, configure_app
from pyworkflow.celery.queue import BrokerQueue, Publisher
from pyworkflow.config import configured_hook_key
from pyworkflow.core.registry import WorkflowDefinition
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.outcome import Outcome
from pyworkflow.engine.ports import Clock, SystemClock
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.runtime.base import Runtime, advance_when_free
from pyworkflow.runtime.service import EngineService
from pyworkflow.storage.base import StorageBackend
from pyworkflow.utils.urls import redact_url
from pyworkflow.utils.waiting import cancel_and_wait


class CeleryRuntime(Runtime):
    """The production runtime; see the module docstring."""

    name = "celery"

    def __init__(
        self,
        *,
        settings: CelerySettings | None = None,
        app: Any = None,
        serve: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or CelerySettings.from_config()
        self.app = configure_app(app, self.settings)
        self.serve = serve
        self.clock = clock or SystemClock()
        # Leases name the process holding them; a lease is renewed only by its holder (and the
        # runs waiting on dispatched steps by whoever executes one: the engine's STEP_EXECUTORS).
        self.owner = f"celery:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.publisher = Publisher(self.app, hold=serve)
        self.queue = BrokerQueue(self.publisher)
        self._engines: dict[int, tuple[asyncio.AbstractEventLoop, Engine]] = {}
        self._services: dict[int, EngineService] = {}

    def engine_for(self, storage: StorageBackend) -> Engine:
        loop = asyncio.get_running_loop()
        entry = self._engines.get(id(storage))
        if entry is not None and entry[0] is loop and entry[1].storage is storage:
            return entry[1]
        options = EngineOptions(
            owner=self.owner,
            dispatch_steps=True,
            lease_ttl=timedelta(seconds=self.settings.lease_ttl),
            # A step's message may wait in a busy queue far longer than lease_ttl; a message
            # the broker lost comes back (or is given up) after the visibility timeout.
            dispatch_lease_ttl=timedelta(
                seconds=max(self.settings.lease_ttl, self.settings.visibility_timeout)
            ),
            event_limit=self.settings.event_limit,
            max_nesting_depth=self.settings.max_nesting_depth,
            logical_order=self.settings.logical_order,
            inline_children=self.settings.inline_children,
            hook_key=configured_hook_key(),
        )
        engine = Engine(storage, self.clock, self.queue, options=options)
        self._engines[id(storage)] = (loop, engine)
        self._services.pop(id(storage), None)
        return engine

    def service_for(self, storage: StorageBackend) -> EngineService | None:
        """The running ``EngineService`` of ``storage``'s engine, if this runtime serves one."""
        service = self._services.get(id(storage))
        if service is None or service.task.done():
            return None
        return service

    async def ensure_running(self, storage: StorageBackend) -> None:
        if not self.serve:
            return  # timers and recovery are served by the workers
        engine = self.engine_for(storage)
        service = self._services.get(id(storage))
        if service is None or service.engine is not engine or service.task.done():
            self._services[id(storage)] = EngineService(
                engine, self.settings.timer_poll_interval, serve_schedules=True
            )

    async def start(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        storage: StorageBackend,
        idempotency_key: str | None = None,
    ) -> tuple[str, Outcome | None]:
        if not storage.shared_between_processes:
            raise ConfigurationError(
                "the celery runtime needs storage its workers share (sqlite, postgres, redis or"
                f" file), not {storage.kind}; configure storage, or start with durable=True"
            )
        engine = self.engine_for(storage)
        run, created = await engine.start_run(
            definition, args, kwargs, idempotency_key=idempotency_key
        )
        if created:
            try:
                await self.queue.enqueue_activation(run.run_id)
            except Exception as exc:  # noqa: BLE001 - the stored run is swept and started later
                logger.bind(run_id=run.run_id).warning(
                    "run {} is stored but could not be enqueued on {} ({}); the sweeper starts"
                    " it after lease_ttl ({}s)",
                    run.run_id,
                    redact_url(self.settings.broker_url),
                    exc,
                    self.settings.lease_ttl,
                )
        return run.run_id, None

    async def resume(self, run_id: str, *, storage: StorageBackend) -> Outcome:
        """Run an activation of ``run_id`` in the caller now (its steps go to the workers).

        The activation holds the run's lease, and a ``force_local`` step runs in it: the lease
        is renewed while it lasts (a worker's renewal loop does that for its own activations;
        a caller has none), or a worker's sweeper would start a second activation after
        ``lease_ttl``.
        """
        engine = self.engine_for(storage)
        renewal = asyncio.get_running_loop().create_task(self._renew(engine))
        try:
            return await advance_when_free(engine, run_id)
        finally:
            await cancel_and_wait(renewal)

    async def _renew(self, engine: Engine) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            try:
                await engine.renew_leases()
            except Exception as exc:  # noqa: BLE001 - try again next round; the lease may hold
                logger.warning("could not renew the leases of {}: {}", engine.options.owner, exc)

    async def shutdown(self) -> None:
        """Stop this process's services and its publisher thread."""
        for service in list(self._services.values()):
            if service.task.get_loop() is asyncio.get_running_loop():
                await service.stop()
        self._services.clear()
        await asyncio.get_running_loop().run_in_executor(None, self.publisher.close)


def default_runtime() -> CeleryRuntime:
    """A caller-side runtime on the shared ``celery_app`` (what ``runtime="celery"`` builds)."""
    return CeleryRuntime(app=celery_app)


__all__ = ["CeleryRuntime", "default_runtime"]
