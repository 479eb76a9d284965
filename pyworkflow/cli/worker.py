"""``pyworkflow worker run|status|list|queues``: start and inspect Celery workers.

Celery is imported only inside these commands (the celery runtime), never when the ``pyworkflow``
command loads. A worker that cannot reach its broker or storage exits 1 with one line; ``status``
and ``list`` exit 1 when no worker answers within ``--timeout``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from pyworkflow.cli._common import output_of, output_option
from pyworkflow.cli._output import (
    Column,
    echo_json,
    emit_records,
    print_table,
    progress,
    rows_table,
)

WORKER_COLUMNS = (
    Column("name", no_wrap=True),
    Column("pid", numeric=True),
    Column("pool"),
    Column("concurrency", numeric=True),
    Column("active", numeric=True),
    Column("queues"),
)
QUEUE_COLUMNS = (Column("queue", no_wrap=True), Column("waiting", numeric=True))


@click.group()
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


def _status(timeout: float) -> dict[str, Any]:
    """``pyworkflow.celery.worker.worker_status``: the workers that answer, the queue lengths."""
    from pyworkflow.celery.worker import WorkerStartupError, worker_status

    try:
        with progress(f"asking the workers (up to {timeout:g}s)"):
            return worker_status(timeout=timeout)
    except WorkerStartupError as exc:
        raise click.ClickException(str(exc)) from None


def _worker_cells(row: dict[str, Any], exact: bool) -> list[str]:
    del exact
    return [
        str(row["name"]),
        str(row["pid"]),
        str(row["pool"]),
        str(row["concurrency"]),
        str(row["active"]),
        ",".join(row["queues"]) or "-",
    ]


def _queue_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"queue": name, "waiting": length} for name, length in status["queues"].items()]


def _queue_cells(row: dict[str, Any], exact: bool) -> list[str]:
    del exact
    return [str(row["queue"]), str(row["waiting"])]


def _none_answered(status: dict[str, Any], timeout: float) -> None:
    if not status["workers"]:
        raise click.ClickException(f"no worker answered within {timeout:g}s")


timeout_option = click.option(
    "--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for answers."
)


@worker.command("status")
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="The same as --output json.")
@output_option
def worker_status(timeout: float, as_json: bool, output: str | None) -> None:
    """Show the broker, the workers that answer and the length of each queue (exit 1 if no
    worker answers)."""
    status = _status(timeout)
    chosen = output_of(output, as_json)
    if chosen == "json":
        echo_json(status, lines=True)
    elif chosen == "plain":
        click.echo(f"broker\t{status['broker']}")
        for row in status["workers"]:
            click.echo("worker\t" + "\t".join(_worker_cells(row, True)))
        for row in _queue_rows(status):
            click.echo("queue\t" + "\t".join(_queue_cells(row, True)))
    else:
        click.echo(f"broker {status['broker']}")
        if status["workers"]:
            workers = [_worker_cells(row, False) for row in status["workers"]]
            print_table(rows_table(WORKER_COLUMNS, workers))
        queues = [_queue_cells(row, False) for row in _queue_rows(status)]
        print_table(rows_table(QUEUE_COLUMNS, queues))
    _none_answered(status, timeout)


@worker.command("list")
@timeout_option
@output_option
def worker_list(timeout: float, output: str | None) -> None:
    """The workers that answer: name, pid, pool, concurrency, active tasks, queues (exit 1 if
    none answers)."""
    status = _status(timeout)
    emit_records(
        status["workers"],
        WORKER_COLUMNS,
        _worker_cells,
        output_of(output),
        document=dict,
        empty=f"no worker answered within {timeout:g}s",
    )
    _none_answered(status, timeout)


@worker.command("queues")
@timeout_option
@output_option
def worker_queues(timeout: float, output: str | None) -> None:
    """The messages waiting in each pyworkflow queue."""
    status = _status(timeout)
    emit_records(
        _queue_rows(status),
        QUEUE_COLUMNS,
        _queue_cells,
        output_of(output),
        document=dict,
        empty="no queues",
    )


__all__ = ["worker"]
