"""``pyworkflow scheduler run``: serve schedules in this process (the local runtime).

Fires due schedules and runs their workflows here until ``--duration`` ends or Ctrl-C, printing
each started run's id (``started <run_id>``) on stdout and its own comings and goings on stderr.
On Celery the workers serve schedules; this command is for the local runtime and never starts
runs anywhere else.
"""

from __future__ import annotations

import click

from pyworkflow.api import get_runtime
from pyworkflow.cli._common import run_async
from pyworkflow.config import get_storage
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.scheduling import LocalScheduler


@click.group()
def scheduler() -> None:
    """Serve schedules in this process (the local runtime)."""


class _EchoingScheduler(LocalScheduler):
    """A ``LocalScheduler`` that prints the id of every run it starts, and counts them."""

    started: int = 0

    async def tick_once(self) -> list[str]:
        run_ids = await super().tick_once()
        for run_id in run_ids:
            click.echo(f"started {run_id}")
        self.started += len(run_ids)
        return run_ids


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
    serving = _EchoingScheduler(storage=storage, poll_interval=poll_interval)

    async def serve() -> None:
        # LocalScheduler runs on the local runtime: the runs it starts are tasks of this loop.
        runtime = get_runtime("local")
        await serving.run(duration)
        if isinstance(runtime, LocalRuntime):
            await runtime.drain(storage)  # the runs started go as far as they go now

    until = "Ctrl-C" if duration is None else f"{duration:g}s or Ctrl-C"
    click.echo(f"scheduler: serving schedules until {until}", err=True)
    try:
        run_async(serve())
    except KeyboardInterrupt:
        click.echo(f"scheduler: interrupted, {serving.started} runs started", err=True)
        return
    click.echo(f"scheduler: stopped, {serving.started} runs started", err=True)


__all__ = ["scheduler"]
