"""``pyworkflow schedules ...`` (create, inspect and change schedules) and ``pyworkflow scheduler
run`` (serve them in this process), registered on the ``pyworkflow`` command by ``pyworkflow.cli``.

Every ``schedules`` command takes ``--output table|json|plain``: ``table`` (the default) is a
``rich`` table for people; ``json`` is ``Schedule.to_dict()`` (a list of them for ``list``;
``{"run_id": ...}`` / ``{"run_ids": [...]}`` for ``trigger`` / ``backfill``); ``plain`` is one
tab-separated line per schedule with no decoration (``-`` for an empty field), for ``cut`` and
``grep``. ``trigger`` and ``backfill`` print bare run ids, one a line, in ``table`` and ``plain``.

A bad cron expression, time zone, duration, date-time or JSON value is a usage error (exit 2, one
line naming the value); an unknown schedule id exits 1 with ``Error: no schedule 'x'``. Date-times
without a zone are UTC. On the local runtime, the runs ``trigger`` and ``backfill`` start are
advanced here, as far as they go without waiting, before the command returns.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pyworkflow.api import get_runtime
from pyworkflow.config import get_storage
from pyworkflow.core.registry import WorkflowDefinition, list_workflows
from pyworkflow.engine.schedules import check_schedule_id
from pyworkflow.model.exceptions import WorkflowError
from pyworkflow.model.schedules import OverlapPolicy, Schedule, ScheduleSpec, ScheduleStatus
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.scheduling import (
    LocalScheduler,
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

F = TypeVar("F", bound=Callable[..., Any])

OUTPUTS = ("table", "json", "plain")
# The keyword names create_schedule takes for itself: a workflow argument cannot be called so.
RESERVED_KWARGS = ("overlap_policy", "schedule_id", "storage")
STATUS_STYLES = {"active": "green", "paused": "yellow", "deleted": "dim"}


# -- parameter types ----------------------------------------------------------------------------


class DurationType(click.ParamType):
    """``30s``, ``5m``, ``1h30m``, ... (``pyworkflow.utils.duration``)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DateTimeType(click.ParamType):
    """An ISO 8601 date-time; without a zone it is UTC."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                self.fail(
                    f"{value!r} is not an ISO 8601 date-time (e.g. 2026-01-31T09:00:00, UTC,"
                    " or 2026-01-31T09:00:00+01:00)",
                    param,
                    ctx,
                )
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class JsonType(click.ParamType):
    """A JSON text that must decode to ``kind`` (list or dict)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = "json-" + ("list" if kind is list else "object")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind):
            return value
        try:
            decoded = json.loads(value)
        except ValueError as exc:
            self.fail(f"{value!r} is not JSON: {exc}", param, ctx)
        except RecursionError:
            self.fail("the JSON is nested too deeply", param, ctx)
        if not isinstance(decoded, self.kind):
            wanted = "a JSON list" if self.kind is list else "a JSON object"
            self.fail(f"{value!r} is not {wanted}", param, ctx)
        return decoded


DURATION = DurationType()
DATETIME = DateTimeType()


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUTS),
        default="table",
        show_default=True,
        help="table for people, json for programs, plain: tab-separated lines.",
    )(func)


# -- running and formatting ---------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None


def _refuse_missing_storage() -> None:
    # Imported here: pyworkflow.cli imports this module while it is being loaded.
    from pyworkflow.cli import _refuse_missing_storage as refuse

    refuse()


def _fetch(schedule_id: str) -> Schedule:
    schedule = _run(get_schedule(schedule_id))
    if schedule is None:
        raise click.ClickException(f"no schedule {schedule_id!r}")
    assert isinstance(schedule, Schedule)
    return schedule


def format_duration(value: timedelta) -> str:
    """``timedelta(minutes=90)`` -> ``1h30m``: the form ``--interval`` takes."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0s"
    parts = []
    whole = int(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = whole + (seconds - int(seconds))
    if rest:
        parts.append(f"{round(rest, 6):g}s")
    return "".join(parts)


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


def _when(moment: datetime | None, exact: bool = False) -> str:
    if moment is None:
        return "-"
    utc = moment.astimezone(UTC)
    return utc.isoformat() if exact else utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(schedule: Schedule, exact: bool) -> list[str]:
    """The columns of ``list``: id, workflow, status, spec, overlap, next run, last run, counts."""
    return [
        schedule.schedule_id,
        schedule.workflow_name,
        schedule.status.value,
        spec_summary(schedule.spec),
        schedule.overlap_policy.value,
        _when(schedule.next_run_time, exact),
        _when(schedule.last_run_at, exact),
        str(schedule.total_runs),
        str(schedule.successful_runs),
        str(schedule.failed_runs),
        str(schedule.skipped_runs),
        str(schedule.buffered_count),
    ]


HEADERS = (
    "id",
    "workflow",
    "status",
    "spec",
    "overlap",
    "next run",
    "last run",
    "total",
    "ok",
    "failed",
    "skipped",
    "buffered",
)


def _print_table(table: Table) -> None:
    """Render with rich, then write through click (colours only on a terminal; output captured
    like any other). Off a terminal the table keeps its natural width instead of 80 columns."""
    tty = sys.stdout.isatty()
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=tty,
        width=None if tty else 1_000,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(table)
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


def _schedules_table(schedules: list[Schedule]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in HEADERS:
        numeric = header in ("total", "ok", "failed", "skipped", "buffered")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=header == "id")
    for schedule in schedules:
        cells = [Text(cell) for cell in _row(schedule, exact=False)]
        cells[2].stylize(STATUS_STYLES.get(schedule.status.value, ""))
        table.add_row(*cells)
    return table


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
        ("start at", _when(spec.start_at)),
        ("end at", _when(spec.end_at)),
        ("jitter", optional(spec.jitter, format_duration)),
        ("catchup window", optional(spec.catchup_window, format_duration)),
        ("overlap", schedule.overlap_policy.value),
        ("args", schedule.args),
        ("kwargs", schedule.kwargs),
        ("created", _when(schedule.created_at)),
        ("updated", _when(schedule.updated_at)),
        ("next run", _when(schedule.next_run_time)),
        ("last run", _when(schedule.last_run_at)),
        ("last run id", optional(schedule.last_run_id)),
        ("running", ", ".join(schedule.running_run_ids) or "-"),
        ("buffered", str(schedule.buffered_count)),
        ("total runs", str(schedule.total_runs)),
        ("successful", str(schedule.successful_runs)),
        ("failed", str(schedule.failed_runs)),
        ("skipped", str(schedule.skipped_runs)),
        ("metadata", json.dumps(schedule.metadata) if schedule.metadata else "-"),
        ("poll at", _when(schedule.poll_at)),
        ("revision", str(schedule.revision)),
    ]


def _emit_schedules(schedules: list[Schedule], output: str) -> None:
    if output == "json":
        click.echo(json.dumps([schedule.to_dict() for schedule in schedules], indent=2))
    elif output == "plain":
        for schedule in schedules:
            click.echo("\t".join(_row(schedule, exact=True)))
    elif not schedules:
        click.echo("no schedules")
    else:
        _print_table(_schedules_table(schedules))


def _emit_schedule(schedule: Schedule, output: str, detailed: bool = False) -> None:
    """One schedule: its dict, its plain line, or a table (``detailed``: every field)."""
    if output == "json":
        click.echo(json.dumps(schedule.to_dict(), indent=2))
    elif output == "plain" or not detailed:
        _emit_schedules([schedule], output)
    else:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for name, value in _detail_rows(schedule):
            table.add_row(Text(name), Text(value))
        _print_table(table)


def _emit_run_ids(run_ids: list[str], output: str, many: bool) -> None:
    if output == "json":
        click.echo(json.dumps({"run_ids": run_ids} if many else {"run_id": run_ids[0]}))
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
    workflows = list_workflows()
    definition = workflows.get(name)
    if definition is None:
        known = ", ".join(sorted(workflows)) or "none"
        raise click.BadParameter(
            f"unknown workflow {name!r}: import the module that defines it with --module or the"
            f" config's module (registered: {known})",
            param_hint="WORKFLOW",
        )
    return definition


def _alive_workflow(schedule: Schedule) -> None:
    """Starting runs needs the schedule's workflow code in this process."""
    if schedule.workflow_name not in list_workflows():
        raise click.UsageError(
            f"schedule {schedule.schedule_id!r} runs workflow {schedule.workflow_name!r}, which"
            " is not registered here: import the module that defines it with --module"
        )


async def _advance_local_runs() -> None:
    """On the local runtime, runs just started are tasks of this event loop: let them go as far
    as they go now (they are durable; what waits resumes with whoever serves the storage)."""
    runtime = get_runtime()
    if isinstance(runtime, LocalRuntime):
        await runtime.drain(get_storage())
        await runtime.shutdown()


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
    workflow_name: str | None, status: str | None, limit: int, offset: int, output: str
) -> None:
    """List schedules in creation order."""
    _refuse_missing_storage()
    found = _run(list_schedules(workflow_name, status, limit=limit, offset=offset))
    _emit_schedules(found, output)


@schedules.command("show")
@click.argument("schedule_id")
@output_option
def show_command(schedule_id: str, output: str) -> None:
    """Show one schedule, every field."""
    _refuse_missing_storage()
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
    output: str,
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
    try:
        definition.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise click.BadParameter(
            f"they do not fit workflow {definition.name!r}: {exc}", param_hint="--args/--kwargs"
        ) from None
    schedule = _run(
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
    output: str,
) -> None:
    """Change a schedule's spec (the options given replace those values of it) or overlap
    policy; the next slot is computed from now."""
    _refuse_missing_storage()
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
    _emit_schedule(_run(update_schedule(schedule_id, spec=spec, overlap_policy=overlap)), output)


def _state_command(
    name: str, action: Callable[[str], Coroutine[Any, Any, Schedule]], help_text: str
) -> None:
    @schedules.command(name, help=help_text)
    @click.argument("schedule_id")
    @output_option
    def command(schedule_id: str, output: str) -> None:
        _refuse_missing_storage()
        _emit_schedule(_run(action(schedule_id)), output)


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
def trigger_command(schedule_id: str, output: str) -> None:
    """Start a run of the schedule now, outside its spec; prints the run id."""
    _refuse_missing_storage()
    _alive_workflow(_fetch(schedule_id))

    async def trigger() -> str:
        run_id = await trigger_schedule(schedule_id)
        await _advance_local_runs()
        return run_id

    _emit_run_ids([_run(trigger())], output, many=False)


@schedules.command("backfill")
@click.argument("schedule_id")
@click.option("--start", "start", type=DATETIME, required=True, help="ISO date-time (UTC).")
@click.option("--end", "end", type=DATETIME, required=True, help="ISO date-time (UTC).")
@output_option
def backfill_command(schedule_id: str, start: datetime, end: datetime, output: str) -> None:
    """One run per slot in [START, END] that the schedule has passed; a slot that has its run
    already starts nothing new. Prints the window's run ids in slot order."""
    if end < start:
        raise click.BadParameter("the end is before the start", param_hint="--end")
    _refuse_missing_storage()
    _alive_workflow(_fetch(schedule_id))

    async def backfill() -> list[str]:
        run_ids = await backfill_schedule(schedule_id, start, end)
        await _advance_local_runs()
        return run_ids

    try:
        run_ids = _run(backfill())
    except ValueError as exc:  # e.g. too many slots in the window
        raise click.UsageError(str(exc)) from None
    if not run_ids and output != "json":
        click.echo(f"no slot of schedule {schedule_id!r} to backfill in that window", err=True)
    _emit_run_ids(run_ids, output, many=True)


@click.group()
def scheduler() -> None:
    """Serve schedules in this process (the local runtime)."""


@scheduler.command("run")
@click.option(
    "--duration",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop after SECONDS (default: until Ctrl-C).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Look for schedules others changed every SECONDS.",
)
def scheduler_run(duration: float | None, poll_interval: float) -> None:
    """Fire due schedules and run their workflows here until --duration ends or Ctrl-C."""
    storage = get_storage()
    started: list[str] = []

    class Scheduler(LocalScheduler):
        async def tick_once(self) -> list[str]:
            run_ids = await super().tick_once()
            for run_id in run_ids:
                click.echo(f"started {run_id}")
            started.extend(run_ids)
            return run_ids

    async def serve() -> None:
        # LocalScheduler runs on the local runtime: the runs it starts are tasks of this loop.
        runtime = get_runtime("local")
        local = runtime if isinstance(runtime, LocalRuntime) else None
        try:
            await Scheduler(storage=storage, poll_interval=poll_interval).run(duration)
            if local is not None:
                await local.drain(storage)  # the runs started go as far as they go now
        finally:
            if local is not None:
                await local.shutdown()

    until = "Ctrl-C" if duration is None else f"{duration:g}s or Ctrl-C"
    click.echo(f"scheduler: serving schedules until {until}", err=True)
    try:
        _run(serve())
    except KeyboardInterrupt:
        click.echo(f"scheduler: interrupted, {len(started)} runs started", err=True)
        return
    click.echo(f"scheduler: stopped, {len(started)} runs started", err=True)


__all__ = ["format_duration", "scheduler", "schedules", "spec_summary"]
