"""``pyworkflow hooks list|info|resume|run``: the hooks runs wait on, and answering them.

``resume`` delivers a payload (``pyworkflow.resume_hook``: validated against the hook's schema
before anything is recorded); on the local runtime the run is then advanced here, as far as it
goes without waiting (its workflow must be importable here: ``--module``; otherwise it goes on
with whichever process serves the storage). ``run`` is the interactive way: at a terminal it
offers the pending hooks and asks for the payload; in a script it is ``resume`` and a missing
argument is a usage error, never a prompt.

A token is ``<run_id>:<hook_id>:<secret>``; ``info`` also takes a bare hook id (``hook-3``), with
``--run-id`` when several runs have one of that id. An unknown, expired or already answered hook,
or a payload its schema refuses, exits 1 with one line; malformed JSON exits 2. Payloads are
recorded only through ``resume_hook`` (never written to storage here), and a prompt is never
shown off a terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Any

import click
from pydantic import BaseModel

from pyworkflow.api import ResumeResult, get_workflow_run, resume_hook, reveal_tokens
from pyworkflow.cli._common import (
    JsonType,
    advance_local_runs,
    interactive,
    local_runtime,
    output_of,
    output_option,
    parse_json,
    require_storage,
    resolve,
    run_async,
)
from pyworkflow.cli._output import (
    Column,
    compact_json,
    echo_json,
    emit_fields,
    emit_records,
    print_table,
    rows_table,
    when,
)
from pyworkflow.cli._records import HOOK_COLUMNS, UNKNOWN_TOKEN, hook_cells, hook_record
from pyworkflow.config import get_storage
from pyworkflow.core.registry import list_workflows
from pyworkflow.engine.hooks import fill_payloads, parse_token, token_matches
from pyworkflow.model.exceptions import HookNotFoundError
from pyworkflow.model.schemas import Hook, HookStatus, WorkflowRun

CHOICE_COLUMNS = (
    Column("#", numeric=True),
    Column("run id", no_wrap=True),
    Column("hook"),
    Column("created"),
    Column("expires"),
)


@click.group()
def hooks() -> None:
    """List hooks and answer them."""


# -- finding hooks ------------------------------------------------------------------------------


async def find_hook(reference: str, run_id: str | None = None) -> Hook:
    """The hook a token names (its secret checked), or the one hook with this hook id."""
    storage = get_storage()
    if reference.count(":") >= 2:
        token_run, hook_id = parse_token(reference)
        hook = await storage.get_hook(token_run, hook_id)
        if hook is None or not token_matches(hook, reference):
            raise HookNotFoundError("no hook matches this token")
        hook.token = reference
        return (await fill_payloads(storage, [hook]))[0]
    found = [h for h in await storage.list_hooks(run_id=run_id) if h.hook_id == reference]
    await reveal_tokens(await fill_payloads(storage, found), storage)
    where = f" in run {run_id!r}" if run_id else ""
    if not found:
        raise HookNotFoundError(f"no hook {reference!r}{where} (pyworkflow hooks list shows them)")
    if len(found) > 1:
        runs = ", ".join(hook.run_id for hook in found)
        raise click.UsageError(
            f"hook id {reference!r} names hooks of {len(found)} runs ({runs}): give its token"
            " or --run-id"
        )
    return found[0]


async def list_hooks(
    run_id: str | None = None, status: HookStatus | None = None, *, payloads: bool = False
) -> list[Hook]:
    """The hooks storage holds, oldest first (storage lists them in no promised order), with
    their tokens and, with ``payloads``, the payloads received (read from each run's log)."""
    storage = get_storage()
    found = await storage.list_hooks(run_id=run_id, status=status)
    if payloads:
        await fill_payloads(storage, found)
    await reveal_tokens(found, storage)
    return sorted(found, key=lambda hook: (hook.created_at or _EPOCH, hook.run_id, hook.hook_id))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def payload_schema(hook: Hook) -> dict[str, Any] | None:
    """The JSON schema of the hook's payload model, when it can be imported here."""
    model = resolve(hook.schema_path) if hook.schema_path else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_json_schema()
    return None


# -- list and info ------------------------------------------------------------------------------


@hooks.command("list")
@click.option("--run-id", default=None, help="Only this run's hooks.")
@click.option("--status", type=click.Choice([s.value for s in HookStatus]), default=None)
@output_option
def list_command(run_id: str | None, status: str | None, output: str | None) -> None:
    """Hooks (all runs', or one run's), with the token that answers each."""
    require_storage()
    chosen = output_of(output)
    found = run_async(
        list_hooks(run_id, HookStatus(status) if status else None, payloads=chosen == "json")
    )
    emit_records(found, HOOK_COLUMNS, hook_cells, chosen, document=hook_record, empty="no hooks")


@hooks.command("info")
@click.argument("reference", metavar="TOKEN_OR_HOOK_ID")
@click.option("--run-id", default=None, help="The run, when a hook id alone is ambiguous.")
@output_option
def info_command(reference: str, run_id: str | None, output: str | None) -> None:
    """A hook: its name, run, status, expiry, payload and payload schema."""
    require_storage()
    hook = run_async(find_hook(reference, run_id))
    schema = payload_schema(hook)
    fields = [
        ("name", hook.name),
        ("status", hook.status.value),
        ("run id", hook.run_id),
        ("hook id", hook.hook_id),
        ("token", hook.token or UNKNOWN_TOKEN),
        ("created", when(hook.created_at)),
        ("expires", when(hook.expires_at)),
        ("received", when(hook.received_at)),
        ("payload", hook.payload or "-"),
        ("payload schema", hook.schema_path or "-"),
    ]
    if schema is not None:
        fields.append(("schema", compact_json(schema)))
    emit_fields(fields, output_of(output), {**hook_record(hook), "schema": schema})


# -- answering ----------------------------------------------------------------------------------

payload_options = (
    click.option("--payload", default=None, help="The payload, a JSON text."),
    click.option(
        "--payload-file",
        type=click.File("r"),
        default=None,
        help="A file holding the payload as JSON ('-': stdin).",
    ),
)


def _with_payload_options(func: Any) -> Any:
    for option in reversed(payload_options):
        func = option(func)
    return func


_MISSING = object()


def _payload(payload: str | None, payload_file: IO[str] | None) -> Any:
    """The payload given (``_MISSING`` when neither option was)."""
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    if payload is None and payload_file is None:
        return _MISSING
    if payload is not None:
        text = payload
    else:
        assert payload_file is not None
        text = payload_file.read()
    try:
        return parse_json(text)
    except ValueError as exc:
        hint = "--payload" if payload is not None else "--payload-file"
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _deliver(token: str, payload: Any, output: str) -> None:
    """``resume_hook``, advance the run here (local runtime), and say where it stands."""

    async def deliver() -> tuple[ResumeResult, WorkflowRun | None]:
        received = await resume_hook(token, payload)
        await advance_local_runs()
        return received, await get_workflow_run(received.run_id)

    received, run = run_async(deliver())
    status = run.status.value if run is not None else "unknown"
    if output == "json":
        echo_json(
            {
                "run_id": received.run_id,
                "hook_id": received.hook_id,
                "status": received.status,
                "run_status": status,
            }
        )
    elif output == "plain":
        click.echo(f"{received.run_id}\t{received.hook_id}\t{received.status}\t{status}")
    else:
        click.echo(f"hook {received.hook_id} of run {received.run_id} received; run {status}")
    unadvanced = run is not None and run.workflow_name not in list_workflows()
    if unadvanced and run is not None and not run.status.is_terminal and local_runtime():
        click.echo(
            f"(workflow {run.workflow_name!r} is not imported here, so the run was not"
            " advanced: it goes on with a process that has it, or use --module)",
            err=True,
        )


@hooks.command("resume")
@click.argument("token")
@_with_payload_options
@output_option
def resume_command(
    token: str, payload: str | None, payload_file: IO[str] | None, output: str | None
) -> None:
    """Deliver a payload to the hook TOKEN names, and advance its run."""
    value = _payload(payload, payload_file)
    if value is _MISSING:
        raise click.UsageError("give the payload: --payload JSON or --payload-file FILE")
    require_storage()
    _deliver(token, value, output_of(output))


def _choose_token() -> str:
    """At a terminal: the pending hooks, numbered, and the one the user picks."""
    pending = run_async(list_hooks(status=HookStatus.PENDING))
    if not pending:
        raise click.ClickException("no hook is waiting for a payload")
    rows = [
        [str(index), hook.run_id, hook.name, when(hook.created_at), when(hook.expires_at)]
        for index, hook in enumerate(pending, start=1)
    ]
    print_table(rows_table(CHOICE_COLUMNS, rows))
    chosen = click.prompt("hook", type=click.IntRange(1, len(pending)), default=1)
    token: str | None = pending[chosen - 1].token
    if token is None:
        raise click.ClickException(
            "this process's hook key did not create that hook: configure the deployment's"
            " hook_key (PYWORKFLOW_HOOK_KEY)"
        )
    return token


def _ask_payload(token: str) -> Any:
    hook = run_async(find_hook(token))
    schema = payload_schema(hook)
    if schema is not None:
        click.echo(f"payload schema of hook {hook.name!r}: {compact_json(schema)}")
    return click.prompt(f"payload for hook {hook.name!r} (JSON)", type=JsonType())


@hooks.command("run")
@click.argument("token", required=False)
@_with_payload_options
@output_option
def run_command(
    token: str | None, payload: str | None, payload_file: IO[str] | None, output: str | None
) -> None:
    """Answer a hook interactively: at a terminal, pick one of the pending hooks and type its
    payload; with TOKEN and --payload, the same as resume."""
    value = _payload(payload, payload_file)
    require_storage()
    if token is None:
        if not interactive():
            raise click.UsageError(
                "missing TOKEN (prompting needs a terminal; pyworkflow hooks list shows tokens)"
            )
        token = _choose_token()
    if value is _MISSING:
        if not interactive():
            raise click.UsageError("give the payload: --payload JSON or --payload-file FILE")
        value = _ask_payload(token)
    _deliver(token, value, output_of(output))


__all__ = ["find_hook", "hooks", "list_hooks", "payload_schema"]
