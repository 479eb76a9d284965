"""``pyworkflow runs ...``: list, inspect, follow, resume and cancel runs.

Every command here reads existing storage and never creates it (``require_storage``). A blocked
run (``WorkflowRun.blocked``) lists as ``blocked``; ``status`` and ``show`` print why, and for
non-determinism the divergence (position, expected, actual, location), right under the status.
``runs list --json`` keeps its 0.4 form, one JSON object per line; ``--output json`` prints one
JSON list. ``logs --follow`` serves the storage's timers on the local runtime while it waits (as
``get_workflow_result`` does), so a sleeping run it follows wakes on time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pyworkflow.api import (
    cancel_workflow,
    get_runtime,
    get_workflow_chain,
    get_workflow_events,
    get_workflow_run,
    resume,
    reveal_tokens,
)
from pyworkflow.cli._common import (
    advance_local_runs,
    output_of,
    output_option,
    require_storage,
    run_async,
    serve_local_timers,
    settings,
    timeout_option,
)
from pyworkflow.cli._output import echo_json, emit_fields, emit_records, json_text, progress
from pyworkflow.cli._records import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    event_cells,
    event_record,
    print_events,
    run_cells,
    run_detail,
    run_fields,
    run_record,
    short_type,
)
from pyworkflow.config import get_storage
from pyworkflow.model.events import TERMINAL_EVENT_TYPES, Event, EventType
from pyworkflow.model.exceptions import CorruptHistoryError, WorkflowError
from pyworkflow.model.schemas import HookStatus, RunStatus, WorkflowRun

FOLLOW_POLL = 0.25  # seconds between looks at a followed log
BLOCKED = "blocked"


@click.group()
def runs() -> None:
    """List, inspect, follow, resume and cancel runs."""


async def _fetch_run(run_id: str) -> WorkflowRun:
    run = await get_workflow_run(run_id)
    if run is None:
        raise click.ClickException(f"no workflow run with id {run_id!r}")
    return run


# -- list ---------------------------------------------------------------------------------------


async def _list(status: str | None, workflow_name: str | None, limit: int) -> list[WorkflowRun]:
    storage = get_storage()
    if status != BLOCKED:
        found, _ = await storage.list_runs(
            status=RunStatus(status) if status else None, workflow_name=workflow_name, limit=limit
        )
        return found
    # Blocked runs are suspended runs with a block: page through the suspended ones.
    blocked: list[WorkflowRun] = []
    cursor: str | None = None
    while len(blocked) < limit:
        page, cursor = await storage.list_runs(
            status=RunStatus.SUSPENDED, workflow_name=workflow_name, limit=500, cursor=cursor
        )
        blocked += [run for run in page if run.blocked is not None]
        if cursor is None or not page:
            break
    return blocked[:limit]


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice([*(s.value for s in RunStatus), BLOCKED]),
    default=None,
    help="Only runs with this status (blocked: suspended runs whose code must be fixed).",
)
@click.option("--workflow", "workflow_name", default=None, help="Only this workflow's runs.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (0.4's form).")
@output_option
def list_runs(
    status: str | None, workflow_name: str | None, limit: int, as_json: bool, output: str | None
) -> None:
    """List runs, oldest first."""
    require_storage()
    found = run_async(_list(status, workflow_name, limit))
    if as_json:
        for run in found:
            echo_json(run_record(run), lines=True)
        return
    _emit_runs(found, output_of(output))


def _emit_runs(found: list[WorkflowRun], output: str) -> None:
    emit_records(found, RUN_COLUMNS, run_cells, output, document=run_record, empty="no runs")


# -- status and show ----------------------------------------------------------------------------


async def _detail(run: WorkflowRun) -> dict[str, Any]:
    """``run_detail`` with what storage adds: the error type of a failed run, the hooks a run
    waits on and its next wake-up."""
    storage = get_storage()
    error_type = None
    hooks = []
    wake_at = None
    if run.status.is_terminal:
        try:
            tail = await storage.get_events(run.run_id, after_sequence=run.last_sequence - 1)
        except CorruptHistoryError:  # (ended by an operator after its log broke)
            tail = []
        ending = [event for event in tail if event.type in TERMINAL_EVENT_TYPES]
        if ending and ending[-1].data.get("error_type"):
            error_type = short_type(str(ending[-1].data["error_type"]))
    else:
        pending = await storage.list_hooks(run_id=run.run_id, status=HookStatus.PENDING)
        hooks = await reveal_tokens(pending, storage)
        timer = await storage.get_timer(run.run_id)
        wake_at = timer.fire_at if timer is not None else None
    return run_detail(run, error_type=error_type, hooks=hooks, wake_at=wake_at)


@runs.command("status")
@click.argument("run_id")
@output_option
def run_status(run_id: str, output: str | None) -> None:
    """One run: status, times, result or error, what it waits on; when blocked, why."""
    require_storage()

    async def fetch() -> dict[str, Any]:
        return await _detail(await _fetch_run(run_id))

    detail = run_async(fetch())
    emit_fields(run_fields(detail), output_of(output), detail)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The same as --output json.")
@output_option
def show_run(run_id: str, as_json: bool, output: str | None) -> None:
    """A run and its event log."""
    require_storage()

    async def fetch() -> tuple[dict[str, Any], list[Event]]:
        run = await _fetch_run(run_id)
        return await _detail(run), await get_storage().get_events(run_id)

    detail, events = run_async(fetch())
    chosen = output_of(output, as_json)
    if chosen == "json":
        echo_json({**detail, "log": [event_record(event) for event in events]})
        return
    emit_fields(run_fields(detail), chosen, detail)
    click.echo()
    _emit_events(events, chosen)


def _emit_events(events: list[Event], output: str) -> None:
    emit_records(
        events, EVENT_COLUMNS, event_cells, output, document=event_record, empty="no events"
    )


# -- logs ---------------------------------------------------------------------------------------

EVENT_TYPES = [event_type.value for event_type in EventType]


@runs.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the run ends.")
@click.option(
    "--type",
    "types",
    type=click.Choice(EVENT_TYPES),
    multiple=True,
    help="Only events of this type (repeatable).",
)
@output_option
def run_logs(run_id: str, follow: bool, types: tuple[str, ...], output: str | None) -> None:
    """A run's event log, one line per event: sequence, time, type, command id, key data.

    With --follow, new events are printed as they are recorded until the run is over (json:
    one event per line)."""
    require_storage()
    chosen = output_of(output)
    wanted = {EventType(value) for value in types}

    def keep(events: list[Event]) -> list[Event]:
        return [event for event in events if not wanted or event.type in wanted]

    if not follow:
        _emit_events(keep(run_async(get_workflow_events(run_id))), chosen)
        return

    async def watch() -> None:
        storage = get_storage()
        await _fetch_run(run_id)
        await serve_local_timers(storage)
        seen, header = 0, True
        while True:
            run = await _fetch_run(run_id)  # read before the events: none is missed at the end
            events = await storage.get_events(run_id, after_sequence=seen)
            if events:
                seen = events[-1].sequence
                shown = keep(events)
                print_events(shown, chosen, header=header)
                header = header and not shown
            if run.status.is_terminal:
                return
            await asyncio.sleep(FOLLOW_POLL)

    try:
        run_async(watch())
    except KeyboardInterrupt:
        return


# -- resume and cancel --------------------------------------------------------------------------


@runs.command("resume")
@click.argument("run_id")
@output_option
def resume_run(run_id: str, output: str | None) -> None:
    """Advance a run now (import its workflow's module with --module)."""
    require_storage()

    async def advance() -> tuple[Any, WorkflowRun]:
        await _fetch_run(run_id)
        result = await resume(run_id, runtime=settings().runtime)
        return result, await _fetch_run(run_id)

    result, run = run_async(advance())
    chosen = output_of(output)
    completed = run.status is RunStatus.COMPLETED
    if chosen == "json":
        echo_json({**run_record(run), "result": result if completed else None})
    elif chosen == "plain":
        shown = f"\t{json_text(result)}" if completed else ""
        click.echo(f"{run_id}\t{run.status.value}{shown}")
    else:
        click.echo(f"{run_id}: {run.status.value}")
        if completed:
            click.echo(json_text(result))


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default=None, help="Recorded with the request; the workflow sees it.")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@timeout_option("With --wait: give up after SECONDS (exit 1; the request stays recorded).")
@output_option
def cancel_run(
    run_id: str, reason: str | None, wait: bool, timeout: float | None, output: str | None
) -> None:
    """Ask a run to stop: it gets CancellationError at the durable call it waits on."""
    require_storage()

    async def cancel() -> tuple[bool, WorkflowRun]:
        await _fetch_run(run_id)
        with progress(f"cancelling run {run_id}" if wait else "cancelling"):
            recorded = await cancel_workflow(
                run_id, reason=reason, wait=wait, timeout=timeout, runtime=settings().runtime
            )
            await advance_local_runs()
        return recorded, await _fetch_run(run_id)

    recorded, run = run_async(cancel())
    chosen = output_of(output)
    if chosen == "json":
        echo_json({**run_record(run), "recorded": recorded})
    elif chosen == "plain":
        click.echo(f"{run_id}\t{'recorded' if recorded else 'finished'}\t{run.status.value}")
    elif recorded:
        click.echo(f"cancellation of run {run_id} recorded; status: {run.status.value}")
    else:
        click.echo(f"run {run_id} had already finished ({run.status.value}): nothing to cancel")


@runs.command("fail")
@click.argument("run_id")
@click.option("--reason", default=None, help="Recorded as the run's error.")
@output_option
def fail_run(run_id: str, reason: str | None, output: str | None) -> None:
    """End a blocked run failed without running its code: when its log cannot be repaired or its
    code cannot be fixed. Its parent hears of it; the children it leaves running are cancelled
    (found by their parent when its log cannot name them)."""
    require_storage()

    async def fail() -> tuple[bool, WorkflowRun]:
        run = await _fetch_run(run_id)
        blocked = run.blocked
        if run.status.is_terminal:
            raise click.ClickException(f"run {run_id} has already ended ({run.status.value})")
        if blocked is None:
            raise click.ClickException(
                f"run {run_id} is not blocked ({run.status.value}): 'runs cancel' stops a run"
                " that can still run its code"
            )
        why = f"ended failed by an operator while blocked: {blocked.message}"
        if reason:
            why = f"{reason} ({why})"
        engine = get_runtime(settings().runtime).engine_for(get_storage())
        done = await engine.impose_failure(
            run_id, WorkflowError(why), expected_sequence=run.last_sequence, require_blocked=True
        )
        await advance_local_runs()
        return done, await _fetch_run(run_id)

    done, run = run_async(fail())
    if not done:
        raise click.ClickException(
            f"run {run_id} moved on or is held by an activation ({run.status.value}); look"
            " again with 'runs status'"
        )
    chosen = output_of(output)
    if chosen == "json":
        echo_json(run_record(run))
    elif chosen == "plain":
        click.echo(f"{run_id}\t{run.status.value}")
    else:
        click.echo(f"run {run_id} ended {run.status.value}")


# -- children and chain -------------------------------------------------------------------------


def child_ids(events: list[Event]) -> list[str]:
    """The runs a parent's log names as its children: those its code started
    (``child_workflow.started``) and those its steps started (a step outcome's ``children``)."""
    found: list[str] = []
    for event in events:
        if event.type is EventType.CHILD_WORKFLOW_STARTED:
            found.append(str(event.data["child_run_id"]))
        found += [str(child) for child in event.data.get("children") or []]
    return list(dict.fromkeys(found))


@runs.command("children")
@click.argument("run_id")
@output_option
def run_children(run_id: str, output: str | None) -> None:
    """The runs RUN_ID started as children (parent_run_id RUN_ID), in the order it started them."""
    require_storage()

    async def fetch() -> list[WorkflowRun]:
        found = []
        for child_id in child_ids(await get_workflow_events(run_id)):
            child = await get_workflow_run(child_id)
            if child is not None:
                found.append(child)
        return found

    _emit_runs(run_async(fetch()), output_of(output))


@runs.command("chain")
@click.argument("run_id")
@output_option
def run_chain(run_id: str, output: str | None) -> None:
    """The chain RUN_ID belongs to (continue_as_new), oldest first."""
    require_storage()
    _emit_runs(run_async(get_workflow_chain(run_id)), output_of(output))


__all__ = ["child_ids", "runs"]
