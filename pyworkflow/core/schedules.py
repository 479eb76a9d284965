"""``@scheduled_workflow``: a workflow that brings its own schedule.

The decorator registers the workflow (as ``@workflow`` does) and declares a schedule for it, kept
here until a scheduler or worker starts with the module loaded: ``ScheduleService
.declare_schedules`` then creates it in storage under the workflow's name as schedule id, or
brings its spec and overlap policy up to date with the code. A declared schedule the user paused
or deleted stays so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pyworkflow.core.workflow import workflow
from pyworkflow.model.schedules import CalendarSpec, OverlapPolicy, ScheduleSpec

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class DeclaredSchedule:
    workflow_name: str
    spec: ScheduleSpec
    overlap_policy: OverlapPolicy


_declared: dict[str, DeclaredSchedule] = {}


def scheduled_workflow(
    cron: str | None = None,
    interval: str | int | float | timedelta | None = None,
    calendar: CalendarSpec | list[CalendarSpec] | None = None,
    timezone: str = "UTC",
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    jitter: str | int | float | timedelta | None = None,
    overlap_policy: OverlapPolicy | str = OverlapPolicy.SKIP,
    name: str | None = None,
    catchup_window: str | int | float | timedelta | None = None,
    **workflow_options: Any,
) -> Callable[[F], F]:
    """Declare a workflow (``workflow_options`` as ``@workflow`` takes them) run on a schedule.

    The spec is checked here: a bad cron expression or time zone fails at import time.
    """
    spec = ScheduleSpec(
        cron=cron,
        interval=interval,  # type: ignore[arg-type]  # ScheduleSpec parses durations
        calendar=calendar,
        timezone=timezone,
        start_at=start_at,
        end_at=end_at,
        jitter=jitter,  # type: ignore[arg-type]
        catchup_window=catchup_window,  # type: ignore[arg-type]
    )
    policy = OverlapPolicy.of(overlap_policy)

    def decorate(func: F) -> F:
        # Over ``@workflow`` (stacked) the function is a workflow already; otherwise make it one.
        already = getattr(func, "__pyworkflow_workflow__", None)
        decorated = func if already is not None else workflow(name=name, **workflow_options)(func)
        definition = decorated.__pyworkflow_workflow__  # type: ignore[attr-defined]
        _declared[definition.name] = DeclaredSchedule(definition.name, spec, policy)
        return decorated

    return decorate


def declared_schedules() -> list[DeclaredSchedule]:
    """The schedules ``@scheduled_workflow`` declared in the modules loaded so far."""
    return list(_declared.values())


def clear_declared_schedules() -> None:
    _declared.clear()


__all__ = [
    "DeclaredSchedule",
    "clear_declared_schedules",
    "declared_schedules",
    "scheduled_workflow",
]
