"""The public schedule functions and ``LocalScheduler``.

Each function resolves storage (the argument, else the configured one) and the runtime's engine
for it, then asks the engine's ``ScheduleService`` (``pyworkflow.engine.schedules``: how a slot is
claimed and fires once). ``LocalScheduler`` serves schedules in this process on the local runtime;
Celery workers serve them in their engine service (no beat process).
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from pyworkflow.api import get_runtime
from pyworkflow.config import get_storage
from pyworkflow.engine.activation import Engine
from pyworkflow.model.exceptions import ScheduleAlreadyExistsError, ScheduleNotFoundError
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec, ScheduleStatus
from pyworkflow.runtime.base import Runtime
from pyworkflow.storage.base import StorageBackend
from pyworkflow.utils.duration import to_seconds
from pyworkflow.utils.waiting import wait_event


def _engine(storage: StorageBackend | None, runtime: str | Runtime | None = None) -> Engine:
    store = storage if storage is not None else get_storage()
    return get_runtime(runtime).engine_for(store)


async def _running_engine(storage: StorageBackend | None) -> Engine:
    """The engine of a runtime that is serving ``storage`` (runs created now get executed)."""
    store = storage if storage is not None else get_storage()
    runtime = get_runtime()
    await runtime.ensure_running(store)
    return runtime.engine_for(store)


async def create_schedule(
    workflow_name: Any,
    spec: ScheduleSpec,
    *args: Any,
    overlap_policy: OverlapPolicy | str = OverlapPolicy.SKIP,
    schedule_id: str | None = None,
    storage: StorageBackend | None = None,
    **kwargs: Any,
) -> Schedule:
    """Store a schedule running ``workflow_name`` (a registered name or the decorated
    function) with ``args``/``kwargs`` at every slot of ``spec``. ``schedule_id`` defaults to a
    new unique id; a taken one raises ``ScheduleAlreadyExistsError``."""
    schedule, created = await _engine(storage).create_schedule(
        workflow_name,
        spec,
        args,
        kwargs,
        overlap_policy=overlap_policy,
        schedule_id=schedule_id,
    )
    if not created:
        raise ScheduleAlreadyExistsError(f"a schedule {schedule.schedule_id!r} already exists")
    return schedule


async def get_schedule(schedule_id: str, storage: StorageBackend | None = None) -> Schedule | None:
    """The schedule (deleted ones too, with that status), counters up to date; None if
    unknown."""
    try:
        return await _engine(storage).get_schedule(schedule_id)
    except ScheduleNotFoundError:
        return None


async def list_schedules(
    workflow_name: str | None = None,
    status: ScheduleStatus | str | None = None,
    limit: int = 100,
    offset: int = 0,
    storage: StorageBackend | None = None,
) -> list[Schedule]:
    """Schedules in creation order, optionally of one workflow or status."""
    return await _engine(storage).list_schedules(workflow_name, status, limit, offset)


async def update_schedule(
    schedule_id: str,
    spec: ScheduleSpec | None = None,
    overlap_policy: OverlapPolicy | str | None = None,
    storage: StorageBackend | None = None,
) -> Schedule:
    """Change the spec (the next slot is computed from now) and/or the overlap policy."""
    return await _engine(storage).update_schedule(schedule_id, spec, overlap_policy)


async def pause_schedule(schedule_id: str, storage: StorageBackend | None = None) -> Schedule:
    """Stop firing (runs already going keep going)."""
    return await _engine(storage).pause_schedule(schedule_id)


async def resume_schedule(schedule_id: str, storage: StorageBackend | None = None) -> Schedule:
    """Fire again from the next slot after now: the slots missed while paused do not fire."""
    return await _engine(storage).resume_schedule(schedule_id)


async def delete_schedule(schedule_id: str, storage: StorageBackend | None = None) -> Schedule:
    """Soft delete: the record stays with status ``deleted`` and fires nothing more."""
    return await _engine(storage).delete_schedule(schedule_id)


async def trigger_schedule(schedule_id: str, storage: StorageBackend | None = None) -> str:
    """Start a run of the schedule now, outside its spec; returns the run id."""
    return await (await _running_engine(storage)).trigger_schedule(schedule_id)


async def backfill_schedule(
    schedule_id: str,
    start_time: datetime,
    end_time: datetime,
    storage: StorageBackend | None = None,
) -> list[str]:
    """One run per slot in ``[start_time, end_time]``; a slot that has its run already starts
    nothing new (calling twice is harmless). Returns the window's run ids in slot order."""
    engine = await _running_engine(storage)
    return await engine.backfill_schedule(schedule_id, start_time, end_time)


class LocalScheduler:
    """Serves schedules in this process on the local runtime: claims due slots from storage
    (so any number of schedulers may run against one storage) and starts their runs here.

    It wakes at the poll times of the schedules it writes and polls every ``poll_interval``
    seconds for those others changed.
    """

    def __init__(
        self,
        storage: StorageBackend | None = None,
        poll_interval: float | str | timedelta = 1.0,
        runtime: str | Runtime | None = None,
    ) -> None:
        self.storage = storage
        self.poll_interval = to_seconds(poll_interval)
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        self.runtime = runtime
        self._engine: Engine | None = None
        self._declared = False
        self._hints: list[datetime] = []
        self._wake: asyncio.Event | None = None
        self._stopped = False

    async def _ready(self) -> Engine:
        if self._engine is None:
            store = self.storage if self.storage is not None else get_storage()
            runtime = get_runtime(self.runtime or "local")
            await runtime.ensure_running(store)
            self._engine = runtime.engine_for(store)
            self._engine.schedule_listener = self._hint
        if not self._declared:
            await self._engine.declare_schedules()
            self._declared = True
        return self._engine

    def _hint(self, schedule_id: str, poll_at: datetime) -> None:  # noqa: ARG002
        heapq.heappush(self._hints, poll_at)
        if self._wake is not None:
            self._wake.set()

    async def tick_once(self) -> list[str]:
        """Serve every schedule due now; returns the ids of the runs started."""
        return await (await self._ready()).fire_due_schedules()

    async def run(self, duration: float | None = None) -> None:
        """Serve schedules until ``stop()`` or for ``duration`` seconds."""
        loop = asyncio.get_running_loop()
        self._stopped = False
        self._wake = asyncio.Event()
        deadline = None if duration is None else loop.time() + duration
        engine = await self._ready()
        while not self._stopped and (deadline is None or loop.time() < deadline):
            self._wake.clear()
            try:
                await self.tick_once()
            except Exception as exc:  # noqa: BLE001 - storage away: the next tick tries again
                logger.warning("scheduler tick failed ({}: {})", type(exc).__name__, exc)
            now = engine.clock.now()
            while self._hints and self._hints[0] <= now:
                heapq.heappop(self._hints)
            delay = self.poll_interval
            if self._hints:
                delay = min(delay, (self._hints[0] - now).total_seconds())
            if deadline is not None:
                delay = min(delay, deadline - loop.time())
            await wait_event(self._wake, delay)
        self._wake = None

    def stop(self) -> None:
        """Make ``run`` return (after the tick in progress)."""
        self._stopped = True
        if self._wake is not None:
            self._wake.set()


__all__ = [
    "LocalScheduler",
    "backfill_schedule",
    "create_schedule",
    "delete_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "trigger_schedule",
    "update_schedule",
]
