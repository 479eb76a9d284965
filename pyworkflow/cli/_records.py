"""Runs, events and hooks as the commands show them: JSON records, table cells, detail fields.

One shape per kind of record, shared by every command that shows it (``runs``, ``workflows run``,
``hooks``). A blocked run (``WorkflowRun.blocked``: suspended until its code is fixed) shows the
status ``blocked`` in tables and plain lines; its JSON keeps ``"status": "suspended"`` with a
``"blocked"`` object beside it (null for a run that is not blocked). Pure formatting: nothing
here reads storage.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from pyworkflow.cli._output import (
    Column,
    cell,
    echo_json,
    json_text,
    print_table,
    rows_table,
    shorten,
    when,
)
from pyworkflow.model.events import Event
from pyworkflow.model.schemas import Blocked, Hook, WorkflowRun

# -- runs ---------------------------------------------------------------------------------------

RUN_COLUMNS = (
    Column("run id", no_wrap=True),
    Column("workflow"),
    Column("status", styled=True),
    Column("created"),
    Column("updated"),
    Column("events", numeric=True),
)


def status_word(run: WorkflowRun) -> str:
    """``blocked`` for a blocked run, else the run's status."""
    return "blocked" if run.blocked is not None else run.status.value


def blocked_record(blocked: Blocked | None) -> dict[str, Any] | None:
    if blocked is None:
        return None
    return {
        "kind": blocked.kind.value,
        "error_type": blocked.error_type,
        "message": blocked.message,
        "since": blocked.since.isoformat(),
        "owner": blocked.owner,
        "detail": blocked.detail,
    }


def run_record(run: WorkflowRun) -> dict[str, Any]:
    """A run in a listing (``runs list``, ``runs children``, ``runs chain``) as JSON."""
    return {
        "run_id": run.run_id,
        "workflow": run.workflow_name,
        "status": run.status.value,
        "blocked": blocked_record(run.blocked),
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.updated_at),
        "events": run.last_sequence,
    }


def run_cells(run: WorkflowRun, exact: bool) -> list[str]:
    return [
        run.run_id,
        run.workflow_name,
        status_word(run),
        when(run.created_at, exact),
        when(run.updated_at, exact),
        str(run.last_sequence),
    ]


def short_type(name: str) -> str:
    """``builtins:ValueError`` (how logs name exception types) -> ``ValueError``."""
    return name.rpartition(":")[2]


def decoded(text: str | None) -> Any:
    """A JSON text field of a run (arguments, result) as its value; the text if it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_detail(
    run: WorkflowRun,
    *,
    error_type: str | None = None,
    hooks: list[Hook] | None = None,
    wake_at: datetime | None = None,
) -> dict[str, Any]:
    """Everything ``runs status`` knows of a run, as JSON. ``hooks`` are the pending hooks it
    waits on, ``wake_at`` its next durable wake-up (sleep, retry, timeout)."""
    blocked = run.blocked
    return {
        **run_record(run),
        "started_at": _iso(run.started_at),
        "completed_at": _iso(run.completed_at),
        "args": decoded(run.input_args),
        "kwargs": decoded(run.input_kwargs),
        "result": decoded(run.result),
        "error": None if blocked is not None else run.error,
        "error_type": error_type,
        "parent_run_id": run.parent_run_id,
        "nesting_depth": run.nesting_depth,
        "continued_from_run_id": run.continued_from_run_id,
        "continued_to_run_id": run.continued_to_run_id,
        "idempotency_key": run.idempotency_key,
        "recovery_attempts": run.recovery_attempts,
        "waiting": {
            "hooks": [hook_waiting(hook) for hook in hooks or []],
            "wake_at": _iso(wake_at),
        },
    }


# Shown for a hook whose token this process cannot derive (another hook key created it).
UNKNOWN_TOKEN = "(unknown: another hook key)"


def hook_waiting(hook: Hook) -> dict[str, Any]:
    return {"name": hook.name, "token": hook.token, "expires_at": _iso(hook.expires_at)}


def run_fields(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """``run_detail`` as field/value pairs: the block first, when there is one."""
    blocked = detail["blocked"]
    status = detail["status"]
    fields = [
        ("run id", detail["run_id"]),
        ("workflow", detail["workflow"]),
        ("status", f"blocked (status {status})" if blocked else status),
    ]
    if blocked:
        fields += blocked_fields(blocked)
    fields += [
        ("created", cell(detail["created_at"])),
        ("started", cell(detail["started_at"])),
        ("updated", cell(detail["updated_at"])),
        ("completed", cell(detail["completed_at"])),
        ("events", str(detail["events"])),
        ("args", cell(_json_text(detail["args"]))),
        ("kwargs", cell(_json_text(detail["kwargs"]))),
    ]
    optional = (
        ("result", _json_text(detail["result"]) if detail["status"] == "completed" else None),
        ("error", detail["error"]),
        ("error type", detail["error_type"]),
        ("parent", detail["parent_run_id"]),
        ("continued from", detail["continued_from_run_id"]),
        ("continued to", detail["continued_to_run_id"]),
        ("idempotency key", detail["idempotency_key"]),
        ("wakes at", detail["waiting"]["wake_at"]),
    )
    fields += [(name, cell(value)) for name, value in optional if value is not None]
    for hook in detail["waiting"]["hooks"]:
        token = hook["token"] or UNKNOWN_TOKEN
        fields.append(("waits on hook", f"{hook['name']}  token {token}"))
    return fields


def blocked_fields(blocked: dict[str, Any]) -> list[tuple[str, str]]:
    """Why a run is blocked, and for non-determinism the divergence (position, expected,
    actual, location), one field each."""
    fields = [
        ("blocked", f"{blocked['kind']}: {blocked['error_type']}"),
        ("reason", blocked["message"]),
        ("blocked since", cell(blocked["since"])),
    ]
    if blocked.get("owner"):
        fields.append(("blocked by", str(blocked["owner"])))
    detail = blocked.get("detail") or {}
    last = len(_DIVERGENCE_ORDER)
    for key in sorted(detail, key=lambda key: _DIVERGENCE_ORDER.get(key, last)):  # (stable)
        fields.append((f"  {key}", cell(detail[key])))
    return fields


# The divergence of a non-determinism block, read in this order; other detail keys follow.
_DIVERGENCE_ORDER = {"position": 0, "expected": 1, "actual": 2, "location": 3}


def _json_text(value: Any) -> str | None:
    return None if value is None else json_text(value)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- events -------------------------------------------------------------------------------------

# Fixed widths for the first columns: a log printed in batches (``--follow``) lines up.
EVENT_COLUMNS = (
    Column("seq", numeric=True, width=5),
    Column("time", width=24),
    Column("type", width=31),
    Column("command", min_width=24),
    Column("data"),
)
# The data fields worth a glance, in this order (``exception`` is left out: it is long).
_SUMMARY_KEYS = (
    "workflow_name",
    "step_name",
    "attempt",
    "name",
    "child_workflow_name",
    "child_run_id",
    "args",
    "kwargs",
    "result",
    "payload",
    "error_type",
    "error",
    "reason",
    "resume_at",
    "expires_at",
    "continued_to_run_id",
    "recovery_attempt",
    "children",
)


def event_summary(event: Event, limit: int = 60) -> str:
    """The key data of an event: ``step_name=charge attempt=2 error=...``."""
    parts = []
    for key in _SUMMARY_KEYS:
        if key in event.data and event.data[key] not in (None, "", [], {}):
            value = event.data[key]
            text = value if isinstance(value, str) else json_text(value)
            parts.append(f"{key}={shorten(text, limit)}")
    return " ".join(parts)


def event_cells(event: Event, exact: bool) -> list[str]:
    moment = event.timestamp
    if moment is None:
        shown = "-"
    elif exact:
        shown = when(moment, exact=True)
    else:
        shown = when(moment).removesuffix("Z") + f".{moment.microsecond // 1000:03d}Z"
    return [
        str(event.sequence),
        shown,
        event.type.value,
        event.data.get("command_id") or "-",
        event_summary(event, limit=10_000 if exact else 60) or "-",
    ]


def event_record(event: Event) -> dict[str, Any]:
    return event.to_dict()


def print_events(events: list[Event], output: str, *, header: bool, err: bool = False) -> None:
    """A batch of a log as it grows (``runs logs --follow``, ``workflows run``): table rows of
    fixed widths (``header`` on the first batch), tab-separated lines, or JSON Lines (on stderr,
    ``err``, a JSON stream would be noise: plain lines there)."""
    if not events:
        return
    if output == "json" and not err:
        for event in events:
            echo_json(event_record(event), lines=True, err=err)
    elif output in ("plain", "json"):
        for event in events:
            click.echo("\t".join(event_cells(event, True)), err=err)
    else:
        rows = [event_cells(event, False) for event in events]
        print_table(rows_table(EVENT_COLUMNS, rows, header=header), err=err)


# -- hooks --------------------------------------------------------------------------------------

HOOK_COLUMNS = (
    Column("run id", no_wrap=True),
    Column("hook id"),
    Column("name"),
    Column("status", styled=True),
    Column("created"),
    Column("expires"),
    Column("token", no_wrap=True),
)


def hook_record(hook: Hook) -> dict[str, Any]:
    return {
        "token": hook.token,
        "hook_id": hook.hook_id,
        "run_id": hook.run_id,
        "name": hook.name,
        "status": hook.status.value,
        "created_at": _iso(hook.created_at),
        "expires_at": _iso(hook.expires_at),
        "received_at": _iso(hook.received_at),
        "payload": decoded(hook.payload),
        "payload_schema": hook.schema_path,
    }


def hook_cells(hook: Hook, exact: bool) -> list[str]:
    return [
        hook.run_id,
        hook.hook_id,
        hook.name,
        hook.status.value,
        when(hook.created_at, exact),
        when(hook.expires_at, exact),
        hook.token or UNKNOWN_TOKEN,
    ]


__all__ = [
    "EVENT_COLUMNS",
    "HOOK_COLUMNS",
    "RUN_COLUMNS",
    "blocked_fields",
    "blocked_record",
    "decoded",
    "event_cells",
    "event_record",
    "event_summary",
    "hook_cells",
    "hook_record",
    "UNKNOWN_TOKEN",
    "hook_waiting",
    "print_events",
    "run_cells",
    "run_detail",
    "run_fields",
    "run_record",
    "short_type",
    "status_word",
]
