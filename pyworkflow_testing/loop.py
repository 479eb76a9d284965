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
import selectors
from asyncio import events as _events
from collections.abc import Callable
from typing import Any

_MAXIMUM_WAIT = 24 * 3600  # the longest jump at once (``base_events.MAXIMUM_SELECT_TIMEOUT``)
_RESOLUTION = 1e-9  # a timer due within this of now is due (``BaseEventLoop._clock_resolution``)


class SimulationDeadlock(RuntimeError):
    """The simulation waits for something that nothing scheduled can bring."""


class _VirtualSelector(selectors.BaseSelector):
    """A selector with nothing to watch: ``select(timeout)`` advances virtual time instead."""

    def __init__(self) -> None:
        self._keys: dict[int, selectors.SelectorKey] = {}
        self.loop: VirtualTimeEventLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise SimulationDeadlock(
                "the simulation is waiting for something nothing scheduled will bring"
                " (no runnable task, no timer)"
            )
        if timeout > 0:
            self.loop.advance(timeout)
        return []

    def close(self) -> None:
        self._keys.clear()

    def get_map(self) -> Any:
        return self._keys


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (seconds since the simulation's epoch)."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
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

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        # Round up to the next microsecond (at least one): a timer due a fraction of a
        # microsecond from now must become due, or the loop would wait for it forever.
        self._micros += max(1, math.ceil(seconds * 1_000_000 - 1e-3))


__all__ = ["SimulationDeadlock", "VirtualTimeEventLoop"]
