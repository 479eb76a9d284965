"""``pyworkflow workflows list|info|run``: the registered workflows, and running one.

The workflows are those the imported modules registered (``--module``, the config's ``module``).
``workflows run`` starts a run and, unless ``--no-wait``, shows its events as they are recorded
while it waits for the result; a run waiting on a hook prints the command that answers it, so a
user can answer from another shell. stdout carries the answer: in ``json`` exactly one document
(``{"run_id", "workflow", "status", "result"}``, or ``"error"``/``"error_type"`` instead of the
result), in ``plain`` one line; the events go to stdout only in ``table``, else to stderr.
A run that failed, was cancelled or is blocked exits 1, as does one still going at ``--timeout``
(it goes on: the timeout only ends the waiting). Runs start through the configured ``Runtime``
only; this module never runs workflow code itself nor prints an event twice.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from pyworkflow.api import get_runtime, get_workflow_result, reveal_tokens
from pyworkflow.cli._common import (
    InputError,
    JsonType,
    check_arguments,
    find_workflow,
    one_line,
    output_of,
    output_option,
    run_async,
    settings,
    timeout_option,
)
from pyworkflow.cli._output import (
    Column,
    cell,
    echo_json,
    emit_fields,
    emit_records,
    json_text,
    print_table,
    rows_table,
)
from pyworkflow.cli._records import blocked_record, print_events, short_type
from pyworkflow.config import get_config, get_storage
from pyworkflow.core.registry import WorkflowDefinition, list_workflows
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import WorkflowTimeoutError
from pyworkflow.model.schemas import HookStatus
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend

FOLLOW_POLL = 0.2  # seconds between looks at the log of the run being waited for

WORKFLOW_COLUMNS = (
    Column("name", no_wrap=True),
    Column("durable"),
    Column("max duration"),
    Column("tags"),
    Column("parameters"),
    Column("description"),
)
PARAMETER_COLUMNS = (Column("parameter"), Column("kind"), Column("type"), Column("default"))


@click.group()
def workflows() -> None:
    """The registered workflows: list them, show one, run one."""


# -- describing workflows -----------------------------------------------------------------------


def _description(definition: WorkflowDefinition) -> str | None:
    doc = inspect.getdoc(definition.func)
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _parameter(parameter: inspect.Parameter) -> dict[str, Any]:
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        shown = None
    elif isinstance(annotation, str):
        shown = annotation
    else:
        shown = inspect.formatannotation(annotation)
    record: dict[str, Any] = {
        "name": parameter.name,
        "kind": parameter.kind.description,
        "annotation": shown,
        "required": parameter.default is inspect.Parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD),
    }
    if parameter.default is not inspect.Parameter.empty:
        record["default"] = _jsonable(parameter.default)
    return record


def _signature(definition: WorkflowDefinition) -> inspect.Signature:
    """The workflow's signature with its annotations evaluated where they can be (modules with
    ``from __future__ import annotations`` keep them as strings)."""
    try:
        return inspect.signature(definition.func, eval_str=True)
    except Exception:  # noqa: BLE001 - a hint that does not evaluate: shown as written
        return definition.signature


def workflow_record(definition: WorkflowDefinition) -> dict[str, Any]:
    """A registered workflow as JSON: options, parameters and description."""
    func = definition.func
    context = definition.context_class
    signature = _signature(definition)
    return {
        "name": definition.name,
        "function": f"{func.__module__}.{func.__qualname__}",
        "description": _description(definition),
        "docstring": inspect.getdoc(func),
        "signature": f"{definition.name}{signature}",
        "parameters": [_parameter(p) for p in signature.parameters.values()],
        "durable": definition.durable,
        "max_duration": (
            definition.max_duration.total_seconds() if definition.max_duration else None
        ),
        "tags": list(definition.tags),
        "recover_on_worker_loss": definition.recover_on_worker_loss,
        "max_recovery_attempts": definition.max_recovery_attempts,
        "context_class": f"{context.__module__}.{context.__qualname__}" if context else None,
    }


def _durable(definition: WorkflowDefinition) -> str:
    return "default" if definition.durable is None else cell(definition.durable)


def _workflow_cells(definition: WorkflowDefinition, exact: bool) -> list[str]:
    del exact
    return [
        definition.name,
        _durable(definition),
        cell(definition.max_duration),
        cell(list(definition.tags)),
        cell(list(definition.signature.parameters)),
        _description(definition) or "-",
    ]


@workflows.command("list")
@output_option
def list_command(output: str | None) -> None:
    """The workflows the imported modules registered (--module, the config's module)."""
    found = sorted(list_workflows().values(), key=lambda definition: definition.name)
    emit_records(
        found,
        WORKFLOW_COLUMNS,
        _workflow_cells,
        output_of(output),
        document=workflow_record,
        empty="no workflows registered: import the module that defines them with --module",
    )


@workflows.command("info")
@click.argument("name")
@output_option
def info_command(name: str, output: str | None) -> None:
    """One workflow in detail: its parameters, docstring and options."""
    definition = find_workflow(name)
    record = workflow_record(definition)
    chosen = output_of(output)
    fields = [
        ("name", definition.name),
        ("function", record["function"]),
        ("signature", record["signature"]),
        ("description", record["docstring"] or "-"),
        ("durable", _durable(definition)),
        ("max duration", cell(definition.max_duration)),
        ("tags", cell(record["tags"])),
        ("recover on worker loss", cell(record["recover_on_worker_loss"])),
        ("max recovery attempts", cell(record["max_recovery_attempts"])),
        ("context class", cell(record["context_class"])),
    ]
    emit_fields(fields, chosen, record)
    parameters = [_parameter_cells(p) for p in record["parameters"]]
    if chosen == "plain":
        for row in parameters:
            click.echo("\t".join(["parameter", *row]))
    elif chosen == "table" and parameters:
        click.echo()
        print_table(rows_table(PARAMETER_COLUMNS, parameters))


def _parameter_cells(parameter: dict[str, Any]) -> list[str]:
    default = json_text(parameter["default"]) if "default" in parameter else None
    return [
        parameter["name"],
        parameter["kind"],
        cell(parameter["annotation"]),
        "(required)" if parameter["required"] else cell(default),
    ]


# -- arguments ----------------------------------------------------------------------------------


def _pair(text: str) -> tuple[str, Any]:
    """``--arg key=value``: the value as JSON when it parses (``3`` is 3), else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--arg")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value
    except RecursionError:
        raise click.BadParameter("the JSON is nested too deeply", param_hint="--arg") from None


def _arguments(
    args_json: list[Any] | dict[str, Any] | None, pairs: tuple[str, ...]
) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if isinstance(args_json, list):
        args = list(args_json)
    elif isinstance(args_json, dict):
        kwargs = dict(args_json)
    kwargs.update(_pair(text) for text in pairs)
    return args, kwargs


# -- starting and waiting -----------------------------------------------------------------------


async def start_run(
    definition: WorkflowDefinition,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    durable: bool | None,
    idempotency_key: str | None,
) -> tuple[str, StorageBackend]:
    """Start a run (as ``pyworkflow.start`` does) and return its id and storage, also when the
    run failed at once (``start`` raises the run's error then, and the id would be lost).
    A non-durable run lives in this process's memory: the command waits for it here."""
    if durable is None:
        durable = definition.durable
    if durable is None:
        durable = get_config().default_durable
    storage = get_storage() if durable else InMemoryStorageBackend()
    run_id, _ = await get_runtime(settings().runtime).start(
        definition, tuple(args), kwargs, storage=storage, idempotency_key=idempotency_key
    )
    return run_id, storage


@dataclass
class _Watch:
    """Shows a run's log while the command waits for its result."""

    storage: StorageBackend
    output: str
    run_id: str  # the run of the chain being shown (continue_as_new moves it on)
    seen: int = 0
    header: bool = True
    announced: set[str] = field(default_factory=set)

    @property
    def err(self) -> bool:
        return self.output != "table"  # stdout is for the answer in json and plain

    async def show_new(self) -> None:
        events = await self.storage.get_events(self.run_id, after_sequence=self.seen)
        if not events:
            return
        self.seen = events[-1].sequence
        print_events(events, self.output, header=self.header, err=self.err)
        self.header = False
        for event in events:
            await self._tell(event)

    async def _tell(self, event: Event) -> None:
        if event.type is EventType.HOOK_CREATED:
            await self._announce_hook(str(event.data.get("hook_id")))
        elif event.type is EventType.WORKFLOW_CONTINUED_AS_NEW:
            self.run_id = str(event.data["continued_to_run_id"])
            self.seen, self.header = 0, True
            click.echo(f"continued as new: run {self.run_id}", err=self.err)

    async def _announce_hook(self, hook_id: str) -> None:
        hook = await self.storage.get_hook(self.run_id, hook_id)
        if hook is None or hook.status is not HookStatus.PENDING:
            return
        await reveal_tokens([hook], self.storage)
        if hook.token is None or hook.token in self.announced:
            return
        self.announced.add(hook.token)
        click.echo(
            f"waiting on hook {hook.name!r}; answer it with:\n"
            f"  pyworkflow hooks resume {hook.token} --payload '<JSON>'",
            err=self.err,
        )


@dataclass
class _Ending:
    run_id: str
    status: str
    result: Any = None
    error: BaseException | None = None
    blocked: dict[str, Any] | None = None
    timed_out: float | None = None  # the seconds waited, when the waiting ended, not the run


async def _wait(watch: _Watch, timeout: float | None) -> _Ending:
    started = watch.run_id
    waiting = asyncio.ensure_future(
        get_workflow_result(started, timeout=timeout, storage=watch.storage)
    )
    try:
        while True:
            done = waiting.done()  # before the last look: every event is shown
            await watch.show_new()
            if done:
                break
            await asyncio.wait({waiting}, timeout=FOLLOW_POLL)
    finally:
        if not waiting.done():
            waiting.cancel()
    run = await watch.storage.get_run(watch.run_id)
    status = run.status.value if run is not None else "unknown"
    blocked = blocked_record(run.blocked) if run is not None else None
    error = waiting.exception()
    if error is not None:
        going = run is not None and not run.status.is_terminal
        timed_out = timeout if isinstance(error, WorkflowTimeoutError) and going else None
        return _Ending(started, status, error=error, blocked=blocked, timed_out=timed_out)
    return _Ending(started, status, result=waiting.result())


def _error_type(error: BaseException) -> str:
    name = getattr(error, "type_name", None)  # RemoteError: the original class, module:Name
    return short_type(str(name)) if name else type(error).__name__


def _ending_document(ending: _Ending, workflow: str) -> dict[str, Any]:
    document: dict[str, Any] = {"run_id": ending.run_id, "workflow": workflow}
    document["status"] = ending.status
    if ending.error is None:
        document["result"] = ending.result
    else:
        document["error"] = str(ending.error)
        document["error_type"] = _error_type(ending.error)
    if ending.blocked is not None:
        document["blocked"] = ending.blocked
    return document


def _report(ending: _Ending, workflow: str, output: str) -> None:
    """Print how the run ended; exit 1 unless it completed."""
    document = _ending_document(ending, workflow)
    if output == "json":
        echo_json(document)
        if ending.error is not None:
            sys.exit(1)
        return
    if ending.error is None:
        if output == "plain":
            click.echo(f"{ending.run_id}\t{ending.status}\t{json_text(ending.result)}")
        else:
            click.echo(f"run {ending.run_id} {ending.status}")
            click.echo(f"result: {json_text(ending.result)}")
        return
    if output == "plain":
        click.echo(f"{ending.run_id}\t{ending.status}\t{document['error_type']}")
    raise click.ClickException(_failure_line(ending, document))


def _failure_line(ending: _Ending, document: dict[str, Any]) -> str:
    error = one_line(str(ending.error))
    if ending.timed_out is not None:
        return (
            f"run {ending.run_id} did not finish within {ending.timed_out:g}s (status:"
            f" {ending.status}); it goes on: pyworkflow runs status {ending.run_id}"
        )
    if ending.blocked is not None:
        return (
            f"run {ending.run_id} is blocked ({ending.blocked['kind']}): {error}"
            f" (see pyworkflow runs status {ending.run_id})"
        )
    return f"run {ending.run_id} {ending.status}: {document['error_type']}: {error}"


@workflows.command("run")
@click.argument("name")
@click.option(
    "--arg",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A keyword argument (repeatable); VALUE is JSON when it parses (n=3 is 3), else text.",
)
@click.option(
    "--args-json",
    type=JsonType(dict, list),
    default=None,
    help="The arguments as JSON: an object (keyword arguments) or a list (positional).",
)
@click.option("--no-wait", is_flag=True, help="Print the run id and return at once.")
@click.option("--idempotency-key", default=None, help="The same key always gives the same run.")
@click.option(
    "--durable/--no-durable",
    default=None,
    help="Record the run in storage (default: the workflow's, else the configured default).",
)
@timeout_option("Stop waiting after SECONDS (exit 1; the run goes on).")
@output_option
def run_command(
    name: str,
    pairs: tuple[str, ...],
    args_json: list[Any] | dict[str, Any] | None,
    no_wait: bool,
    idempotency_key: str | None,
    durable: bool | None,
    timeout: float | None,
    output: str | None,
) -> None:
    """Start a run of workflow NAME; show its events and wait for its result."""
    definition = find_workflow(name)
    args, kwargs = _arguments(args_json, pairs)
    check_arguments(definition, args, kwargs, "--arg/--args-json")
    if durable is False and no_wait:
        raise InputError("a --no-durable run lives in this process only: it needs waiting for")
    chosen = output_of(output)
    started: list[str] = []

    async def go() -> tuple[str, _Ending | None]:
        run_id, storage = await start_run(
            definition, args, kwargs, durable=durable, idempotency_key=idempotency_key
        )
        started.append(run_id)
        if no_wait:
            return run_id, None
        click.echo(f"started run {run_id} of workflow {definition.name!r}", err=chosen != "table")
        return run_id, await _wait(_Watch(storage, chosen, run_id), timeout)

    try:
        run_id, ending = run_async(go())
    except KeyboardInterrupt:
        if started:
            click.echo(f"stopped waiting; run {started[0]} goes on", err=True)
        sys.exit(130)
    if ending is None:
        if chosen == "json":
            echo_json({"run_id": run_id}, lines=True)
        else:
            click.echo(run_id)
        return
    _report(ending, definition.name, chosen)


__all__ = ["start_run", "workflow_record", "workflows"]
