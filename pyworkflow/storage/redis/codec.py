"""The Redis backend's data layout: key names, and records <-> hash fields and script arguments.

Key layout (``P`` is the ``prefix``; ``<ix>`` is ``<created_at as 18 digits>:<run_id>``, so that
byte order is ``(created_at, run_id)`` order; ``<hk>`` is ``<run_id>\\0<hook_id>``, whose byte
order is ``(run_id, hook_id)`` order)::

    P:version                          layout version (``LAYOUT_VERSION``), set on connect
    P:run:<run_id>                     hash: the run record (times as integer microseconds)
    P:log:<run_id>                     list: event ``n`` at index ``n - 1``, as JSON text
                                       ``[type, timestamp micros, data]``
    P:done:<run_id>                    set: completion keys recorded in the log
    P:cmd:<run_id>                     hash: command_id -> comma-separated sequences of its events
    P:idem                             hash: idempotency key -> run_id
    P:runs, P:runs:status:<s>,         zsets (score 0, members <ix>): ``list_runs`` indexes, all
      P:runs:name:<n>,                 runs, by status, by workflow name, by both
      P:runs:status:<s>:name:<n>
    P:timer                            hash: run_id -> fire_at micros (one timer per run)
    P:timers:free                      zset: unclaimed timers scored by fire_at
    P:timers:claimed                   zset: claimed timers scored by claimed_until
    P:leases:free                      zset: pending/running runs without a lease, by updated_at
    P:leases:held                      zset: pending/running runs with a lease, by its expiry
    P:hook:<hk>                        hash: the hook record
    P:hooks, P:hooks:status:<s>        zsets (score 0, members <hk>): ``list_hooks`` indexes
    P:checkpoints:<run_id>             hash: step_id -> checkpoint data
    P:checkpoints:pyworkflow:secrets   hash: the deployment secrets the storage keeps
                                       (``keep_secret``: the hook key when none is configured)

The invariants that tie the timer and lease indexes to the records are kept by the Lua scripts and
written next to them (``pyworkflow.storage.redis.scripts``).

Values are encoded as the SQL backends encode their rows (``pyworkflow.storage.sql``): times as
integer microseconds since the Unix epoch, ``context``/``metadata``/event ``data`` as compact
JSON text; absent fields stand for None.

This module must never do I/O or import redis-py: it only turns values into strings and back, so
that what is stored can be read (and tested) without a server. Changing what it writes changes
the stored layout, which needs a new ``LAYOUT_VERSION``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.schemas import Hook, HookStatus, Notice, RunStatus, WorkflowRun
from pyworkflow.serialization.jsontext import dump_text
from pyworkflow.storage.base import damaged_event, unknown_event_type
from pyworkflow.storage.values import micros

# 2: hook rows keep the token's digest (``sha256:``), a run's hash keeps its arguments in its log
# (``input_args`` empty), a received hook's payload is empty (in its ``hook.received``), later
# attempts of a dispatched step mention their arguments. Layout 1 data reads correctly.
LAYOUT_VERSION = 2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The ``list_runs`` index orders by text, so creation times are written as 18 digits counted from
# the earliest datetime: every datetime fits, none is negative.
_INDEX_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_INDEX_OFFSET = -((_INDEX_ORIGIN - _EPOCH) // timedelta(microseconds=1))
_dumps: Callable[[Any], str] = dump_text
# Event data is written by the engine (str keys, strings, small ints, bools): orjson reads it.
_loads: Callable[[str | bytes], Any] = orjson.loads
_EVENT_TYPES = {event_type.value: event_type for event_type in EventType}
Fields = list[str | int]


def from_micros(micros: str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(micros))


def _time_or_none(micros: str | None) -> datetime | None:
    return from_micros(micros) if micros is not None else None


def key_name(prefix: str, *parts: str) -> str:
    """The name of a key under ``prefix`` (see the layout above): ``key_name(P, "run", id)``."""
    return ":".join((prefix, *parts))


def opt(value: str | None) -> str:
    """An optional string as a script argument: ``""`` for None, ``"=" + value`` otherwise."""
    return "" if value is None else "=" + value


def run_index_member(created_at: datetime, run_id: str) -> str:
    return f"{micros(created_at) + _INDEX_OFFSET:018d}:{run_id}"


def hook_member(run_id: str, hook_id: str) -> str:
    return f"{run_id}\0{hook_id}"


def add_optional(fields: Fields, name: str, value: str | int | None) -> None:
    if value is not None:
        fields += (name, value)


def run_fields(run: WorkflowRun) -> Fields:
    """The hash fields of a stored run (``None`` values are left out)."""
    assert run.created_at is not None and run.updated_at is not None
    fields: Fields = [
        "run_id",
        run.run_id,
        "workflow_name",
        run.workflow_name,
        "status",
        run.status.value,
        "created_at",
        micros(run.created_at),
        "updated_at",
        micros(run.updated_at),
        "input_args",
        run.input_args,
        "input_kwargs",
        run.input_kwargs,
        "context",
        _dumps(run.context),
        "recovery_attempts",
        run.recovery_attempts,
        "max_recovery_attempts",
        run.max_recovery_attempts,
        "recover_on_worker_loss",
        int(run.recover_on_worker_loss),
        "nesting_depth",
        run.nesting_depth,
        "last_sequence",
        run.last_sequence,
        "_ix",
        run_index_member(run.created_at, run.run_id),
    ]
    for name, value in (
        ("result", run.result),
        ("error", run.error),
        ("idempotency_key", run.idempotency_key),
        ("max_duration", run.max_duration),
        ("parent_run_id", run.parent_run_id),
        ("continued_from_run_id", run.continued_from_run_id),
        ("continued_to_run_id", run.continued_to_run_id),
        ("lease_owner", run.lease_owner),
    ):
        add_optional(fields, name, value)
    for name, instant in (
        ("started_at", run.started_at),
        ("completed_at", run.completed_at),
        ("lease_expires_at", run.lease_expires_at),
    ):
        add_optional(fields, name, micros(instant) if instant is not None else None)
    return fields


def pairs(reply: list[str] | dict[str, str]) -> dict[str, str]:
    """A hash from an ``HGETALL`` reply: a map in RESP3, a flat list in RESP2 and in scripts."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def run_from_hash(h: dict[str, str]) -> WorkflowRun:
    get = h.get
    return WorkflowRun(
        run_id=h["run_id"],
        workflow_name=h["workflow_name"],
        status=RunStatus(h["status"]),
        created_at=from_micros(h["created_at"]),
        updated_at=from_micros(h["updated_at"]),
        started_at=_time_or_none(get("started_at")),
        completed_at=_time_or_none(get("completed_at")),
        input_args=h["input_args"],
        input_kwargs=h["input_kwargs"],
        result=get("result"),
        error=get("error"),
        idempotency_key=get("idempotency_key"),
        max_duration=get("max_duration"),
        context=_loads(h["context"]),
        recovery_attempts=int(h["recovery_attempts"]),
        max_recovery_attempts=int(h["max_recovery_attempts"]),
        recover_on_worker_loss=h["recover_on_worker_loss"] == "1",
        parent_run_id=get("parent_run_id"),
        nesting_depth=int(h["nesting_depth"]),
        continued_from_run_id=get("continued_from_run_id"),
        continued_to_run_id=get("continued_to_run_id"),
        last_sequence=int(h["last_sequence"]),
        lease_owner=get("lease_owner"),
        lease_expires_at=_time_or_none(get("lease_expires_at")),
    )


def hook_fields(run_id: str, hook: Hook) -> Fields:
    fields: Fields = [
        "run_id",
        run_id,
        "hook_id",
        hook.hook_id,
        "name",
        hook.name,
        "token",
        hook.token_hash,
        "command_id",
        hook.command_id,
        "status",
        hook.status.value,
        "metadata",
        _dumps(hook.metadata),
    ]
    add_optional(fields, "payload", hook.payload)
    add_optional(fields, "schema_path", hook.schema_path)
    for name, instant in (
        ("created_at", hook.created_at),
        ("expires_at", hook.expires_at),
        ("received_at", hook.received_at),
    ):
        add_optional(fields, name, micros(instant) if instant is not None else None)
    return fields


def hook_from_hash(h: dict[str, str]) -> Hook:
    get = h.get
    return Hook(
        hook_id=h["hook_id"],
        run_id=h["run_id"],
        name=h["name"],
        token_hash=h["token"],
        command_id=h["command_id"],
        status=HookStatus(h["status"]),
        created_at=_time_or_none(get("created_at")),
        expires_at=_time_or_none(get("expires_at")),
        received_at=_time_or_none(get("received_at")),
        payload=get("payload") or None,
        schema_path=get("schema_path"),
        metadata=_loads(h["metadata"]),
    )


def event_args(run_id: str, events: list[Event], now: datetime) -> Fields:
    """Three script arguments per event: its log entry, completion key and command id."""
    args: Fields = [len(events)]
    for event in events:
        if event.run_id != run_id:
            raise ValueError(f"an event of run {event.run_id} in a commit to run {run_id}")
        entry = _dumps([event.type.value, micros(event.timestamp or now), event.data])
        args += (entry, event.completion_key or "", opt(event.command_id))
    return args


def new_run_args(record: WorkflowRun, events: list[Event]) -> Fields:
    """A run a commit creates (``new_run_record``'s), as the commit script reads it: its id,
    index member, status, workflow name, hash fields (count first) and first events."""
    assert record.created_at is not None
    fields = run_fields(record)
    return [
        record.run_id,
        run_index_member(record.created_at, record.run_id),
        record.status.value,
        record.workflow_name,
        len(fields),
        *fields,
        *event_args(record.run_id, events, record.created_at),
    ]


def notice_args(notice: Notice, now: datetime) -> Fields:
    """Five script arguments per notice: its run (after "+" when it follows a chain, "=" when
    not), wake-up ("" for none), and its event's log entry, completion key and command id
    (stamped ``now`` if unstamped; the event is left as is, whatever run the script appends it
    to)."""
    event = notice.event
    entry = _dumps([event.type.value, micros(event.timestamp or now), event.data])
    return [
        ("+" if notice.follow_chain else "=") + notice.run_id,
        micros(notice.wake_at) if notice.wake_at is not None else "",
        entry,
        event.completion_key or "",
        opt(event.command_id),
    ]


def events_from_entries(run_id: str, first: int, entries: list[str]) -> list[Event]:
    """Events from consecutive log entries, the first of which has sequence ``first``."""
    # The hot loop of a cold replay: everything it calls is bound to a local first.
    # ``Event.restore`` converts its time lazily and exactly below 2**53 microseconds (until the
    # year 2255); a time beyond that is converted here, exactly.
    types, loads, restore, limit = _EVENT_TYPES, _loads, Event.restore, 2**53
    events = []
    for sequence, entry in enumerate(entries, start=first):
        try:
            kind, micros, data = loads(entry)
        except Exception as exc:  # noqa: BLE001 - a damaged entry: say which
            raise damaged_event(run_id, sequence, "?", exc) from exc
        event_type = types.get(kind)
        if event_type is None:
            raise unknown_event_type(run_id, sequence, kind)
        if -limit < micros < limit:
            events.append(restore(run_id, event_type, data, micros, sequence))
        else:
            events.append(Event(run_id, event_type, data, from_micros(micros), sequence))
    return events
