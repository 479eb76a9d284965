"""Counting the reads of a run's identity by user code (what sweeps watch before reusing).

A seed draws the run ids of a simulation, so a value made from a run id differs from seed to
seed. Sweeps take one seed's fault-free endings or reference models for another's only where
the code that reached them read no run id (``checking.FaultFreeEndings``,
``checking.ReferenceModels``): reads are counted here (``identity_reads``).

Only reads by user code count: a read whose caller is a module of ``pyworkflow`` or
``pyworkflow_testing`` is the library's own bookkeeping (a ledger, a child's key, a checkpoint's
row), which hands no value made from the id to user code. What hands one over wherever it is
called counts always (``count_use``: the run's seeded stream, the model's hook tokens).

``watched()`` makes every ``StepInfo`` count, for the length of a ``with`` block (a sweep's
learning rerun, a reference model): its ``run_id``, and what shows it (``idempotency_key``, its
``repr``, ``hash`` and ``==``, whose generated code a ``pyworkflow`` module owns). It patches the
class itself rather than handing bodies an instance of another class, which they could tell
apart (``type``, ``==`` with a plain one, ``__slots__``, pickling).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from pyworkflow.context import StepInfo
from pyworkflow_testing.window import SharedWindow

_OWN = ("pyworkflow.", "pyworkflow_testing.")
_reads = 0


def identity_reads() -> int:
    """How many times user code read a watched run identity, in this process."""
    return _reads


def count_read(depth: int = 1) -> None:
    """Count one read of a run's identity, made by the caller ``depth`` frames above the one
    calling this, when that caller is user code."""
    global _reads
    module = sys._getframe(depth + 1).f_globals.get("__name__", "")
    if not module.startswith(_OWN) and module not in ("pyworkflow", "pyworkflow_testing"):
        _reads += 1


def count_use() -> None:
    """Count one use of a value made from a run's identity, wherever it is made."""
    global _reads
    _reads += 1


_NAMES = ("run_id", "idempotency_key", "__repr__", "__hash__", "__eq__")
# What the class held when the window opened (a test may have patched it), put back on closing.
_saved: dict[str, Any] = {}


def _run_id(info: StepInfo) -> str:
    count_read()
    return _saved["run_id"].__get__(info, StepInfo)  # type: ignore[no-any-return]


def _set_run_id(info: StepInfo, value: str) -> None:  # (as ``__init__`` and ``copy`` set it)
    _saved["run_id"].__set__(info, value)


def _idempotency_key(info: StepInfo) -> str:
    count_read()
    return _saved["idempotency_key"].__get__(info, StepInfo)  # type: ignore[no-any-return]


def _repr(info: StepInfo) -> str:
    count_read()
    return _saved["__repr__"](info)  # type: ignore[no-any-return]


def _hash(info: StepInfo) -> int:
    count_read()
    return _saved["__hash__"](info)  # type: ignore[no-any-return]


def _eq(info: StepInfo, other: object) -> Any:
    count_read()
    return _saved["__eq__"](info, other)


_WATCHED: dict[str, Any] = {
    "run_id": property(_run_id, _set_run_id),
    "idempotency_key": property(_idempotency_key),
    "__repr__": _repr,
    "__hash__": _hash,
    "__eq__": _eq,
}


def _patch() -> None:
    _saved.clear()
    _saved.update((name, StepInfo.__dict__[name]) for name in _NAMES)
    for name, value in _WATCHED.items():
        setattr(StepInfo, name, value)


def _unpatch() -> None:
    for name, value in _saved.items():
        setattr(StepInfo, name, value)


_window = SharedWindow(_patch, _unpatch)


def watched() -> contextlib.AbstractContextManager[None]:
    """Count user code's reads of any ``StepInfo``'s run id while inside (nested and concurrent
    blocks share one window)."""
    return _window()


__all__ = ["count_read", "count_use", "identity_reads", "watched"]
