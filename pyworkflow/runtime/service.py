"""``EngineService``: the timer loop, the sweeper and lease renewal of one engine.

Every runtime on the wall clock runs one per engine, as a task on the engine's event loop: the
local runtime on the loop of the process that uses it, a Celery worker process on its persistent
loop, next to (never inside) the tasks it executes. The simulator does the same work on virtual
time in its own scheduler.

- **Timer loop.** Claims due timer rows from storage (``Engine.fire_due_timers``: an atomic claim,
  so any number of processes may poll) and enqueues their activations. It wakes at the exact
  wake-up times of the timers activations in this process committed (the engine's timer hint),
  and otherwise polls every ``poll_interval`` for timers other processes set (or whose process
  died). A sleep is never a broker countdown, so it wakes once whatever its length.
- **Sweeper.** Every ``lease_ttl / 2``, ``Engine.recover_expired`` takes over runs whose lease
  ran out (nobody worked on them for a whole ``lease_ttl``) and re-enqueues them.
- **Schedules** (``serve_schedules``: Celery workers). Creates the ``@scheduled_workflow``
  schedules of the loaded modules, then serves due schedules (``Engine.fire_due_schedules``: a
  claim and a compare-and-set, so every worker may) at each tick; it wakes at the poll times of
  the schedules this process wrote, and looks for the others every ``SCHEDULE_POLL`` (0.1 s).
- **Lease renewal.** Every ``lease_ttl / 3``, ``Engine.renew_leases`` extends the leases of the
  runs this process is working on: those it is activating and those with a step attempt running
  here.

A tick that fails (storage or broker away) is logged and retried on the next one. This module
must never run workflow code or record events itself: everything goes through the engine.
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import datetime

from loguru import logger

from pyworkflow.engine.activation import Engine
from pyworkflow.utils.waiting import cancel_and_wait, wait_event

MAX_HINTS = 10_000  # past this, later wake-ups are found by polling
SCHEDULE_POLL = 0.1  # seconds between looks for due schedules, when serving them


class EngineService:
    """See the module docstring. Create it on the loop it should run on."""

    def __init__(self, engine: Engine, poll_interval: float, serve_schedules: bool = False) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.serve_schedules = serve_schedules
        self._declared = False  # the @scheduled_workflow schedules are in storage
        self._outage_since: float | None = None  # when ticks began to fail (None: they work)
        self._hints: list[datetime] = []  # a heap of wake-up times committed in this process
        self._wake = asyncio.Event()
        engine.timer_listener = self._hint
        if serve_schedules:
            engine.schedule_listener = self._hint
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def _hint(self, run_id: str, fire_at: datetime) -> None:  # noqa: ARG002
        if len(self._hints) >= MAX_HINTS:
            return
        earliest = self._hints[0] if self._hints else None
        heapq.heappush(self._hints, fire_at)
        if earliest is None or fire_at < earliest:
            self._wake.set()

    async def fire_due(self) -> int:
        """Claim every due timer and enqueue its activation; returns how many fired."""
        fired = 0
        while batch := await self.engine.fire_due_timers():
            fired += len(batch)
        return fired

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        ttl = self.engine.options.lease_ttl.total_seconds()
        next_sweep = next_renew = next_poll = loop.time()
        while True:
            try:
                if loop.time() >= next_renew:
                    next_renew = loop.time() + ttl / 3
                    await self.engine.renew_leases()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + ttl / 2
                    await self.engine.recover_expired(until_done=True)
                now = self.engine.clock.now()
                hinted = False
                while self._hints and self._hints[0] <= now:
                    heapq.heappop(self._hints)
                    hinted = True
                if hinted or loop.time() >= next_poll:
                    next_poll = loop.time() + self.poll_interval
                    await self.fire_due()
                if self.serve_schedules:
                    if not self._declared:
                        await self.engine.declare_schedules()
                        self._declared = True
                    await self.engine.fire_due_schedules()
                if self._outage_since is not None:
                    logger.warning(
                        "engine service: storage and broker answer again (after {:.1f}s)",
                        loop.time() - self._outage_since,
                    )
                    self._outage_since = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the service must outlive a bad tick
                # Storage or the broker away: one line per outage (and one when it is over);
                # the ticks that fail meanwhile, and every traceback, at debug level.
                if self._outage_since is None:
                    self._outage_since = loop.time()
                    logger.warning(
                        "engine service tick failed ({}: {}); retrying every tick",
                        type(exc).__name__,
                        exc,
                    )
                logger.opt(exception=exc).debug("the tick's traceback")
            self._wake.clear()
            delay = min(next_poll, next_renew, next_sweep) - loop.time()
            if self.serve_schedules:
                # Schedules other processes created or changed are found within this (their
                # first slot may be a second away); claiming none is one cheap indexed read.
                delay = min(delay, SCHEDULE_POLL)
            if self._hints:
                until = (self._hints[0] - self.engine.clock.now()).total_seconds()
                delay = min(delay, until)
            await wait_event(self._wake, delay)

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        if self.engine.timer_listener == self._hint:
            self.engine.timer_listener = None
        if self.engine.schedule_listener == self._hint:
            self.engine.schedule_listener = None


__all__ = ["EngineService"]
