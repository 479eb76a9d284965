"""``pyworkflow quickstart [DIRECTORY]``: a small project that runs as it is.

It writes a package of workflows (``hello``: one step, no waiting; ``approve_order``: two steps,
a hook a person answers and a short durable sleep; ``remind``: a day's sleep, to cancel), a
``pyworkflow.config.yaml`` (SQLite in the project's folder, ``module`` set to the package) and a
README with the commands to run them, all from the project folder. An existing, non-empty folder
is refused unless ``--force`` (which overwrites these files and leaves every other alone).
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import click

from pyworkflow.cli._common import output_of, output_option
from pyworkflow.cli._output import echo_json
from pyworkflow.cli.setup import DEFAULT_CONFIG_FILE, config_settings, render_config

DEFAULT_DIRECTORY = "pyworkflow_quickstart"
DATABASE = "./pyworkflow_data/pyworkflow.db"

WORKFLOWS = '''"""The {name} quickstart's workflows: `pyworkflow workflows list` shows them."""

from __future__ import annotations

from pyworkflow import hook, sleep, step, workflow


@step()
async def make_greeting(name: str) -> str:
    return f"Hello, {{name}}!"


@workflow()
async def hello(name: str = "world") -> str:
    """Greet someone: one step, nothing to wait for."""
    return await make_greeting(name)


@step()
async def reserve_stock(order_id: str) -> str:
    return f"stock for order {{order_id}} reserved"


@step()
async def ship_order(order_id: str, approved_by: str) -> str:
    return f"order {{order_id}} shipped, approved by {{approved_by}}"


@workflow()
async def approve_order(order_id: str = "A-1") -> str:
    """Reserve stock, wait for a person's approval, pause a moment, then ship."""
    await reserve_stock(order_id)
    decision = await hook("approval")  # answered by `pyworkflow hooks resume TOKEN --payload ...`
    if not decision.get("approved"):
        return f"order {{order_id}} rejected"
    await sleep("2s")  # durable: a timer in storage, not a held process
    return await ship_order(order_id, decision.get("by", "someone"))


@step()
async def send_reminder(user: str) -> str:
    return f"reminder sent to {{user}}"


@workflow()
async def remind(user: str = "ada", after: str = "1d") -> str:
    """Sleep (a day by default), then send a reminder: a run to cancel while it sleeps."""
    await sleep(after)
    return await send_reminder(user)
'''

README = """# {name}

A PyWorkflow project made by `pyworkflow quickstart`. Run every command from this folder: it
reads `pyworkflow.config.yaml` (SQLite in `pyworkflow_data/`, the workflows in
`{package}/workflows.py`).

```sh
pyworkflow workflows list                                # hello, approve_order, remind
pyworkflow workflows run hello --arg name=Ada            # shows the events, then the result
pyworkflow workflows run hello --output json             # one JSON document, for scripts

pyworkflow workflows run approve_order --no-wait         # prints the run id; it waits on a hook
pyworkflow hooks list                                    # the pending hook and its token
pyworkflow hooks resume TOKEN --payload '{{"approved": true, "by": "ada"}}'
pyworkflow runs logs RUN_ID --follow                     # the log, until the run ends
pyworkflow runs status RUN_ID --output json
pyworkflow runs list

pyworkflow workflows run remind --no-wait                # sleeps for a day
pyworkflow runs cancel RUN_ID --wait                     # wakes it now: it ends cancelled
```

On the local runtime a run that sleeps wakes only while some `pyworkflow` process serves this
storage: `runs logs --follow` (or `workflows run` without `--no-wait`) does.

`workflows run approve_order` without `--no-wait` waits for the approval and prints the
`hooks resume` command to run from another shell. See `docs/cli.md` of PyWorkflow for every
command.
"""


def _package_name(directory: Path, name: str | None) -> str:
    if name is not None:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise click.BadParameter(f"{name!r} is not a Python package name", param_hint="--name")
        return name
    derived = re.sub(r"\W+", "_", directory.resolve().name).strip("_").lower() or "quickstart"
    return derived if derived[0].isalpha() else f"project_{derived}"


def project_files(package: str) -> dict[str, str]:
    """The files of a quickstart project: path relative to its folder -> text."""
    settings = config_settings(
        {"type": "sqlite", "path": DATABASE}, "local", [f"{package}.workflows"], None
    )
    return {
        f"{package}/__init__.py": f'"""The {package} quickstart project."""\n',
        f"{package}/workflows.py": WORKFLOWS.format(name=package),
        DEFAULT_CONFIG_FILE: render_config(settings),
        "README.md": README.format(name=package, package=package),
    }


@click.command("quickstart")
@click.argument(
    "directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIRECTORY
)
@click.option("--name", default=None, help="The project's package (default: from DIRECTORY).")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@output_option
def quickstart(directory: Path, name: str | None, force: bool, output: str | None) -> None:
    """Create a small runnable project in DIRECTORY (default ./pyworkflow_quickstart)."""
    package = _package_name(directory, name)
    if directory.exists() and any(directory.iterdir()) and not force:
        raise click.ClickException(f"{directory} is not empty (--force writes into it)")
    files = project_files(package)
    for relative, text in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    chosen = output_of(output)
    if chosen == "json":
        echo_json({"directory": str(directory), "package": package, "files": sorted(files)})
    elif chosen == "plain":
        for relative in sorted(files):
            click.echo(str(directory / relative))
    else:
        click.echo(f"created {directory} (package {package}):")
        for relative in sorted(files):
            click.echo(f"  {relative}")
        click.echo(f"next: cd {directory} && pyworkflow workflows run hello")


__all__ = ["project_files", "quickstart"]
