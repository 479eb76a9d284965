"""Fewer garbage collections while a simulation runs.

A simulation allocates a great many short-lived objects (events, commits, futures) on top of many
long-lived ones (its storage, every run's log). With the interpreter's default first-generation
threshold (700 allocations) the collector ran so often that it cost about a tenth of a sweep:
``bench/simulation.py``'s ``throughput_sampled_rerun`` went from 387 to 420 workflow-days per
second with a threshold of 10,000 (456 with the collector off, which would let cyclic garbage of a
long simulation pile up). The threshold is raised only while a simulation runs or is checked, and
put back afterwards (a change made meanwhile is undone then); a caller's higher threshold, or
collection turned off, is kept.
"""

from __future__ import annotations

import contextlib
import gc

from pyworkflow_testing.window import SharedWindow

THRESHOLD = 10_000

_saved: tuple[int, int, int] = (700, 10, 10)


def _raise_threshold() -> None:
    global _saved
    _saved = gc.get_threshold()
    if 0 < _saved[0] < THRESHOLD:  # (0: the caller turned collection off)
        gc.set_threshold(THRESHOLD, _saved[1], _saved[2])


def _put_threshold_back() -> None:
    gc.set_threshold(*_saved)


_window = SharedWindow(_raise_threshold, _put_threshold_back)


def fewer_collections() -> contextlib.AbstractContextManager[None]:
    """Raise the collector's first threshold to ``THRESHOLD`` for the ``with`` block (nested and
    concurrent blocks share one window: the last to leave puts the caller's threshold back)."""
    return _window()


__all__ = ["THRESHOLD", "fewer_collections"]
