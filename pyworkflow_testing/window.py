"""A window that nested and concurrent ``with`` blocks share (``SharedWindow``).

The simulator changes process-wide settings only while a simulation runs or is checked: the
collector's threshold (``collector``), a class that counts reads (``identity``). Blocks nest
(a check inside a run) and may overlap from threads (a simulation's own thread and its caller's),
so the first block to enter opens the window and the last to leave closes it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class SharedWindow:
    """``opened()`` runs when the first block enters, ``closed()`` when the last one leaves."""

    def __init__(self, opened: Callable[[], None], closed: Callable[[], None]) -> None:
        self._opened = opened
        self._closed = closed
        self._lock = threading.Lock()
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._opened()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._closed()


__all__ = ["SharedWindow"]
