"""The ``Runtime`` port: who runs activations and steps, and when.

A runtime owns engines (one per storage backend) and provides their ``Clock`` and ``TaskQueue``.
The public API (``start``, ``resume``, ``resume_hook``, ...) talks only to this port, so it never
branches on which runtime it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pyworkflow.core.registry import WorkflowDefinition
from pyworkflow.engine.activation import Engine, Outcome
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


__all__ = ["Runtime"]
