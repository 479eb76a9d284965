"""The root ``pyworkflow`` group: global options, configuration, and the command groups.

This is the one place that picks implementations from configuration. The flags (``--storage``,
``--storage-path``, ``--runtime``) win; below them the config file (``--config FILE``, else
``pyworkflow.config.yaml`` in the current directory when it exists) and the ``PYWORKFLOW_*``
environment variables count as ``pyworkflow.configure`` has them (what the file sets wins over
the environment's ``PYWORKFLOW_*``). ``--module`` (and the config's
``module``) are imported like ``python -m`` would, from the current directory. ``setup`` and
``quickstart`` write configuration, so they read none and import nothing.

Errors are answered by ``CliGroup`` (``_common``): one line, exit 2 for usage, 1 for the rest.
Commands never answer errors themselves, and nothing here imports Celery.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from pyworkflow import __version__
from pyworkflow.cli._common import (
    CliGroup,
    CliSettings,
    InputError,
    storage_setting,
)
from pyworkflow.cli._output import OUTPUTS
from pyworkflow.cli.hooks import hooks
from pyworkflow.cli.quickstart import quickstart
from pyworkflow.cli.runs import runs
from pyworkflow.cli.scheduler import scheduler
from pyworkflow.cli.schedules import schedules
from pyworkflow.cli.setup import DEFAULT_CONFIG_FILE, setup
from pyworkflow.cli.worker import worker
from pyworkflow.cli.workflows import workflows
from pyworkflow.config import configure, configure_from_yaml, get_config
from pyworkflow.model.exceptions import WorkflowError
from pyworkflow.observability.logging import configure_logging
from pyworkflow_testing.cli import simulate

# Commands that write configuration: they neither read it nor import workflow modules.
CONFIG_FREE = ("setup", "quickstart")
LOG_LEVELS = {2: "INFO", 3: "DEBUG"}  # -vv, -vvv: the library's log lines on stderr


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyworkflow")
@click.option(
    "--module", "modules", multiple=True, help="Import MODULE first (repeatable), e.g. app.flows."
)
@click.option(
    "--runtime",
    type=click.Choice(["local", "celery"]),
    default=None,
    help="Where runs execute (default: the config's, else PYWORKFLOW_RUNTIME, else local).",
)
@click.option(
    "--storage",
    default=None,
    help="A storage URL (sqlite:///x.db, postgresql://..., redis://..., file://dir, memory://)"
    " or a type (sqlite, file, memory, postgres, redis).",
)
@click.option(
    "--storage-path",
    default=None,
    help="The path of sqlite or file storage (alone: the configured type if sqlite or file,"
    " else sqlite).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"A YAML config file (default: ./{DEFAULT_CONFIG_FILE} when it exists).",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(OUTPUTS),
    default="table",
    show_default=True,
    help="table for people, json for programs, plain: tab-separated lines.",
)
@click.option(
    "--verbose", "-v", count=True, help="Tracebacks with errors (-vv: also the library's logs)."
)
@click.pass_context
def main(
    ctx: click.Context,
    modules: tuple[str, ...],
    runtime: str | None,
    storage: str | None,
    storage_path: str | None,
    config_file: str | None,
    output: str,
    verbose: int,
) -> None:
    """Durable workflows from the shell: run workflows, inspect and answer runs, manage
    schedules and workers, simulate."""
    ctx.obj = CliSettings(output=output, verbose=verbose, runtime=runtime)
    if verbose >= 2:
        configure_logging(level=LOG_LEVELS.get(verbose, "DEBUG"))
    if ctx.invoked_subcommand in CONFIG_FREE:
        return
    _configure(config_file, storage, storage_path, runtime)
    _import(modules)


def _configure(
    config_file: str | None, storage: str | None, storage_path: str | None, runtime: str | None
) -> None:
    try:
        if config_file:
            configure_from_yaml(config_file)
        elif Path(DEFAULT_CONFIG_FILE).exists():
            configure_from_yaml(DEFAULT_CONFIG_FILE)
        chosen = storage_setting(storage, storage_path)
        if chosen is not None:
            configure(storage=chosen)
        if runtime is not None:
            configure(runtime=runtime)
    except WorkflowError as exc:
        raise InputError(str(exc)) from None


def _configured_modules() -> list[str]:
    """The ``module`` setting of the configuration file: one name or a list."""
    value = get_config().extra.get("module")
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


def _import(modules: tuple[str, ...]) -> None:
    """Import the modules that define workflows, from the current directory like ``python -m``."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in (*_configured_modules(), *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InputError(f"cannot import module {module!r}: {exc}") from None


for command in (workflows, runs, hooks, schedules, scheduler, worker, setup, quickstart, simulate):
    main.add_command(command)


__all__ = ["main"]
