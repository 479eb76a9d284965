"""The simulator's event loop: a real asyncio loop whose clock is virtual.

When nothing is runnable the loop does not wait: it jumps its clock to the next scheduled timer.
So ``asyncio.sleep(86400)`` anywhere in the simulation (engine, workers, user step code) takes no
wall time, and a simulated day is as cheap as the work done in it. If nothing is runnable and no
timer is scheduled, whatever the loop is waiting for can never happen: ``SimulationDeadlock``.

Invariant: ``time()`` only moves forward, only when the ready queue is empty, and is always a
whole number of microseconds.
This module must never do real I/O or read the wall clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
from asyncio import events as _events
from collections.abc import Callable
from typing import Any

_MAXIMUM_WAIT = 24 * 3600  # the longest jump at once (``base_events.MAXIMUM_SELECT_TIMEOUT``)
_RESOLUTION = 1e-9  # a timer due within this of now is due (``BaseEventLoop._clock_resolution``)


class SimulationDeadlock(RuntimeError):
    """The simulation waits for something that nothing scheduled can bring."""


class VirtualTimeEventLoop(asyncio.BaseEventLoop):
    """An asyncio loop on virtual time (seconds since the simulation's epoch).

    A ``BaseEventLoop`` with no selector and no self-pipe: it does no I/O, and ``_run_once``
    below never waits. (It was a ``SelectorEventLoop`` with a selector that advanced time: the
    socket pair of its self-pipe made creating and closing a loop cost about 60 us, and a sweep
    creates two or three per seed.)
    """

    def __init__(self) -> None:
        super().__init__()
        self._micros = 0  # virtual time in whole microseconds, like the datetimes of the logs

    def time(self) -> float:
        return self._micros / 1_000_000

    # The two methods below are ``BaseEventLoop``'s, without what a loop with no I/O, no debug
    # mode and no other thread never needs (the selector's round trip, the slow-callback log,
    # the closed and thread checks): the simulator and its reference model spend a fifth of
    # their time in them. Timers come due in the same order at the same virtual instants.

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        handle = _events.Handle(callback, args, self, context)
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def _run_once(self) -> None:
        scheduled: list[Any] = self._scheduled  # type: ignore[attr-defined]
        ready: Any = self._ready  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            heapq.heappop(scheduled)._scheduled = False
        if not ready and not self._stopping:  # type: ignore[attr-defined]
            if not scheduled:
                raise SimulationDeadlock(
                    "the simulation is waiting for something nothing scheduled will bring"
                    " (no runnable task, no timer)"
                )
            timeout = min(max(0.0, scheduled[0]._when - self.time()), _MAXIMUM_WAIT)
            if timeout > 0:
                self.advance(timeout)
        end_time = self.time() + _RESOLUTION
        while scheduled:
            handle = scheduled[0]
            if handle._when >= end_time:
                break
            heapq.heappop(scheduled)._scheduled = False
            ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    def _process_events(self, event_list: list[Any]) -> None:
        del event_list  # (no I/O: nothing to process)

    def _write_to_self(self) -> None:
        # ``call_soon_threadsafe`` from another thread: its callback is in the ready queue,
        # which ``_run_once`` runs without waiting. (Nothing in a simulation should come from
        # another thread: its timing would not be the seed's.)
        pass

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        # Round up to the next microsecond (at least one): a timer due a fraction of a
        # microsecond from now must become due, or the loop would wait for it forever.
        self._micros += max(1, math.ceil(seconds * 1_000_000 - 1e-3))


__all__ = ["SimulationDeadlock", "VirtualTimeEventLoop"]
