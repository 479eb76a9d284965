"""The ``Runtime`` port: who runs activations and steps, and when.

A runtime owns engines (one per storage backend) and provides their ``Clock`` and ``TaskQueue``.
The public API (``start``, ``resume``, ``resume_hook``, ...) talks only to this port, so it never
branches on which runtime it has.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from pyworkflow.core.registry import WorkflowDefinition
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.outcome import Outcome
from pyworkflow.model.exceptions import SequenceConflictError
from pyworkflow.storage.base import StorageBackend


class Runtime(ABC):
    name: str = "runtime"

    @abstractmethod
    def engine_for(self, storage: StorageBackend) -> Engine:
        """The engine that runs activations of runs in ``storage`` (created on first use)."""

    @abstractmethod
    async def start(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        storage: StorageBackend,
        idempotency_key: str | None = None,
    ) -> tuple[str, Outcome | None]:
        """Record a new run (or find the idempotent one) and get it going.

        Returns the run id and, when the run was advanced in this call, its outcome.
        """

    @abstractmethod
    async def resume(self, run_id: str, *, storage: StorageBackend) -> Outcome:
        """Advance ``run_id`` now."""

    async def ensure_running(self, storage: StorageBackend) -> None:  # noqa: B027
        """Make sure timers and recovery of ``storage``'s runs are being served, if ours to do."""


async def advance_when_free(engine: Engine, run_id: str, *, patience: float = 120.0) -> Outcome:
    """``engine.advance(run_id)`` for a caller that wants the run advanced now (``resume``).

    While another activation holds the run (a worker in the middle of a long step, or one that
    died there and whose lease has not run out yet), this polls storage until the lease is
    released or expires, then advances. After ``patience`` seconds of waiting it returns the
    outcome that says who still holds the run (``Outcome.held_by``).
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + patience
    outcome = await _advance_once(engine, run_id)
    while outcome.held_by is not None and loop.time() < give_up:
        run = await engine.storage.get_run(run_id)
        if run is not None and run.lease_expires_at is not None:
            left = (run.lease_expires_at - engine.clock.now()).total_seconds()
            await asyncio.sleep(min(max(left, 0.01), 1.0, give_up - loop.time()))
        else:
            await asyncio.sleep(min(0.05, max(0.0, give_up - loop.time())))
        outcome = await _advance_once(engine, run_id)
    return outcome


async def _advance_once(engine: Engine, run_id: str) -> Outcome:
    """One ``advance``; when every try lost its commit race (other processes keep writing the
    run: resuming it too), the run is being advanced elsewhere: an outcome held by them, to wait
    on like a lease, never the internal conflict."""
    try:
        return await engine.advance(run_id)
    except SequenceConflictError:
        run = await engine.storage.get_run(run_id)
        if run is None:
            raise
        return Outcome(run_id, run.status, held_by=run.lease_owner or "another activation")


__all__ = ["Runtime", "advance_when_free"]
