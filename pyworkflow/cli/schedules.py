"""``pyworkflow schedules ...`` (create, inspect and change schedules) and ``pyworkflow scheduler
run`` (serve them in this process: ``pyworkflow.cli.scheduler``), registered on the ``pyworkflow``
command by ``pyworkflow.cli.root``.

Every ``schedules`` command takes ``--output table|json|plain`` (default: the global ``--output``,
itself ``table``): ``table`` is a ``rich`` table for people; ``json`` is ``Schedule.to_dict()``
(a list of them for ``list``; ``{"run_id": ...}`` / ``{"run_ids": [...]}`` for ``trigger`` /
``backfill``); ``plain`` is one tab-separated line per schedule with no decoration (``-`` for an
empty field), for ``cut`` and ``grep``. ``trigger`` and ``backfill`` print bare run ids, one a
line, in ``table`` and ``plain``.

A bad cron expression, time zone, duration, date-time or JSON value is a usage error (exit 2, one
line naming the value); an unknown schedule id exits 1 with ``Error: no schedule 'x'``. Date-times
without a zone are UTC. On the local runtime, the runs ``trigger`` and ``backfill`` start are
advanced here, as far as they go without waiting, before the command returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import click

from pyworkflow.cli._common import (
    DATETIME,
    DURATION,
    JsonType,
    advance_local_runs,
    check_arguments,
    output_of,
    output_option,
    require_storage,
    run_async,
    unknown_workflow,
)
from pyworkflow.cli._output import (
    Column,
    echo_json,
    emit_fields,
    emit_records,
    format_duration,
    when,
)
from pyworkflow.core.registry import WorkflowDefinition, list_workflows
from pyworkflow.engine.schedules import check_schedule_id
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec, ScheduleStatus
from pyworkflow.scheduling import (
    backfill_schedule,
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
    update_schedule,
)
from pyworkflow.utils.duration import parse_duration

# The keyword names create_schedule takes for itself: a workflow argument cannot be called so.
RESERVED_KWARGS = ("overlap_policy", "schedule_id", "storage")


# -- formatting ---------------------------------------------------------------------------------


def _fetch(schedule_id: str) -> Schedule:
    schedule = run_async(get_schedule(schedule_id))
    if schedule is None:
        raise click.ClickException(f"no schedule {schedule_id!r}")
    assert isinstance(schedule, Schedule)
    return schedule


def spec_summary(spec: ScheduleSpec) -> str:
    """``cron 0 9 * * *, every 5m (Europe/Paris)``."""
    parts = []
    if spec.cron is not None:
        parts.append(f"cron {spec.cron}")
    if spec.interval is not None:
        parts.append(f"every {format_duration(spec.interval)}")
    if spec.calendars:
        count = len(spec.calendars)
        parts.append("calendar" if count == 1 else f"{count} calendars")
    return f"{', '.join(parts)} ({spec.timezone})"


def _row(schedule: Schedule, exact: bool) -> list[str]:
    """The columns of ``list``: id, workflow, status, spec, overlap, next run, last run, counts."""
    return [
        schedule.schedule_id,
        schedule.workflow_name,
        schedule.status.value,
        spec_summary(schedule.spec),
        schedule.overlap_policy.value,
        when(schedule.next_run_time, exact),
        when(schedule.last_run_at, exact),
        str(schedule.total_runs),
        str(schedule.successful_runs),
        str(schedule.failed_runs),
        str(schedule.skipped_runs),
        str(schedule.buffered_count),
    ]


COLUMNS = (
    Column("id", no_wrap=True),
    Column("workflow"),
    Column("status", styled=True),
    Column("spec"),
    Column("overlap"),
    Column("next run"),
    Column("last run"),
    *(Column(name, numeric=True) for name in ("total", "ok", "failed", "skipped", "buffered")),
)
HEADERS = tuple(column.header for column in COLUMNS)


def _detail_rows(schedule: Schedule) -> list[tuple[str, str]]:
    spec = schedule.spec

    def optional(value: Any, render: Callable[[Any], str] = str) -> str:
        return "-" if value is None else render(value)

    calendars = json.dumps(schedule.to_dict()["spec"]["calendar"]) if spec.calendars else "-"
    return [
        ("id", schedule.schedule_id),
        ("workflow", schedule.workflow_name),
        ("status", schedule.status.value),
        ("spec", spec_summary(spec)),
        ("cron", optional(spec.cron)),
        ("interval", optional(spec.interval, format_duration)),
        ("calendar", calendars),
        ("timezone", spec.timezone),
        ("start at", when(spec.start_at)),
        ("end at", when(spec.end_at)),
        ("jitter", optional(spec.jitter, format_duration)),
        ("catchup window", optional(spec.catchup_window, format_duration)),
        ("overlap", schedule.overlap_policy.value),
        ("args", schedule.args),
        ("kwargs", schedule.kwargs),
        ("created", when(schedule.created_at)),
        ("updated", when(schedule.updated_at)),
        ("next run", when(schedule.next_run_time)),
        ("last run", when(schedule.last_run_at)),
        ("last run id", optional(schedule.last_run_id)),
        ("running", ", ".join(schedule.running_run_ids) or "-"),
        ("buffered", str(schedule.buffered_count)),
        ("total runs", str(schedule.total_runs)),
        ("successful", str(schedule.successful_runs)),
        ("failed", str(schedule.failed_runs)),
        ("skipped", str(schedule.skipped_runs)),
        ("metadata", json.dumps(schedule.metadata) if schedule.metadata else "-"),
        ("poll at", when(schedule.poll_at)),
        ("revision", str(schedule.revision)),
    ]


def _emit_schedules(schedules: list[Schedule], output: str) -> None:
    emit_records(
        schedules,
        COLUMNS,
        _row,
        output,
        document=Schedule.to_dict,
        empty="no schedules",
    )


def _emit_schedule(schedule: Schedule, output: str | None, detailed: bool = False) -> None:
    """One schedule: its dict, its plain line, or a table (``detailed``: every field)."""
    output = output_of(output)
    if output == "json":
        echo_json(schedule.to_dict())
    elif output == "plain" or not detailed:
        _emit_schedules([schedule], output)
    else:
        emit_fields(_detail_rows(schedule), output, schedule.to_dict())


def _emit_run_ids(run_ids: list[str], output: str | None, many: bool) -> None:
    if output_of(output) == "json":
        echo_json({"run_ids": run_ids} if many else {"run_id": run_ids[0]}, lines=True)
    else:
        for run_id in run_ids:
            click.echo(run_id)


# -- building specs -----------------------------------------------------------------------------


def _spec(**values: Any) -> ScheduleSpec:
    """A ``ScheduleSpec``; what it refuses (bad cron, time zone, ...) is a usage error."""
    try:
        return ScheduleSpec(**values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _definition(name: str) -> WorkflowDefinition:
    definition = list_workflows().get(name)
    if definition is None:
        raise click.BadParameter(unknown_workflow(name), param_hint="WORKFLOW")
    return definition


def _alive_workflow(schedule: Schedule) -> None:
    """Starting runs needs the schedule's workflow code in this process."""
    if schedule.workflow_name not in list_workflows():
        raise click.UsageError(
            f"schedule {schedule.schedule_id!r} runs workflow {schedule.workflow_name!r}, which"
            " is not registered here: import the module that defines it with --module"
        )


# -- the commands -------------------------------------------------------------------------------


@click.group()
def schedules() -> None:
    """Create, list, change and fire schedules."""


@schedules.command("list")
@click.option("--workflow", "workflow_name", default=None, help="Only this workflow's.")
@click.option("--status", type=click.Choice([s.value for s in ScheduleStatus]), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@output_option
def list_command(
    workflow_name: str | None, status: str | None, limit: int, offset: int, output: str | None
) -> None:
    """List schedules in creation order."""
    require_storage()
    found = run_async(list_schedules(workflow_name, status, limit=limit, offset=offset))
    _emit_schedules(found, output_of(output))


@schedules.command("show")
@click.argument("schedule_id")
@output_option
def show_command(schedule_id: str, output: str | None) -> None:
    """Show one schedule, every field."""
    require_storage()
    _emit_schedule(_fetch(schedule_id), output, detailed=True)


@schedules.command("create")
@click.argument("workflow")
@click.option("--cron", default=None, help='A 5-field cron expression, e.g. "0 9 * * *".')
@click.option("--interval", type=DURATION, default=None, help="Fire every INTERVAL, e.g. 5m.")
@click.option("--timezone", default="UTC", show_default=True, help="The cron's time zone.")
@click.option(
    "--overlap",
    type=click.Choice([p.value for p in OverlapPolicy]),
    default=OverlapPolicy.SKIP.value,
    show_default=True,
    help="What a slot does while earlier runs are unfinished.",
)
@click.option("--schedule-id", default=None, help="The id (default: a new unique one).")
@click.option("--start-at", type=DATETIME, default=None, help="No slot before (ISO; UTC).")
@click.option("--end-at", type=DATETIME, default=None, help="No slot after (ISO; UTC).")
@click.option("--jitter", type=DURATION, default=None, help="Delay each start by up to this.")
@click.option(
    "--catchup-window", type=DURATION, default=None, help="Missed slots this recent fire too."
)
@click.option("--args", "args", type=JsonType(list), default="[]", help="A JSON list.")
@click.option("--kwargs", "kwargs", type=JsonType(dict), default="{}", help="A JSON object.")
@output_option
def create_command(
    workflow: str,
    cron: str | None,
    interval: timedelta | None,
    timezone: str,
    overlap: str,
    schedule_id: str | None,
    start_at: datetime | None,
    end_at: datetime | None,
    jitter: timedelta | None,
    catchup_window: timedelta | None,
    args: list[Any],
    kwargs: dict[str, Any],
    output: str | None,
) -> None:
    """Run WORKFLOW (a registered name) on a cron expression and/or an interval."""
    definition = _definition(workflow)
    if cron is None and interval is None:
        raise click.UsageError("give --cron, --interval or both")
    spec = _spec(
        cron=cron,
        interval=interval,
        timezone=timezone,
        start_at=start_at,
        end_at=end_at,
        jitter=jitter,
        catchup_window=catchup_window,
    )
    if schedule_id is not None:
        try:
            check_schedule_id(schedule_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--schedule-id") from None
    taken = [name for name in RESERVED_KWARGS if name in kwargs]
    if taken:
        raise click.BadParameter(
            f"a workflow argument cannot be named {taken[0]!r} here", param_hint="--kwargs"
        )
    check_arguments(definition, args, kwargs, "--args/--kwargs")
    schedule = run_async(
        create_schedule(
            definition.name,
            spec,
            *args,
            overlap_policy=overlap,
            schedule_id=schedule_id,
            **kwargs,
        )
    )
    _emit_schedule(schedule, output)


@schedules.command("update")
@click.argument("schedule_id")
@click.option("--cron", default=None, help="A new cron expression ('' removes the cron).")
@click.option("--interval", default=None, help="A new interval ('' removes the interval).")
@click.option("--timezone", default=None, help="A new time zone.")
@click.option("--start-at", type=DATETIME, default=None, help="No slot before (ISO; UTC).")
@click.option("--end-at", type=DATETIME, default=None, help="No slot after (ISO; UTC).")
@click.option("--jitter", type=DURATION, default=None, help="A new jitter.")
@click.option("--catchup-window", type=DURATION, default=None, help="A new catch-up window.")
@click.option("--overlap", type=click.Choice([p.value for p in OverlapPolicy]), default=None)
@output_option
def update_command(
    schedule_id: str,
    cron: str | None,
    interval: str | None,
    timezone: str | None,
    start_at: datetime | None,
    end_at: datetime | None,
    jitter: timedelta | None,
    catchup_window: timedelta | None,
    overlap: str | None,
    output: str | None,
) -> None:
    """Change a schedule's spec (the options given replace those values of it) or overlap
    policy; the next slot is computed from now."""
    require_storage()
    changes: dict[str, Any] = {}
    if cron is not None:
        changes["cron"] = cron or None
    if interval is not None:
        try:
            changes["interval"] = parse_duration(interval) if interval else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--interval") from None
    named = {
        "timezone": timezone,
        "start_at": start_at,
        "end_at": end_at,
        "jitter": jitter,
        "catchup_window": catchup_window,
    }
    changes.update({name: value for name, value in named.items() if value is not None})
    if not changes and overlap is None:
        raise click.UsageError(
            "nothing to change: give --cron, --interval, --timezone, --start-at, --end-at,"
            " --jitter, --catchup-window or --overlap"
        )
    spec = None
    if changes:
        current = _fetch(schedule_id)
        try:
            spec = replace(current.spec, **changes)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    updated = run_async(update_schedule(schedule_id, spec=spec, overlap_policy=overlap))
    _emit_schedule(updated, output)


def _state_command(
    name: str, action: Callable[[str], Coroutine[Any, Any, Schedule]], help_text: str
) -> None:
    @schedules.command(name, help=help_text)
    @click.argument("schedule_id")
    @output_option
    def command(schedule_id: str, output: str | None) -> None:
        require_storage()
        _emit_schedule(run_async(action(schedule_id)), output)


_state_command("pause", pause_schedule, "Stop firing (runs already going keep going).")
_state_command(
    "resume", resume_schedule, "Fire again from the next slot after now (missed slots do not)."
)
_state_command(
    "delete", delete_schedule, "Soft delete: the record stays, status deleted, and fires no more."
)


@schedules.command("trigger")
@click.argument("schedule_id")
@output_option
def trigger_command(schedule_id: str, output: str | None) -> None:
    """Start a run of the schedule now, outside its spec; prints the run id."""
    require_storage()
    _alive_workflow(_fetch(schedule_id))

    async def trigger() -> str:
        run_id = await trigger_schedule(schedule_id)
        await advance_local_runs()
        return run_id

    _emit_run_ids([run_async(trigger())], output, many=False)


@schedules.command("backfill")
@click.argument("schedule_id")
@click.option("--start", "start", type=DATETIME, required=True, help="ISO date-time (UTC).")
@click.option("--end", "end", type=DATETIME, required=True, help="ISO date-time (UTC).")
@output_option
def backfill_command(schedule_id: str, start: datetime, end: datetime, output: str | None) -> None:
    """One run per slot in [START, END] that the schedule has passed; a slot that has its run
    already starts nothing new. Prints the window's run ids in slot order."""
    if end < start:
        raise click.BadParameter("the end is before the start", param_hint="--end")
    require_storage()
    _alive_workflow(_fetch(schedule_id))

    async def backfill() -> list[str]:
        run_ids = await backfill_schedule(schedule_id, start, end)
        await advance_local_runs()
        return run_ids

    try:
        run_ids = run_async(backfill())
    except ValueError as exc:  # e.g. too many slots in the window
        raise click.UsageError(str(exc)) from None
    if not run_ids and output_of(output) != "json":
        click.echo(f"no slot of schedule {schedule_id!r} to backfill in that window", err=True)
    _emit_run_ids(run_ids, output, many=True)


__all__ = ["COLUMNS", "HEADERS", "schedules", "spec_summary"]
