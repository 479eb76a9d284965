"""The ``pyworkflow`` command: inspect and resume runs, manage schedules (``pyworkflow schedules``,
``pyworkflow scheduler run``: ``pyworkflow.cli_schedules``) and simulate workflows, from the shell.

This is the one place that picks implementations from configuration: ``--storage URL`` (or
``PYWORKFLOW_STORAGE_URL``, or ``pyworkflow.config.yaml`` in the current directory), ``--module``
(or the config's ``module``) to import the code that defines workflows (``MODULE`` is imported
like ``python -m`` would). ``pyworkflow worker run`` starts a Celery worker (the celery runtime;
Celery is imported only by the ``worker`` commands). Usage errors exit with code 2 and a one-line
message, never a traceback; a worker that cannot reach its broker or storage exits with code 1
and one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from pyworkflow import __version__
from pyworkflow.api import get_workflow_run, resume
from pyworkflow.cli_schedules import scheduler, schedules
from pyworkflow.config import configure, configure_from_yaml, get_config, get_storage
from pyworkflow.model.exceptions import WorkflowError
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow_testing.cli import simulate

DEFAULT_CONFIG_FILE = "pyworkflow.config.yaml"


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None


def _run_row(run: WorkflowRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "workflow": run.workflow_name,
        "status": run.status.value,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "updated_at": run.updated_at.isoformat() if run.updated_at else None,
        "events": run.last_sequence,
    }


@click.group()
@click.version_option(__version__, prog_name="pyworkflow")
@click.option("--module", "modules", multiple=True, help="Import MODULE first (repeatable).")
@click.option("--storage", "storage_url", help="Storage URL, e.g. sqlite:///pyworkflow.db")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def main(modules: tuple[str, ...], storage_url: str | None, config_file: str | None) -> None:
    """Durable workflows: inspect and resume runs."""
    try:
        if config_file:
            configure_from_yaml(config_file)
        elif Path(DEFAULT_CONFIG_FILE).exists():
            configure_from_yaml(DEFAULT_CONFIG_FILE)
        if storage_url:
            configure(storage=storage_url)
    except WorkflowError as exc:
        raise click.UsageError(str(exc)) from None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in (*_configured_modules(), *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise click.UsageError(f"cannot import module {module!r}: {exc}") from None


def _configured_modules() -> list[str]:
    """The ``module`` setting of the configuration file: one name or a list."""
    value = get_config().extra.get("module")
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


@main.group()
def runs() -> None:
    """List, show and resume runs."""


def _refuse_missing_storage() -> None:
    """Inspecting runs never creates storage: a path that holds none is reported, not made.

    (A mistyped ``sqlite:///`` URL would otherwise leave an empty database behind and list
    nothing, as if the runs were gone.)
    """
    storage = get_storage()
    where = storage.local_path()
    if where is None or where.exists():
        return
    hint = f"; {storage.url_hint}" if storage.url_hint else ""
    raise click.ClickException(
        f"no {storage.kind} at {where.resolve()} (nothing has run with this storage yet{hint})"
    )


@runs.command("list")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)
@click.option("--workflow", "workflow_name", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_runs(status: str | None, workflow_name: str | None, limit: int, as_json: bool) -> None:
    """List runs, oldest first."""
    _refuse_missing_storage()

    async def fetch() -> list[WorkflowRun]:
        found, _ = await get_storage().list_runs(
            status=RunStatus(status) if status else None, workflow_name=workflow_name, limit=limit
        )
        return found

    found = _run(fetch())
    if not found and not as_json:
        click.echo("no runs")
    for run in found:
        row = _run_row(run)
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{row['run_id']}  {row['workflow']:<24} {row['status']:<10} {row['created_at']}"
            )


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run and its events as JSON.")
def show_run(run_id: str, as_json: bool) -> None:
    """Show a run and its event log."""
    _refuse_missing_storage()

    async def fetch() -> tuple[WorkflowRun | None, list[Any]]:
        run = await get_workflow_run(run_id)
        return run, ([] if run is None else await get_storage().get_events(run_id))

    run, events = _run(fetch())
    if run is None:
        raise click.ClickException(f"no workflow run with id {run_id!r}")
    if as_json:
        click.echo(json.dumps({**_run_row(run), "log": [e.to_dict() for e in events]}, indent=2))
        return
    row = _run_row(run)
    click.echo(f"run {row['run_id']}  workflow {row['workflow']}  status {row['status']}")
    for event in events:
        attempt = event.data.get("attempt")
        suffix = f" (attempt {attempt})" if attempt else ""
        click.echo(f"{event.sequence:>6}  {event.type.value:<22} {event.command_id or ''}{suffix}")


@runs.command("resume")
@click.argument("run_id")
def resume_run(run_id: str) -> None:
    """Advance a run now (import its workflow's module with --module)."""
    _refuse_missing_storage()
    result = _run(resume(run_id))

    async def status() -> WorkflowRun | None:
        return await get_workflow_run(run_id)

    run = _run(status())
    click.echo(f"{run_id}: {run.status.value if run else 'unknown'}")
    if run is not None and run.status is RunStatus.COMPLETED:
        click.echo(json.dumps(result, default=str))


@main.group()
def worker() -> None:
    """Run and inspect Celery workers (the celery runtime)."""


@worker.command("run")
@click.option(
    "--queues",
    "-Q",
    default=None,
    help="Comma-separated queues to serve (default: all of pyworkflow.workflows,"
    " pyworkflow.steps, pyworkflow.timers, pyworkflow.default).",
)
@click.option(
    "--concurrency", "-c", type=click.IntRange(1), default=None, help="Processes or threads."
)
@click.option(
    "--pool",
    "-P",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
)
@click.option("--loglevel", "-l", default="WARNING", show_default=True)
@click.option("--hostname", "-n", default=None, help="Worker node name (default: unique).")
def worker_run(
    queues: str | None, concurrency: int | None, pool: str, loglevel: str, hostname: str | None
) -> None:
    """Start a worker: runs activations, steps, the timer loop and the sweeper."""
    from loguru import logger

    from pyworkflow.celery.worker import WorkerStartupError, run_worker
    from pyworkflow.observability.logging import configure_logging

    with contextlib.suppress(ValueError):
        logger.remove(0)  # loguru's default DEBUG handler: the worker logs at --loglevel
    configure_logging(level=loglevel.upper(), show_context=True)
    try:
        code = run_worker(
            queues=queues,
            concurrency=concurrency,
            pool=pool,
            loglevel=loglevel.upper(),
            hostname=hostname,
        )
    except WorkerStartupError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@worker.command("status")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="The status as one JSON object.")
def worker_status(timeout: float, as_json: bool) -> None:
    """Show the workers that answer and the length of each queue (exit 1 if none answers)."""
    from pyworkflow.celery.worker import WorkerStartupError
    from pyworkflow.celery.worker import worker_status as status_of

    try:
        status = status_of(timeout=timeout)
    except WorkerStartupError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(status))
    else:
        click.echo(f"broker {status['broker']}")
        for row in status["workers"]:
            click.echo(
                f"  {row['name']}  pid {row['pid']}  {row['pool']} x{row['concurrency']}"
                f"  active {row['active']}  queues {','.join(row['queues'])}"
            )
        for name, length in status["queues"].items():
            click.echo(f"  queue {name}: {length} waiting")
    if not status["workers"]:
        raise click.ClickException(f"no worker answered within {timeout}s")


main.add_command(simulate)
main.add_command(schedules)
main.add_command(scheduler)


if __name__ == "__main__":  # pragma: no cover
    main()
