"""The two ports a runtime provides to the engine: a ``Clock`` and a ``TaskQueue``.

The engine never knows which runtime drives it. The local runtime gives the wall clock and an
in-process queue, Celery gives the wall clock and a broker, the simulator gives virtual time and a
seeded broker. Timers and leases are not here: they live in storage, shared by every runtime.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class TaskQueue(Protocol):
    async def enqueue_activation(self, run_id: str) -> None:
        """Ask for ``advance(run_id)`` to run soon, somewhere."""
        ...

    async def enqueue_step(self, run_id: str, step_id: str, attempt: int) -> None:
        """Ask for attempt ``attempt`` of step command ``step_id`` of ``run_id`` to run."""
        ...


class IdSource(Protocol):
    """Where new run ids come from (seeded in the simulator). Hook secrets derive from the
    hook key (``engine.hooks``)."""

    def new_run_id(self) -> str: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class RandomIds:
    """Run ids from the operating system's randomness."""

    def new_run_id(self) -> str:
        return f"run_{uuid.uuid4().hex}"


__all__ = ["Clock", "IdSource", "RandomIds", "SystemClock", "TaskQueue"]
