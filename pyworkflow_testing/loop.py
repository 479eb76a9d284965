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
import math
import selectors
from typing import Any


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

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        # Round up to the next microsecond (at least one): a timer due a fraction of a
        # microsecond from now must become due, or the loop would wait for it forever.
        self._micros += max(1, math.ceil(seconds * 1_000_000 - 1e-3))


__all__ = ["SimulationDeadlock", "VirtualTimeEventLoop"]
