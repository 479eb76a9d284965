"""Counting the reads of a run's identity by user code (what sweeps watch before reusing).

A seed draws the run ids of a simulation, so a value made from a run id differs from seed to
seed. Sweeps take one seed's fault-free endings or reference models for another's only where
the code that reached them read no run id (``checking.FaultFreeEndings``,
``checking.ReferenceModels``): the watched objects count each read here (``identity_reads``).
Only reads by user code count: a read whose caller is a module of ``pyworkflow`` or
``pyworkflow_testing`` is the library's own bookkeeping (a ledger, a child's key, a checkpoint's
row), which hands no value made from the id to user code; the public accessors that do (the
run id itself, ``StepInfo.idempotency_key``, the run's seeded stream) count wherever they are
called.
"""

from __future__ import annotations

import sys

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


__all__ = ["count_read", "count_use", "identity_reads"]
