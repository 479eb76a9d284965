"""What is due, and when: a step's next attempt, a run's next wake-up, its deadline.

Pure functions of a run's commands and the clock; the activation asks them what to do now and
what timer to leave behind. Nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pyworkflow.engine.instance import Command, WorkflowInstance
from pyworkflow.model.schemas import UNSET, WorkflowRun, _Unset


def next_attempt(cmd: Command, now: datetime) -> int | None:
    """Which attempt of a step command should start now, if any."""
    if cmd.attempt == 0:
        return 1
    if cmd.retry_pending:
        if cmd.wake_at is not None and cmd.wake_at <= now:
            return cmd.attempt + 1
        return None
    if cmd.lost_attempt:
        return cmd.attempt
    return None


def next_wake(
    inst: WorkflowInstance, deadline: datetime | None | _Unset = UNSET
) -> datetime | None:
    """When the run next needs an activation of its own: its earliest sleep, hook expiry or retry,
    or its ``max_duration`` deadline if that comes first."""
    if isinstance(deadline, _Unset):
        deadline = deadline_of(inst.run)
    wake = inst.next_wake()
    if deadline is not None and (wake is None or deadline < wake):
        return deadline
    return wake


def deadline_of(run: WorkflowRun) -> datetime | None:
    if not run.max_duration or run.started_at is None:
        return None
    return run.started_at + timedelta(seconds=float(run.max_duration.rstrip("s")))


__all__ = ["deadline_of", "next_attempt", "next_wake"]
