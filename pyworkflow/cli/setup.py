"""``pyworkflow setup``: write a ``pyworkflow.config.yaml`` (the file ``configure_from_yaml`` and
every ``pyworkflow`` command read).

At a terminal it asks for each value not given as an option (storage, its path or URL, runtime,
broker, module); with ``--yes`` it takes the defaults for what is not given; in a script without
``--yes`` it never prompts: ``--storage`` is then required (and ``--broker`` for the celery
runtime), the rest defaults. An existing file is kept unless ``--force``. The storage setting is
checked (``config_to_storage``) before anything is written; nothing here connects to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from pyworkflow.cli._common import (
    STORAGE_TYPES,
    InputError,
    interactive,
    output_of,
    output_option,
    storage_setting,
)
from pyworkflow.cli._output import echo_json
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.storage.config import DEFAULT_FILE_PATH, DEFAULT_SQLITE_PATH, config_to_storage

DEFAULT_CONFIG_FILE = "pyworkflow.config.yaml"
DEFAULT_BROKER = "redis://localhost:6379/0"
RUNTIMES = ("local", "celery")
_DEFAULT_PATHS = {"sqlite": DEFAULT_SQLITE_PATH, "file": DEFAULT_FILE_PATH}
_EXAMPLE_URLS = {"postgres": "postgresql://localhost/pyworkflow", "redis": DEFAULT_BROKER}


def render_config(settings: dict[str, Any]) -> str:
    """The YAML text of ``settings`` (keys as ``configure_from_yaml`` reads them)."""
    header = (
        "# PyWorkflow configuration, read by `pyworkflow` commands run in this folder and by\n"
        "# pyworkflow.configure_from_yaml(). Relative paths are relative to where they run.\n"
    )
    return header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)


def config_settings(
    storage: dict[str, Any], runtime: str, modules: list[str], broker: str | None
) -> dict[str, Any]:
    """The settings a config file holds, in the order people read them."""
    settings: dict[str, Any] = {"runtime": runtime, "storage": storage}
    if modules:
        settings["module"] = modules[0] if len(modules) == 1 else modules
    if broker:
        settings["celery"] = {"broker": broker}
    return settings


def _storage_config(storage: str | None, storage_path: str | None) -> dict[str, Any]:
    """``--storage``/``--storage-path`` as the config's ``storage`` mapping (checked)."""
    chosen = storage_setting(storage, storage_path)
    if chosen is None:
        chosen = {"type": "sqlite"}
    config: dict[str, Any] = {"url": chosen} if isinstance(chosen, str) else dict(chosen)
    kind = config.get("type")
    if kind in _DEFAULT_PATHS and "path" not in config:
        config["path"] = _DEFAULT_PATHS[str(kind)]
    try:
        config_to_storage(config)
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None
    return config


def _ask_storage(storage: str | None, storage_path: str | None) -> tuple[str, str | None]:
    """At a terminal: the storage type (or URL) and its path, for those not given."""
    if storage is None:
        storage = click.prompt(
            "storage", type=click.Choice(STORAGE_TYPES), default="sqlite", show_choices=True
        )
    assert storage is not None
    if "://" in storage or storage_path is not None:
        return storage, storage_path
    if storage in _DEFAULT_PATHS:
        return storage, click.prompt(f"{storage} path", default=_DEFAULT_PATHS[storage])
    if storage in _EXAMPLE_URLS:
        return click.prompt(f"{storage} URL", default=_EXAMPLE_URLS[storage]), None
    return storage, None


@click.command("setup")
@click.option("--storage", default=None, help="A storage TYPE (sqlite, file, memory, ...) or URL.")
@click.option("--storage-path", default=None, help="Where sqlite or file storage keeps data.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=None)
@click.option("--broker", default=None, help=f"The Celery broker URL (e.g. {DEFAULT_BROKER}).")
@click.option("--module", "modules", multiple=True, help="A module defining workflows.")
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False),
    default=DEFAULT_CONFIG_FILE,
    show_default=True,
    help="The file to write.",
)
@click.option("--yes", "-y", is_flag=True, help="Take the defaults for what is not given.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@output_option
def setup(
    storage: str | None,
    storage_path: str | None,
    runtime: str | None,
    broker: str | None,
    modules: tuple[str, ...],
    config_file: str,
    yes: bool,
    force: bool,
    output: str | None,
) -> None:
    """Write a pyworkflow.config.yaml: storage, runtime, broker and workflow modules."""
    path = Path(config_file)
    if path.exists() and not force:
        raise click.ClickException(f"{path} already exists (--force overwrites it)")
    ask = interactive() and not yes
    if not ask and not yes:
        needed = [] if storage or storage_path else ["--storage"]
        if runtime == "celery" and not broker:
            needed.append("--broker")
        if needed:
            raise click.UsageError(
                f"give {' and '.join(needed)}, or --yes for the defaults (prompting needs a"
                " terminal)"
            )
    if ask:
        storage, storage_path = _ask_storage(storage, storage_path)
        if runtime is None:
            runtime = click.prompt("runtime", type=click.Choice(RUNTIMES), default="local")
        if runtime == "celery" and not broker:
            broker = click.prompt("Celery broker URL", default=DEFAULT_BROKER)
        if not modules:
            answer = click.prompt("module defining your workflows (empty: none)", default="")
            modules = tuple(answer.split()) if answer else ()
    runtime = runtime or "local"
    if runtime == "celery" and not broker:
        broker = DEFAULT_BROKER
    settings = config_settings(_storage_config(storage, storage_path), runtime, [*modules], broker)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(settings), encoding="utf-8")
    chosen = output_of(output)
    if chosen == "json":
        echo_json({"config_file": str(path), "config": settings})
    elif chosen == "plain":
        click.echo(str(path))
    else:
        click.echo(f"wrote {path}:")
        click.echo(render_config(settings).rstrip())


__all__ = ["DEFAULT_CONFIG_FILE", "config_settings", "render_config", "setup"]
