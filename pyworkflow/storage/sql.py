"""The SQL layer of the SQLite and PostgreSQL backends: one schema, one set of statement texts, and
the one place that maps records to rows and rows back to records.

Statement texts are written once, with ``?`` placeholders and ``{runs}``-style table names, and a
``Dialect`` renders them for a backend: SQLite keeps ``?`` and bare table names; PostgreSQL numbers
the placeholders ``$1, $2, …`` and qualifies every table with its schema, so no statement depends
on the session's ``search_path`` (which keeps it usable behind pgbouncer's transaction pooling).
A template can also be rendered with expressions in place of its placeholders: that is how
PostgreSQL's commit function (a PL/pgSQL body) runs the very statements SQLite's commit runs.

Values are stored the same way by both: times as integer microseconds since the Unix epoch
(``storage/values.py``: exact, compact and ordered; they come back as aware UTC datetimes),
event ``data``, run ``context`` and hook ``metadata`` as compact JSON text. A row is any sequence
of column values (an ``sqlite3`` row tuple or an ``asyncpg.Record``), in the column order of the
statement that read it. A schedule is kept whole as ``schedule_to_json`` text (``data``), with the
columns it is found by beside it (``SCHEDULE_COLUMNS``); its ``poll_at`` column is the poll time
claims move, while ``data`` keeps the record as last written.

This module must never import a database driver, the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.model.schedules import Schedule, ScheduleStatus, schedule_to_json
from pyworkflow.model.schemas import Hook, HookStatus, RunStatus, WorkflowRun
from pyworkflow.serialization.jsontext import dump_text
from pyworkflow.storage.base import (
    LEASABLE_STATUSES,
    damaged_event,
    decode_run_cursor,
    encode_run_cursor,
    unknown_event_type,
    with_logged_args,
)
from pyworkflow.storage.values import EPOCH, micros, micros_or_none, time_of, time_or_none

Row = Sequence[Any]
Params = tuple[Any, ...]

# -- values -------------------------------------------------------------------------------------

dumps: Callable[[Any], str] = dump_text
# Event data is written by the engine (str keys, strings, small ints, bools): orjson reads it.
loads: Callable[[str | bytes], Any] = orjson.loads
_EVENT_TYPES = {event_type.value: event_type for event_type in EventType}


# -- records <-> rows ---------------------------------------------------------------------------

RUN_COLUMNS = (
    "run_id, workflow_name, status, created_at, updated_at, started_at, completed_at,"
    " input_args, input_kwargs, result, error, idempotency_key, max_duration, context,"
    " recovery_attempts, max_recovery_attempts, recover_on_worker_loss, parent_run_id,"
    " nesting_depth, continued_from_run_id, continued_to_run_id, last_sequence, lease_owner,"
    " lease_expires_at"
)
# What reads of a run select (``FROM {runs} AS r``): its columns, then, when its record keeps
# its arguments in its log (``IN_LOG``: every run written since values are stored once), the data
# of its ``workflow.started`` (``run_from_row`` takes them from there): one indexed lookup.
RUN_SELECT = (
    f"{RUN_COLUMNS}, CASE WHEN input_args = '' THEN (SELECT e.data FROM {{events}} AS e"
    " WHERE e.run_id = r.run_id AND e.sequence = 1) END"
)
HOOK_COLUMNS = (
    "run_id, hook_id, name, token, command_id, status, created_at, expires_at, received_at,"
    " payload, schema_path, metadata"
)
EVENT_COLUMNS = "run_id, sequence, type, timestamp, data, command_id, completion_key"
SCHEDULE_COLUMNS = "schedule_id, workflow_name, status, created_at, poll_at, revision, data"


def run_params(run: WorkflowRun) -> Params:
    """The ``RUN_COLUMNS`` values of a stored run (``created_at``/``updated_at`` are set)."""
    assert run.created_at is not None and run.updated_at is not None
    return (
        run.run_id,
        run.workflow_name,
        run.status.value,
        micros(run.created_at),
        micros(run.updated_at),
        micros_or_none(run.started_at),
        micros_or_none(run.completed_at),
        run.input_args,
        run.input_kwargs,
        run.result,
        run.error,
        run.idempotency_key,
        run.max_duration,
        dumps(run.context),
        run.recovery_attempts,
        run.max_recovery_attempts,
        run.recover_on_worker_loss,
        run.parent_run_id,
        run.nesting_depth,
        run.continued_from_run_id,
        run.continued_to_run_id,
        run.last_sequence,
        run.lease_owner,
        micros_or_none(run.lease_expires_at),
    )


def run_from_row(row: Row) -> WorkflowRun:
    run = WorkflowRun(
        run_id=row[0],
        workflow_name=row[1],
        status=RunStatus(row[2]),
        created_at=time_of(row[3]),
        updated_at=time_of(row[4]),
        started_at=time_or_none(row[5]),
        completed_at=time_or_none(row[6]),
        input_args=row[7],
        input_kwargs=row[8],
        result=row[9],
        error=row[10],
        idempotency_key=row[11],
        max_duration=row[12],
        context=loads(row[13]),
        recovery_attempts=row[14],
        max_recovery_attempts=row[15],
        recover_on_worker_loss=bool(row[16]),
        parent_run_id=row[17],
        nesting_depth=row[18],
        continued_from_run_id=row[19],
        continued_to_run_id=row[20],
        last_sequence=row[21],
        lease_owner=row[22],
        lease_expires_at=time_or_none(row[23]),
    )
    if len(row) > 24 and row[24] is not None:  # (``RUN_SELECT``: the arguments are in the log)
        try:
            started = loads(row[24])
        except ValueError:
            return run  # a damaged workflow.started: the activation reports it (corrupt_history)
        with_logged_args(run, started if isinstance(started, dict) else None)
    return run


def hook_params(run_id: str, hook: Hook) -> Params:
    """The ``HOOK_COLUMNS`` values of ``hook`` stored under ``run_id``."""
    return (
        run_id,
        hook.hook_id,
        hook.name,
        hook.token_hash,
        hook.command_id,
        hook.status.value,
        micros_or_none(hook.created_at),
        micros_or_none(hook.expires_at),
        micros_or_none(hook.received_at),
        hook.payload,
        hook.schema_path,
        dumps(hook.metadata),
    )


def hook_from_row(row: Row) -> Hook:
    return Hook(
        run_id=row[0],
        hook_id=row[1],
        name=row[2],
        token_hash=row[3],
        command_id=row[4],
        status=HookStatus(row[5]),
        created_at=time_or_none(row[6]),
        expires_at=time_or_none(row[7]),
        received_at=time_or_none(row[8]),
        payload=row[9],
        schema_path=row[10],
        metadata=loads(row[11]),
    )


def schedule_params(schedule: Schedule) -> Params:
    """The ``SCHEDULE_COLUMNS`` values of a stored schedule: its poll time is its ``poll_at``,
    a missing ``created_at`` is listed as the epoch (as the memory backend orders it)."""
    return (
        schedule.schedule_id,
        schedule.workflow_name,
        ScheduleStatus(schedule.status).value,
        micros(schedule.created_at) if schedule.created_at is not None else 0,
        micros_or_none(schedule.poll_at),
        schedule.revision,
        schedule_to_json(schedule),
    )


def event_rows(run_id: str, events: list[Event], now: datetime) -> list[Params]:
    """The ``EVENT_COLUMNS`` values of numbered events; an event without a time gets ``now``."""
    return [
        (
            run_id,
            event.sequence,
            event.type.value,
            micros(event.timestamp or now),
            dumps(event.data),
            event.command_id,
            event.completion_key,
        )
        for event in events
    ]


def events_from_rows(run_id: str, rows: Sequence[Row]) -> list[Event]:
    """Events of ``run_id`` from ``(sequence, type, timestamp, data)`` rows."""
    # The hot loop of a cold replay: everything it calls is bound to a local first.
    types, load, restore = _EVENT_TYPES, loads, Event.restore
    try:
        return [
            restore(run_id, types[kind], load(data), stamp, sequence)
            for sequence, kind, stamp, data in rows
        ]
    except Exception:  # noqa: BLE001 - a damaged row: say which (off the hot path)
        for sequence, kind, stamp, data in rows:
            event_type = types.get(kind)
            if event_type is None:
                raise unknown_event_type(run_id, sequence, kind) from None
            try:
                restore(run_id, event_type, load(data), stamp, sequence)
            except Exception as exc:  # noqa: BLE001
                raise damaged_event(run_id, sequence, kind, exc) from exc
        raise


def runs_page(rows: Sequence[Row], limit: int) -> tuple[list[WorkflowRun], str | None]:
    """A ``list_runs`` page from up to ``limit + 1`` rows: the runs and the next cursor."""
    page = [run_from_row(row) for row in rows[:limit]]
    if len(rows) <= limit:
        return page, None
    last = page[-1]
    assert last.created_at is not None
    return page, encode_run_cursor(last.created_at, last.run_id)


# -- dialects -----------------------------------------------------------------------------------

TABLES = ("runs", "events", "timers", "hooks", "checkpoints", "schedules", "schema_version")
_PLACEHOLDER = re.compile(r"\?")


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells the shared templates: table names, placeholders, column types."""

    table_prefix: str  # put before every table name: "" or a quoted schema and a dot
    numbered: bool  # placeholders are $1, $2, … (PostgreSQL) rather than ? (SQLite)
    id_type: str  # identifiers (run ids, hook ids): ordered by code point, as Python orders str
    int_type: str  # times in microseconds and sequence numbers
    bool_type: str
    without_rowid: str  # the clause of tables keyed by their primary key alone

    def render(self, template: str, args: Sequence[str] | None = None) -> str:
        """``template`` with tables named and placeholders numbered, or replaced by ``args``."""
        text = template.format(
            **{name: self.table_prefix + name for name in TABLES},
            id=self.id_type,
            int=self.int_type,
            bool=self.bool_type,
            without_rowid=self.without_rowid,
        )
        if args is not None:
            if len(args) != text.count("?"):
                raise ValueError(f"{len(args)} arguments for the placeholders of {template!r}")
            values = iter(args)
            text = _PLACEHOLDER.sub(lambda _: next(values), text)
        elif self.numbered:
            count = iter(range(1, 1000))
            text = _PLACEHOLDER.sub(lambda _: f"${next(count)}", text)
        return text


SQLITE = Dialect(
    table_prefix="",
    numbered=False,
    id_type="TEXT",
    int_type="INTEGER",
    bool_type="INTEGER",
    without_rowid=" WITHOUT ROWID",
)


def postgres_dialect(schema: str) -> Dialect:
    """PostgreSQL with every table in ``schema`` (a quoted identifier: see ``quote_identifier``)."""
    return Dialect(
        table_prefix=f"{quote_identifier(schema)}.",
        numbered=True,
        id_type='TEXT COLLATE "C"',
        int_type="BIGINT",
        bool_type="BOOLEAN",
        without_rowid="",
    )


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (a name can never become SQL)."""
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise ConfigurationError(
            f"a schema name must be 1 to 63 bytes without NUL characters, got {name!r}"
        )
    return '"' + name.replace('"', '""') + '"'


# -- the schema ---------------------------------------------------------------------------------

SCHEMA_1 = (
    """CREATE TABLE {runs} (
        run_id {id} PRIMARY KEY,
        workflow_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at {int} NOT NULL,
        updated_at {int} NOT NULL,
        started_at {int},
        completed_at {int},
        input_args TEXT NOT NULL,
        input_kwargs TEXT NOT NULL,
        result TEXT,
        error TEXT,
        idempotency_key TEXT,
        max_duration TEXT,
        context TEXT NOT NULL,
        recovery_attempts INTEGER NOT NULL,
        max_recovery_attempts INTEGER NOT NULL,
        recover_on_worker_loss {bool} NOT NULL,
        parent_run_id {id},
        nesting_depth INTEGER NOT NULL,
        continued_from_run_id {id},
        continued_to_run_id {id},
        last_sequence {int} NOT NULL,
        lease_owner TEXT,
        lease_expires_at {int}
    )""",
    "CREATE UNIQUE INDEX runs_idempotency_key ON {runs} (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX runs_created ON {runs} (created_at, run_id)",
    "CREATE INDEX runs_status ON {runs} (status, created_at, run_id)",
    "CREATE INDEX runs_workflow_name ON {runs} (workflow_name, created_at, run_id)",
    "CREATE INDEX runs_parent ON {runs} (parent_run_id) WHERE parent_run_id IS NOT NULL",
    """CREATE TABLE {events} (
        run_id {id} NOT NULL,
        sequence {int} NOT NULL,
        type TEXT NOT NULL,
        timestamp {int} NOT NULL,
        data TEXT NOT NULL,
        command_id TEXT,
        completion_key TEXT,
        PRIMARY KEY (run_id, sequence)
    ){without_rowid}""",
    "CREATE UNIQUE INDEX events_completion_key ON {events} (run_id, completion_key)"
    " WHERE completion_key IS NOT NULL",
    "CREATE INDEX events_command_id ON {events} (run_id, command_id)"
    " WHERE command_id IS NOT NULL",
    """CREATE TABLE {timers} (
        run_id {id} PRIMARY KEY,
        fire_at {int} NOT NULL,
        claimed_until {int}
    ){without_rowid}""",
    "CREATE INDEX timers_fire_at ON {timers} (fire_at)",
    """CREATE TABLE {hooks} (
        run_id {id} NOT NULL,
        hook_id {id} NOT NULL,
        name TEXT NOT NULL,
        token TEXT NOT NULL,
        command_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at {int},
        expires_at {int},
        received_at {int},
        payload TEXT,
        schema_path TEXT,
        metadata TEXT NOT NULL,
        PRIMARY KEY (run_id, hook_id)
    )""",
    "CREATE INDEX hooks_status ON {hooks} (status)",
    """CREATE TABLE {checkpoints} (
        run_id {id} NOT NULL,
        step_id {id} NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, step_id)
    ){without_rowid}""",
)
# The unique index whose violation means "this completion is already recorded".
COMPLETION_KEY_INDEX = "events_completion_key"

# The schedules table, created on connect where it is missing (databases made before schedules
# existed get it without a version step: older releases ignore it). The partial index on
# ``(poll_at, schedule_id)`` answers "what is due, earliest first" without reading the schedules
# that are not (or never: no poll time) due.
SCHEMA_SCHEDULES = (
    """CREATE TABLE IF NOT EXISTS {schedules} (
        schedule_id {id} PRIMARY KEY,
        workflow_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at {int} NOT NULL,
        poll_at {int},
        revision {int} NOT NULL,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS schedules_poll_at ON {schedules} (poll_at, schedule_id)"
    " WHERE poll_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS schedules_created ON {schedules} (created_at, schedule_id)",
)


def newer_schema_error(database: str, version: int, known: int) -> ConfigurationError:
    return ConfigurationError(
        f"the {database} database has schema version {version}, newer than this PyWorkflow"
        f" understands ({known}): upgrade pyworkflow-engine"
    )


# -- statements ---------------------------------------------------------------------------------

LEASABLE = tuple(status.value for status in LEASABLE_STATUSES)

# Templates (rendered by a ``Dialect``). Placeholders are bound in the order they appear.
T_CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS {schema_version} (version INTEGER NOT NULL)"
T_SELECT_VERSION = "SELECT version FROM {schema_version}"
T_INSERT_VERSION = "INSERT INTO {schema_version} (version) VALUES (?)"
T_UPDATE_VERSION = "UPDATE {schema_version} SET version = ?"

T_INSERT_RUN = f"INSERT INTO {{runs}} ({RUN_COLUMNS}) VALUES ({', '.join('?' * 24)})"
T_SELECT_RUN = f"SELECT {RUN_SELECT} FROM {{runs}} AS r WHERE run_id = ?"
T_SELECT_RUN_BY_KEY = f"SELECT {RUN_SELECT} FROM {{runs}} AS r WHERE idempotency_key = ?"
T_SELECT_CHILDREN = (
    f"SELECT {RUN_SELECT} FROM {{runs}} AS r WHERE parent_run_id = ? ORDER BY created_at, run_id"
)
# What a commit checks: the head, whether the run ended, and who holds its lease.
T_SELECT_HEAD = (
    "SELECT last_sequence, status, lease_owner, lease_expires_at FROM {runs} WHERE run_id = ?"
)
# What a commit changes on the run row (see ``Commit``): the fields it sets, the time, the head.
T_UPDATE_RUN_FIELDS = (
    "UPDATE {runs} SET status = COALESCE(?, status), result = COALESCE(?, result),"
    " error = COALESCE(?, error), started_at = COALESCE(?, started_at),"
    " completed_at = COALESCE(?, completed_at),"
    " recovery_attempts = COALESCE(?, recovery_attempts), updated_at = ?, last_sequence = ?"
)
T_UPDATE_RUN = T_UPDATE_RUN_FIELDS + " WHERE run_id = ?"
T_UPDATE_RUN_AND_LEASE = (
    T_UPDATE_RUN_FIELDS + ", lease_owner = ?, lease_expires_at = ? WHERE run_id = ?"
)
# The same without ``status`` (its first parameter), for a commit that keeps it (most do): an
# UPDATE that names an indexed column rewrites that index's page even when the value stays, which
# on SQLite doubled what a step's transaction wrote to the WAL.
_KEEP_STATUS = ("status = COALESCE(?, status), ", "")
T_UPDATE_RUN_KEEP_STATUS = T_UPDATE_RUN.replace(*_KEEP_STATUS)
T_UPDATE_RUN_AND_LEASE_KEEP_STATUS = T_UPDATE_RUN_AND_LEASE.replace(*_KEEP_STATUS)

T_INSERT_EVENT = f"INSERT INTO {{events}} ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
T_SELECT_EVENTS = (
    "SELECT sequence, type, timestamp, data FROM {events}"
    " WHERE run_id = ? AND sequence > ? ORDER BY sequence"
)
T_SELECT_COMMAND_EVENTS = (
    "SELECT sequence, type, timestamp, data FROM {events}"
    " WHERE run_id = ? AND sequence > ? AND command_id = ? ORDER BY sequence"
)

# What commits that reach other runs (``runs_created``, ``notices``, chains) run besides.
T_RUN_EXISTS = "SELECT 1 FROM {runs} WHERE run_id = ?"
T_SET_CONTINUED_TO = "UPDATE {runs} SET continued_to_run_id = ? WHERE run_id = ?"
# Where a notice goes: the run's head, whether it ended, and the run it continued as, if any.
T_SELECT_NOTICE_TARGET = (
    "SELECT last_sequence, status, continued_to_run_id FROM {runs} WHERE run_id = ?"
)
# A notice's event, unless its completion key is already recorded: the unique index decides
# without an error, which would abort a PostgreSQL transaction (a notice is skipped, not refused).
T_INSERT_EVENT_ONCE = (
    T_INSERT_EVENT
    + " ON CONFLICT (run_id, completion_key) WHERE completion_key IS NOT NULL DO NOTHING"
)
T_ADVANCE_RUN = "UPDATE {runs} SET last_sequence = ?, updated_at = ? WHERE run_id = ?"

T_SET_TIMER = (
    "INSERT INTO {timers} (run_id, fire_at, claimed_until) VALUES (?, ?, NULL)"
    " ON CONFLICT (run_id) DO UPDATE SET fire_at = excluded.fire_at, claimed_until = NULL"
)
T_CLEAR_TIMER = "DELETE FROM {timers} WHERE run_id = ?"
# Bound with ``now`` twice: due, and unclaimed or its claim ran out.
T_DUE_TIMERS_WHERE = " WHERE fire_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
T_DUE_TIMERS = (
    "SELECT run_id, fire_at FROM {timers}"
    + T_DUE_TIMERS_WHERE
    + " ORDER BY fire_at, run_id LIMIT ?"
)
T_SELECT_TIMER = "SELECT fire_at FROM {timers} WHERE run_id = ?"

T_RENEW_LEASE = "UPDATE {runs} SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ?"
# Bound with (*LEASABLE, now): pending or running, and no lease or an expired one.
T_EXPIRED_LEASES_WHERE = (
    " WHERE status IN (?, ?) AND (lease_owner IS NULL OR lease_expires_at <= ?)"
)
T_EXPIRED_LEASES = (
    "SELECT run_id FROM {runs}" + T_EXPIRED_LEASES_WHERE + " ORDER BY updated_at, run_id LIMIT ?"
)

T_INSERT_HOOK = (
    f"INSERT INTO {{hooks}} ({HOOK_COLUMNS}) VALUES ({', '.join('?' * 12)})"
    " ON CONFLICT (run_id, hook_id) DO NOTHING"
)
T_HOOK_STATUS = "SELECT status FROM {hooks} WHERE run_id = ? AND hook_id = ?"
# Bound with (received status, payload, received_at, run_id, hook_id).
T_RECEIVE_HOOK = (
    "UPDATE {hooks} SET status = ?, payload = ?, received_at = ? WHERE run_id = ? AND hook_id = ?"
)
T_EXPIRE_HOOK = "UPDATE {hooks} SET status = ? WHERE run_id = ? AND hook_id = ?"
# A hook of a run that ended, if it still waits (Commit.hooks_disposed).
T_DISPOSE_HOOK = (
    "UPDATE {hooks} SET status = 'disposed' WHERE run_id = ? AND hook_id = ? AND status = 'pending'"
)
T_SELECT_HOOK = f"SELECT {HOOK_COLUMNS} FROM {{hooks}} WHERE run_id = ? AND hook_id = ?"

T_PUT_CHECKPOINT = (
    "INSERT INTO {checkpoints} (run_id, step_id, data) VALUES (?, ?, ?)"
    " ON CONFLICT (run_id, step_id) DO UPDATE SET data = excluded.data"
)
T_ADD_CHECKPOINT = (
    "INSERT INTO {checkpoints} (run_id, step_id, data) VALUES (?, ?, ?)"
    " ON CONFLICT (run_id, step_id) DO NOTHING"
)
T_GET_CHECKPOINT = "SELECT data FROM {checkpoints} WHERE run_id = ? AND step_id = ?"
T_DELETE_CHECKPOINT = "DELETE FROM {checkpoints} WHERE run_id = ? AND step_id = ?"

# Inserts nothing when the id is taken (the caller then reads the stored schedule).
T_INSERT_SCHEDULE = (
    f"INSERT INTO {{schedules}} ({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (schedule_id) DO NOTHING"
)
T_SELECT_SCHEDULE = "SELECT data FROM {schedules} WHERE schedule_id = ?"
# Compare-and-set: bound with the new values (``SCHEDULE_COLUMNS`` after the id), the id and
# the expected revision; changes no row when the revision moved on or the schedule is unknown.
T_UPDATE_SCHEDULE = (
    "UPDATE {schedules} SET workflow_name = ?, status = ?, created_at = ?, poll_at = ?,"
    " revision = ?, data = ? WHERE schedule_id = ? AND revision = ?"
)
# Bound with ``now``: the schedules whose poll time has come (the partial index's range).
T_DUE_SCHEDULES_WHERE = " WHERE poll_at <= ?"
T_DUE_SCHEDULES = (
    "SELECT schedule_id, data FROM {schedules}"
    + T_DUE_SCHEDULES_WHERE
    + " ORDER BY poll_at, schedule_id LIMIT ?"
)
T_SET_SCHEDULE_POLL = "UPDATE {schedules} SET poll_at = ? WHERE schedule_id = ?"


def _where(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


class Statements:
    """The shared statements rendered for one dialect (constant texts: each is prepared once)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        sql = dialect.render
        self.schema_1 = [sql(statement) for statement in SCHEMA_1]
        self.create_version_table = sql(T_CREATE_VERSION_TABLE)
        self.select_version = sql(T_SELECT_VERSION)
        self.insert_version = sql(T_INSERT_VERSION)
        self.update_version = sql(T_UPDATE_VERSION)
        self.insert_run = sql(T_INSERT_RUN)
        self.select_run = sql(T_SELECT_RUN)
        self.select_run_by_key = sql(T_SELECT_RUN_BY_KEY)
        self.select_children = sql(T_SELECT_CHILDREN)
        self.select_head = sql(T_SELECT_HEAD)
        self.update_run = sql(T_UPDATE_RUN)
        self.update_run_and_lease = sql(T_UPDATE_RUN_AND_LEASE)
        self.update_run_keep_status = sql(T_UPDATE_RUN_KEEP_STATUS)
        self.update_run_and_lease_keep_status = sql(T_UPDATE_RUN_AND_LEASE_KEEP_STATUS)
        self.insert_event = sql(T_INSERT_EVENT)
        self.select_events = sql(T_SELECT_EVENTS)
        self.select_command_events = sql(T_SELECT_COMMAND_EVENTS)
        self.run_exists = sql(T_RUN_EXISTS)
        self.set_continued_to = sql(T_SET_CONTINUED_TO)
        self.select_notice_target = sql(T_SELECT_NOTICE_TARGET)
        self.insert_event_once = sql(T_INSERT_EVENT_ONCE)
        self.advance_run = sql(T_ADVANCE_RUN)
        self.set_timer = sql(T_SET_TIMER)
        self.clear_timer = sql(T_CLEAR_TIMER)
        self.due_timers = sql(T_DUE_TIMERS)
        self.select_timer = sql(T_SELECT_TIMER)
        self.renew_lease = sql(T_RENEW_LEASE)
        self.expired_leases = sql(T_EXPIRED_LEASES)
        self.insert_hook = sql(T_INSERT_HOOK)
        self.hook_status = sql(T_HOOK_STATUS)
        self.receive_hook = sql(T_RECEIVE_HOOK)
        self.expire_hook = sql(T_EXPIRE_HOOK)
        self.dispose_hook = sql(T_DISPOSE_HOOK)
        self.select_hook = sql(T_SELECT_HOOK)
        self.put_checkpoint = sql(T_PUT_CHECKPOINT)
        self.add_checkpoint = sql(T_ADD_CHECKPOINT)
        self.get_checkpoint = sql(T_GET_CHECKPOINT)
        self.delete_checkpoint = sql(T_DELETE_CHECKPOINT)
        self.schema_schedules = [sql(statement) for statement in SCHEMA_SCHEDULES]
        self.insert_schedule = sql(T_INSERT_SCHEDULE)
        self.select_schedule = sql(T_SELECT_SCHEDULE)
        self.update_schedule = sql(T_UPDATE_SCHEDULE)
        self.due_schedules = sql(T_DUE_SCHEDULES)
        self.set_schedule_poll = sql(T_SET_SCHEDULE_POLL)
        self._list_runs = {
            (s, n, c): sql(self._list_runs_template(s, n, c))
            for s in (False, True)
            for n in (False, True)
            for c in (False, True)
        }
        self._list_hooks = {
            (r, s): sql(self._list_hooks_template(r, s))
            for r in (False, True)
            for s in (False, True)
        }
        self._list_schedules = {
            (n, s): sql(self._list_schedules_template(n, s))
            for n in (False, True)
            for s in (False, True)
        }

    @staticmethod
    def _list_runs_template(by_status: bool, by_name: bool, after_cursor: bool) -> str:
        clauses = [
            clause
            for clause, wanted in (
                ("status = ?", by_status),
                ("workflow_name = ?", by_name),
                ("(created_at, run_id) > (?, ?)", after_cursor),
            )
            if wanted
        ]
        order = " ORDER BY created_at, run_id LIMIT ?"
        return f"SELECT {RUN_SELECT} FROM {{runs}} AS r{_where(clauses)}{order}"

    @staticmethod
    def _list_hooks_template(by_run: bool, by_status: bool) -> str:
        clauses = [
            clause
            for clause, wanted in (("run_id = ?", by_run), ("status = ?", by_status))
            if wanted
        ]
        return f"SELECT {HOOK_COLUMNS} FROM {{hooks}}{_where(clauses)} ORDER BY run_id, hook_id"

    @staticmethod
    def _list_schedules_template(by_name: bool, by_status: bool) -> str:
        clauses = [
            clause
            for clause, wanted in (("workflow_name = ?", by_name), ("status = ?", by_status))
            if wanted
        ]
        order = " ORDER BY created_at, schedule_id LIMIT ? OFFSET ?"
        return f"SELECT data FROM {{schedules}}{_where(clauses)}{order}"

    def list_runs(
        self,
        status: RunStatus | None,
        workflow_name: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[str, Params]:
        """The query of a ``list_runs`` page: up to ``limit + 1`` rows (one more tells if there
        is a next page), ordered by ``(created_at, run_id)`` after the cursor's run."""
        if limit < 1:
            raise ValueError(f"list_runs limit must be at least 1, got {limit}")
        params: list[Any] = []
        if status is not None:
            params.append(RunStatus(status).value)
        if workflow_name is not None:
            params.append(workflow_name)
        if cursor is not None:
            created_at, run_id = decode_run_cursor(cursor)
            params += (micros(created_at), run_id)
        params.append(limit + 1)
        sql = self._list_runs[(status is not None, workflow_name is not None, cursor is not None)]
        return sql, tuple(params)

    def list_hooks(self, run_id: str | None, status: HookStatus | None) -> tuple[str, Params]:
        params: list[Any] = []
        if run_id is not None:
            params.append(run_id)
        if status is not None:
            params.append(HookStatus(status).value)
        return self._list_hooks[(run_id is not None, status is not None)], tuple(params)

    def list_schedules(
        self,
        workflow_name: str | None,
        status: ScheduleStatus | None,
        limit: int,
        offset: int,
    ) -> tuple[str, Params]:
        """The query of a ``list_schedules`` page (``limit`` at least 1, ``offset`` at least 0:
        the caller answers other pages itself), ordered by ``(created_at, schedule_id)``."""
        params: list[Any] = []
        if workflow_name is not None:
            params.append(workflow_name)
        if status is not None:
            params.append(ScheduleStatus(status).value)
        params += (limit, offset)
        sql = self._list_schedules[(workflow_name is not None, status is not None)]
        return sql, tuple(params)


__all__ = [
    "COMPLETION_KEY_INDEX",
    "EPOCH",
    "LEASABLE",
    "SQLITE",
    "Dialect",
    "Statements",
    "event_rows",
    "events_from_rows",
    "hook_from_row",
    "hook_params",
    "micros",
    "micros_or_none",
    "newer_schema_error",
    "postgres_dialect",
    "quote_identifier",
    "run_from_row",
    "run_params",
    "runs_page",
    "schedule_params",
    "time_of",
    "time_or_none",
]
