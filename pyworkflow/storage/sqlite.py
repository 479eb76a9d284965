"""SQLite storage: the embedded default, one database file shared by the processes of a host.

Design decision: the standard library's ``sqlite3`` is called directly on the event loop thread.
A commit is tens of microseconds of work, and a hop to a thread per call (aiosqlite) costs more
than the write itself. The database runs in WAL mode with ``synchronous=NORMAL``: a commit
survives a process crash, and a power cut can lose the last commits but never corrupt the file.
``isolation_level=None`` leaves transactions to us: every write is one ``BEGIN IMMEDIATE`` …
``COMMIT``, rolled back on any error, so a ``Commit`` lands entirely or not at all. The busy
timeout is 0, so SQLite never sleeps on a lock while holding the loop: when another process holds
the lock, the operation is retried after ``await asyncio.sleep`` with a backoff growing from 1 ms
to 50 ms, and gives up with ``StorageBusyError`` after ``lock_timeout`` seconds. One backend
object is one connection, used from one event loop at a time.

Times are stored as integer microseconds since the Unix epoch: exact, compact and ordered; they
come back as aware UTC datetimes. Event ``data``, run ``context`` and hook ``metadata`` are
compact JSON text. All SQL is parameterized and its text constant, so the connection's statement
cache prepares each statement once.

The schema version lives in ``schema_version``; ``connect`` applies the missing steps of
``_MIGRATIONS`` (step ``i`` moves version ``i`` to ``i + 1``) in one transaction.

This module must never import the engine (only its event model) or a runtime, and never block
the event loop waiting for a lock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from pyworkflow.core.exceptions import ConfigurationError, SequenceConflictError
from pyworkflow.engine.events import Event, EventType
from pyworkflow.serialization.jsontext import dump_text
from pyworkflow.storage.base import (
    SCHEMA_VERSION,
    StorageBackend,
    already_exists,
    check_hook_pending,
    check_run_open,
    decode_run_cursor,
    duplicate_completion,
    encode_run_cursor,
    new_run_record,
    number_events,
    retry_while_busy,
    run_not_found,
)
from pyworkflow.storage.schemas import (
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
)

_T = TypeVar("_T")
_Row = tuple[Any, ...]

# -- schema -------------------------------------------------------------------------------------

_SCHEMA_1 = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        workflow_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        started_at INTEGER,
        completed_at INTEGER,
        input_args TEXT NOT NULL,
        input_kwargs TEXT NOT NULL,
        result TEXT,
        error TEXT,
        idempotency_key TEXT,
        max_duration TEXT,
        context TEXT NOT NULL,
        recovery_attempts INTEGER NOT NULL,
        max_recovery_attempts INTEGER NOT NULL,
        recover_on_worker_loss INTEGER NOT NULL,
        parent_run_id TEXT,
        nesting_depth INTEGER NOT NULL,
        continued_from_run_id TEXT,
        continued_to_run_id TEXT,
        last_sequence INTEGER NOT NULL,
        lease_owner TEXT,
        lease_expires_at INTEGER
    )""",
    "CREATE UNIQUE INDEX runs_idempotency_key ON runs (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX runs_created ON runs (created_at, run_id)",
    "CREATE INDEX runs_status ON runs (status, created_at, run_id)",
    "CREATE INDEX runs_workflow_name ON runs (workflow_name, created_at, run_id)",
    "CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
    """CREATE TABLE events (
        run_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        type TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        data TEXT NOT NULL,
        command_id TEXT,
        completion_key TEXT,
        PRIMARY KEY (run_id, sequence)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX events_completion_key ON events (run_id, completion_key)"
    " WHERE completion_key IS NOT NULL",
    "CREATE INDEX events_command_id ON events (run_id, command_id) WHERE command_id IS NOT NULL",
    """CREATE TABLE timers (
        run_id TEXT PRIMARY KEY,
        fire_at INTEGER NOT NULL,
        claimed_until INTEGER
    ) WITHOUT ROWID""",
    "CREATE INDEX timers_fire_at ON timers (fire_at)",
    """CREATE TABLE hooks (
        run_id TEXT NOT NULL,
        hook_id TEXT NOT NULL,
        name TEXT NOT NULL,
        token TEXT NOT NULL,
        command_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER,
        expires_at INTEGER,
        received_at INTEGER,
        payload TEXT,
        schema_path TEXT,
        metadata TEXT NOT NULL,
        PRIMARY KEY (run_id, hook_id)
    )""",
    "CREATE INDEX hooks_status ON hooks (status)",
    """CREATE TABLE checkpoints (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, step_id)
    ) WITHOUT ROWID""",
)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_1:
        conn.execute(statement)


_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_1]
assert len(_MIGRATIONS) == SCHEMA_VERSION, "a schema change needs its migration step"

# -- statements (constant text: the statement cache prepares each once) -------------------------

_RUN_COLUMNS = (
    "run_id, workflow_name, status, created_at, updated_at, started_at, completed_at,"
    " input_args, input_kwargs, result, error, idempotency_key, max_duration, context,"
    " recovery_attempts, max_recovery_attempts, recover_on_worker_loss, parent_run_id,"
    " nesting_depth, continued_from_run_id, continued_to_run_id, last_sequence, lease_owner,"
    " lease_expires_at"
)
_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 24)})"
_SELECT_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?"
_SELECT_RUN_BY_KEY = f"SELECT {_RUN_COLUMNS} FROM runs WHERE idempotency_key = ?"
_SELECT_HEAD = "SELECT last_sequence, status FROM runs WHERE run_id = ?"
_UPDATE_RUN_FIELDS = (
    "UPDATE runs SET status = COALESCE(?, status), result = COALESCE(?, result),"
    " error = COALESCE(?, error), started_at = COALESCE(?, started_at),"
    " completed_at = COALESCE(?, completed_at),"
    " recovery_attempts = COALESCE(?, recovery_attempts), updated_at = ?, last_sequence = ?"
)
_UPDATE_RUN = _UPDATE_RUN_FIELDS + " WHERE run_id = ?"
_UPDATE_RUN_AND_LEASE = (
    _UPDATE_RUN_FIELDS + ", lease_owner = ?, lease_expires_at = ? WHERE run_id = ?"
)


def _list_runs_sql(by_status: bool, by_name: bool, after_cursor: bool) -> str:
    clauses = [
        clause
        for clause, wanted in (
            ("status = :status", by_status),
            ("workflow_name = :workflow_name", by_name),
            ("(created_at, run_id) > (:created_at, :run_id)", after_cursor),
        )
        if wanted
    ]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at, run_id LIMIT :limit"


_LIST_RUNS = {
    (s, n, c): _list_runs_sql(s, n, c)
    for s in (False, True)
    for n in (False, True)
    for c in (False, True)
}

_INSERT_EVENT = (
    "INSERT INTO events (run_id, sequence, type, timestamp, data, command_id, completion_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_EVENTS = (
    "SELECT sequence, type, timestamp, data FROM events"
    " WHERE run_id = ? AND sequence > ? ORDER BY sequence"
)
_SELECT_COMMAND_EVENTS = (
    "SELECT sequence, type, timestamp, data FROM events"
    " WHERE run_id = ? AND sequence > ? AND command_id = ? ORDER BY sequence"
)

_SET_TIMER = (
    "INSERT INTO timers (run_id, fire_at, claimed_until) VALUES (?, ?, NULL)"
    " ON CONFLICT (run_id) DO UPDATE SET fire_at = excluded.fire_at, claimed_until = NULL"
)
_CLEAR_TIMER = "DELETE FROM timers WHERE run_id = ?"
_DUE_TIMERS_WHERE = " WHERE fire_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
_ANY_DUE_TIMER = "SELECT 1 FROM timers" + _DUE_TIMERS_WHERE + " LIMIT 1"
_DUE_TIMERS = (
    "SELECT run_id, fire_at FROM timers" + _DUE_TIMERS_WHERE + " ORDER BY fire_at, run_id LIMIT ?"
)
_CLAIM_TIMER = "UPDATE timers SET claimed_until = ? WHERE run_id = ?"
_SELECT_TIMER = "SELECT fire_at FROM timers WHERE run_id = ?"

_ACQUIRE_LEASE = (
    "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE run_id = ?"
    " AND (lease_owner IS NULL OR lease_expires_at <= ? OR lease_owner = ?)"
)
_RENEW_LEASE = "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ?"
_EXPIRED_LEASES_WHERE = " WHERE status IN (?, ?) AND (lease_owner IS NULL OR lease_expires_at <= ?)"
_ANY_EXPIRED_LEASE = "SELECT 1 FROM runs" + _EXPIRED_LEASES_WHERE + " LIMIT 1"
_EXPIRED_LEASES = (
    "SELECT run_id FROM runs" + _EXPIRED_LEASES_WHERE + " ORDER BY updated_at, run_id LIMIT ?"
)
_SET_LEASE = "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE run_id = ?"
_LEASABLE = (RunStatus.PENDING.value, RunStatus.RUNNING.value)

_HOOK_COLUMNS = (
    "run_id, hook_id, name, token, command_id, status, created_at, expires_at, received_at,"
    " payload, schema_path, metadata"
)
_INSERT_HOOK = (
    f"INSERT INTO hooks ({_HOOK_COLUMNS}) VALUES ({', '.join('?' * 12)})"
    " ON CONFLICT (run_id, hook_id) DO NOTHING"
)
_HOOK_STATUS = "SELECT status FROM hooks WHERE run_id = ? AND hook_id = ?"
_RECEIVE_HOOK = (
    "UPDATE hooks SET status = ?, payload = ?, received_at = ? WHERE run_id = ? AND hook_id = ?"
)
_EXPIRE_HOOK = "UPDATE hooks SET status = ? WHERE run_id = ? AND hook_id = ?"
_SELECT_HOOK = f"SELECT {_HOOK_COLUMNS} FROM hooks WHERE run_id = ? AND hook_id = ?"
_LIST_HOOKS = {
    (by_run, by_status): f"SELECT {_HOOK_COLUMNS} FROM hooks"
    + (" WHERE " if by_run or by_status else "")
    + " AND ".join(
        clause
        for clause, wanted in (("run_id = :run_id", by_run), ("status = :status", by_status))
        if wanted
    )
    + " ORDER BY run_id, hook_id"
    for by_run in (False, True)
    for by_status in (False, True)
}

_PUT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, step_id, data) VALUES (?, ?, ?)"
    " ON CONFLICT (run_id, step_id) DO UPDATE SET data = excluded.data"
)
_GET_CHECKPOINT = "SELECT data FROM checkpoints WHERE run_id = ? AND step_id = ?"
_DELETE_CHECKPOINT = "DELETE FROM checkpoints WHERE run_id = ? AND step_id = ?"

# -- values -------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_dumps: Callable[[Any], str] = dump_text
# Event data is written by the engine (str keys, strings, small ints, bools): orjson reads it.
_loads: Callable[[str | bytes], Any] = orjson.loads
_EVENT_TYPES = {event_type.value: event_type for event_type in EventType}


def _micros(value: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are rejected (storage keeps UTC)."""
    if value.tzinfo is None:
        raise ValueError(f"storage needs aware datetimes (UTC), got naive {value.isoformat()}")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _micros_or_none(value: datetime | None) -> int | None:
    return _micros(value) if value is not None else None


def _time(micros: int) -> datetime:
    # Exact for every microsecond count below 2**53 (until year 2255): the float division is
    # correctly rounded and fromtimestamp rounds back to the nearest microsecond.
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def _time_or_none(micros: int | None) -> datetime | None:
    return _EPOCH + timedelta(microseconds=micros) if micros is not None else None


def _run_params(run: WorkflowRun) -> _Row:
    assert run.created_at is not None and run.updated_at is not None
    return (
        run.run_id,
        run.workflow_name,
        run.status.value,
        _micros(run.created_at),
        _micros(run.updated_at),
        _micros_or_none(run.started_at),
        _micros_or_none(run.completed_at),
        run.input_args,
        run.input_kwargs,
        run.result,
        run.error,
        run.idempotency_key,
        run.max_duration,
        _dumps(run.context),
        run.recovery_attempts,
        run.max_recovery_attempts,
        run.recover_on_worker_loss,
        run.parent_run_id,
        run.nesting_depth,
        run.continued_from_run_id,
        run.continued_to_run_id,
        run.last_sequence,
        run.lease_owner,
        _micros_or_none(run.lease_expires_at),
    )


def _run_from_row(row: _Row) -> WorkflowRun:
    return WorkflowRun(
        run_id=row[0],
        workflow_name=row[1],
        status=RunStatus(row[2]),
        created_at=_time(row[3]),
        updated_at=_time(row[4]),
        started_at=_time_or_none(row[5]),
        completed_at=_time_or_none(row[6]),
        input_args=row[7],
        input_kwargs=row[8],
        result=row[9],
        error=row[10],
        idempotency_key=row[11],
        max_duration=row[12],
        context=_loads(row[13]),
        recovery_attempts=row[14],
        max_recovery_attempts=row[15],
        recover_on_worker_loss=bool(row[16]),
        parent_run_id=row[17],
        nesting_depth=row[18],
        continued_from_run_id=row[19],
        continued_to_run_id=row[20],
        last_sequence=row[21],
        lease_owner=row[22],
        lease_expires_at=_time_or_none(row[23]),
    )


def _hook_params(run_id: str, hook: Hook) -> _Row:
    return (
        run_id,
        hook.hook_id,
        hook.name,
        hook.token,
        hook.command_id,
        hook.status.value,
        _micros_or_none(hook.created_at),
        _micros_or_none(hook.expires_at),
        _micros_or_none(hook.received_at),
        hook.payload,
        hook.schema_path,
        _dumps(hook.metadata),
    )


def _hook_from_row(row: _Row) -> Hook:
    return Hook(
        run_id=row[0],
        hook_id=row[1],
        name=row[2],
        token=row[3],
        command_id=row[4],
        status=HookStatus(row[5]),
        created_at=_time_or_none(row[6]),
        expires_at=_time_or_none(row[7]),
        received_at=_time_or_none(row[8]),
        payload=row[9],
        schema_path=row[10],
        metadata=_loads(row[11]),
    )


def _event_rows(run_id: str, events: list[Event], now: datetime) -> list[_Row]:
    return [
        (
            run_id,
            event.sequence,
            event.type.value,
            _micros(event.timestamp or now),
            _dumps(event.data),
            event.command_id,
            event.completion_key,
        )
        for event in events
    ]


def _insert_events(
    conn: sqlite3.Connection, run_id: str, events: list[Event], now: datetime
) -> None:
    """Insert numbered events; the unique indexes turn a lost race into the right error."""
    try:
        conn.executemany(_INSERT_EVENT, _event_rows(run_id, events, now))
    except sqlite3.IntegrityError as exc:
        if "completion_key" in str(exc):
            keys = [key for key in (event.completion_key for event in events) if key is not None]
            raise duplicate_completion(run_id, keys) from None
        raise SequenceConflictError(f"run {run_id}: the log moved during the write") from exc


def _is_busy(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (exc.sqlite_errorcode & 0xFF) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction; roll back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    version = row[0] if row is not None else 0
    if version > len(_MIGRATIONS):
        raise ConfigurationError(
            f"the SQLite database has schema version {version}, newer than this PyWorkflow"
            f" understands ({len(_MIGRATIONS)}): upgrade pyworkflow-engine"
        )
    for step in _MIGRATIONS[version:]:
        step(conn)
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(_MIGRATIONS),))
    elif version < len(_MIGRATIONS):
        conn.execute("UPDATE schema_version SET version = ?", (len(_MIGRATIONS),))


class SQLiteStorageBackend(StorageBackend):
    """Storage in one SQLite database file (WAL); safe to share between processes of a host."""

    def __init__(
        self,
        db_path: str | os.PathLike[str] = "./pyworkflow_data/pyworkflow.db",
        *,
        lock_timeout: float = 10.0,
    ) -> None:
        self.db_path = str(db_path)
        self.lock_timeout = lock_timeout
        self._conn: sqlite3.Connection | None = None

    # -- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._conn is not None:
            return
        conn = self._open()
        try:
            await self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute("PRAGMA synchronous=NORMAL")
            await self._retry(lambda: _transaction(conn, _migrate))
        except BaseException:
            conn.close()
            raise
        if self._conn is not None:  # another task connected while this one waited
            conn.close()
            return
        self._conn = conn

    def _open(self) -> sqlite3.Connection:
        if self.db_path != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return sqlite3.connect(
                self.db_path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open SQLite database {self.db_path}: {exc}") from exc

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            await self.connect()
        assert self._conn is not None
        return self._conn

    async def _retry(self, attempt: Callable[[], _T]) -> _T:
        return await retry_while_busy(
            attempt, _is_busy, what=f"SQLite database {self.db_path}", timeout=self.lock_timeout
        )

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn or await self._connection()
        return await self._retry(lambda: _transaction(conn, work))

    async def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn or await self._connection()
        return await self._retry(lambda: work(conn))

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        record, numbered = new_run_record(run, events, datetime.now(UTC))

        def create(conn: sqlite3.Connection) -> tuple[WorkflowRun, bool]:
            existing = self._run_with_key(conn, record.idempotency_key)
            if existing is not None:
                return existing, False
            try:
                conn.execute(_INSERT_RUN, _run_params(record))
            except sqlite3.IntegrityError as exc:
                if "idempotency_key" in str(exc):  # the unique index is the final word
                    existing = self._run_with_key(conn, record.idempotency_key)
                    assert existing is not None
                    return existing, False
                raise already_exists(record.run_id) from None
            assert record.created_at is not None
            _insert_events(conn, record.run_id, numbered, record.created_at)
            return record, True

        return await self._write(create)

    @staticmethod
    def _run_with_key(conn: sqlite3.Connection, key: str | None) -> WorkflowRun | None:
        if key is None:
            return None
        row = conn.execute(_SELECT_RUN_BY_KEY, (key,)).fetchone()
        return _run_from_row(row) if row is not None else None

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        row = await self._read(lambda conn: conn.execute(_SELECT_RUN, (run_id,)).fetchone())
        return _run_from_row(row) if row is not None else None

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        return await self._read(lambda conn: self._run_with_key(conn, key))

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        if limit < 1:
            raise ValueError(f"list_runs limit must be at least 1, got {limit}")
        params: dict[str, Any] = {"limit": limit + 1}
        if status is not None:
            params["status"] = RunStatus(status).value
        if workflow_name is not None:
            params["workflow_name"] = workflow_name
        if cursor is not None:
            created_at, params["run_id"] = decode_run_cursor(cursor)
            params["created_at"] = _micros(created_at)
        sql = _LIST_RUNS[(status is not None, workflow_name is not None, cursor is not None)]
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        page = [_run_from_row(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        last = page[-1]
        assert last.created_at is not None
        return page, encode_run_cursor(last.created_at, last.run_id)

    # -- the log ------------------------------------------------------------------------------

    async def commit(self, commit: Commit) -> int:
        now = commit.now or datetime.now(UTC)
        return await self._write(lambda conn: self._apply_commit(conn, commit, now))

    def _apply_commit(self, conn: sqlite3.Connection, commit: Commit, now: datetime) -> int:
        run_id = commit.run_id
        row = conn.execute(_SELECT_HEAD, (run_id,)).fetchone()
        if row is None:
            raise run_not_found(run_id)
        events = number_events(commit, row[0], now)
        check_run_open(run_id, RunStatus(row[1]))
        # Hook moves are checked before the events go in: a second payload for a hook is
        # "already received" even though its hook.received event is a duplicate completion too.
        received, expired = commit.hook_received, commit.hook_expired
        if received is not None:
            self._check_hook_pending(conn, run_id, received[0])
        if expired is not None:
            self._check_hook_pending(conn, run_id, expired)
        if events:
            _insert_events(conn, run_id, events, now)
        head = row[0] + len(events)
        fields = (
            commit.status.value if commit.status is not None else None,
            commit.result,
            commit.error,
            _micros_or_none(commit.started_at),
            _micros_or_none(commit.completed_at),
            commit.recovery_attempts,
            _micros(now),
            head,
        )
        lease = commit.lease
        if isinstance(lease, tuple):
            conn.execute(_UPDATE_RUN_AND_LEASE, (*fields, lease[0], _micros(lease[1]), run_id))
        elif lease is None:
            conn.execute(_UPDATE_RUN_AND_LEASE, (*fields, None, None, run_id))
        else:
            conn.execute(_UPDATE_RUN, (*fields, run_id))
        timer = commit.timer
        if isinstance(timer, datetime):
            conn.execute(_SET_TIMER, (run_id, _micros(timer)))
        elif timer is None:
            conn.execute(_CLEAR_TIMER, (run_id,))
        if commit.hooks_created:
            conn.executemany(_INSERT_HOOK, [_hook_params(run_id, h) for h in commit.hooks_created])
        if received is not None:
            conn.execute(
                _RECEIVE_HOOK,
                (HookStatus.RECEIVED.value, received[1], _micros(now), run_id, received[0]),
            )
        if expired is not None:
            conn.execute(_EXPIRE_HOOK, (HookStatus.EXPIRED.value, run_id, expired))
        return head

    @staticmethod
    def _check_hook_pending(conn: sqlite3.Connection, run_id: str, hook_id: str) -> None:
        row = conn.execute(_HOOK_STATUS, (run_id, hook_id)).fetchone()
        check_hook_pending(run_id, hook_id, HookStatus(row[0]) if row is not None else None)

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        params: tuple[str | int, ...]
        if command_id is None:
            sql, params = _SELECT_EVENTS, (run_id, after_sequence)
        else:
            sql, params = _SELECT_COMMAND_EVENTS, (run_id, after_sequence, command_id)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        # The hot loop of a cold replay: everything it calls is bound to a local first.
        types, loads, restore = _EVENT_TYPES, _loads, Event.restore
        return [
            restore(run_id, types[kind], loads(data), micros, sequence)
            for sequence, kind, micros, data in rows
        ]

    # -- timers -------------------------------------------------------------------------------

    async def schedule_timer(self, run_id: str, fire_at: datetime) -> None:
        params = (run_id, _micros(fire_at))
        await self._write(lambda conn: conn.execute(_SET_TIMER, params))

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        at = _micros(now)
        # Polling is frequent and usually finds nothing: look before taking the write lock.
        if await self._read(lambda conn: conn.execute(_ANY_DUE_TIMER, (at, at)).fetchone()) is None:
            return []
        until = _micros(now + claim_for)

        def claim(conn: sqlite3.Connection) -> list[Timer]:
            rows = conn.execute(_DUE_TIMERS, (at, at, limit)).fetchall()
            conn.executemany(_CLAIM_TIMER, [(until, run_id) for run_id, _ in rows])
            return [Timer(run_id, _time(fire_at)) for run_id, fire_at in rows]

        return await self._write(claim)

    async def get_timer(self, run_id: str) -> Timer | None:
        row = await self._read(lambda conn: conn.execute(_SELECT_TIMER, (run_id,)).fetchone())
        return Timer(run_id, _time(row[0])) if row is not None else None

    # -- leases -------------------------------------------------------------------------------

    async def acquire_lease(
        self, run_id: str, owner: str, expires_at: datetime, now: datetime
    ) -> bool:
        params = (owner, _micros(expires_at), run_id, _micros(now), owner)
        changed = await self._write(lambda conn: conn.execute(_ACQUIRE_LEASE, params).rowcount)
        return changed == 1

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        until = _micros(expires_at)
        rows = [(until, run_id, owner) for run_id in run_ids]
        if rows:
            await self._write(lambda conn: conn.executemany(_RENEW_LEASE, rows))

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        where = (*_LEASABLE, _micros(now))
        if (
            await self._read(lambda conn: conn.execute(_ANY_EXPIRED_LEASE, where).fetchone())
            is None
        ):
            return []
        until = _micros(expires_at)

        def claim(conn: sqlite3.Connection) -> list[str]:
            run_ids = [row[0] for row in conn.execute(_EXPIRED_LEASES, (*where, limit))]
            conn.executemany(_SET_LEASE, [(owner, until, run_id) for run_id in run_ids])
            return run_ids

        return await self._write(claim)

    # -- hooks --------------------------------------------------------------------------------

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        row = await self._read(
            lambda conn: conn.execute(_SELECT_HOOK, (run_id, hook_id)).fetchone()
        )
        return _hook_from_row(row) if row is not None else None

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        params = {
            "run_id": run_id,
            "status": HookStatus(status).value if status is not None else None,
        }
        sql = _LIST_HOOKS[(run_id is not None, status is not None)]
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [_hook_from_row(row) for row in rows]

    # -- step checkpoints ---------------------------------------------------------------------

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        await self._write(lambda conn: conn.execute(_PUT_CHECKPOINT, (run_id, step_id, data)))

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        row = await self._read(
            lambda conn: conn.execute(_GET_CHECKPOINT, (run_id, step_id)).fetchone()
        )
        return row[0] if row is not None else None

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        await self._write(lambda conn: conn.execute(_DELETE_CHECKPOINT, (run_id, step_id)))


__all__ = ["SQLiteStorageBackend"]
