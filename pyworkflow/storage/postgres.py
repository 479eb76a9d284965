"""PostgreSQL storage: the runs of every process that reaches one database, over asyncpg.

Design decisions:

- **A commit is one round trip.** The migration creates a PL/pgSQL function
  ``<schema>.pyworkflow_commit``, and ``commit`` is one ``SELECT`` of it. The function locks the
  run row (``FOR UPDATE``), so commits to one run take turns; it checks the expected sequence
  against ``last_sequence``, that the run is open and that a hook it moves is pending, then runs
  the statements SQLite's commit runs (their texts come from ``pyworkflow.storage.sql``). A failed
  check raises inside the function (SQLSTATEs ``PW001``..``PW004``), so the whole statement rolls
  back and nothing of the ``Commit`` stays; the unique index on ``(run_id, completion_key)`` turns a
  duplicate completion into a unique violation the same way. ``create_run`` is one statement too
  (two data-modifying CTEs).
- **Group commit.** Conditional commits issued in one turn of the event loop (a process
  activating many runs at once) go to the server together, up to ``GROUP_COMMIT_SIZE``: one
  pipelined ``executemany`` of the same function call, one transaction, one round trip and one WAL
  flush for the group. If any call of the group is refused, the transaction applied none of them
  and each is sent again alone, so every commit still succeeds or fails on its own. Rows are
  locked in run id order. A single run's commit goes alone, after one loop turn.
- **Timestamps** are ``BIGINT`` microseconds since the epoch, as in SQLite: exact round trips, no
  time zone conversion, and the row mapping is shared. Identifiers are ``TEXT COLLATE "C"``, so
  ``(created_at, run_id)`` and ``(run_id, hook_id)`` order as Python orders strings.
- **Claims** of timers and expired leases are one ``UPDATE … WHERE run_id IN (SELECT … FOR UPDATE
  SKIP LOCKED)``: concurrent claimants skip each other's rows instead of waiting or double-claiming.
- **No session state.** Every statement names its tables with their schema (never ``SET
  search_path``) and the migration lock is transaction-scoped, so a connection is ready for any
  call as soon as the previous one returns. That lets the backend keep its own small pool
  (``_Connections``): asyncpg's ``Pool`` resets each connection it gets back (one more round
  trip) and spends tens of microseconds of CPU per call on bookkeeping. It also makes the backend
  work behind pgbouncer's transaction pooling; ``pgbouncer=True`` (or ``?pgbouncer=true`` in the
  DSN) turns asyncpg's statement cache off, because a named prepared statement does not survive
  a change of server connection (each statement then costs two round trips: an unnamed prepare
  and the execution).
- **Migrations** run on connect, in one transaction holding ``pg_advisory_xact_lock`` on a key
  derived from the schema name, so processes connecting at once migrate one after the other. The
  version is recorded in ``<schema>.schema_version``, as in SQLite.
- **Errors.** A server that cannot be reached (or refuses the credentials) is one
  ``ConfigurationError`` naming the URL with its password replaced by ``***``, never a chain of
  asyncpg internals. Failing to get a connection (refused, ``too many connections``, the server
  starting up) is retried with a short backoff for up to ``retry_for`` seconds: nothing was sent.
  A connection lost in the middle of a call, or a deadlock, is retried the same way when running
  the call again is harmless (reads, idempotent writes, claims, whose lost result is a claimant
  that died); a ``create_run`` or ``commit`` that lost its connection may have been applied, so
  that error is raised (a ``ConfigurationError`` saying so) instead.

This module must never import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from pyworkflow.model.events import Event
from pyworkflow.model.exceptions import ConfigurationError, SequenceConflictError
from pyworkflow.model.schemas import (
    RESERVED_LEASE_PREFIX,
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage.base import (
    SCHEMA_VERSION,
    StorageBackend,
    already_exists,
    check_hook_pending,
    check_run_open,
    duplicate_completion,
    lease_held,
    new_run_record,
    number_events,
    run_not_found,
)
from pyworkflow.storage.sql import (
    COMPLETION_KEY_INDEX,
    EVENT_COLUMNS,
    LEASABLE,
    T_CLEAR_TIMER,
    T_DUE_TIMERS_WHERE,
    T_EXPIRE_HOOK,
    T_EXPIRED_LEASES_WHERE,
    T_HOOK_STATUS,
    T_INSERT_EVENT,
    T_INSERT_HOOK,
    T_INSERT_RUN,
    T_RECEIVE_HOOK,
    T_SELECT_HEAD,
    T_SET_TIMER,
    T_UPDATE_RUN,
    T_UPDATE_RUN_AND_LEASE,
    Dialect,
    Statements,
    dumps,
    event_rows,
    events_from_rows,
    hook_from_row,
    hook_params,
    micros,
    micros_or_none,
    newer_schema_error,
    postgres_dialect,
    quote_identifier,
    run_from_row,
    run_params,
    runs_page,
    time_of,
)
from pyworkflow.utils.urls import shown_url

_T = TypeVar("_T")
_Work = Callable[[Any], Awaitable[_T]]  # a call on one connection

DEFAULT_SCHEMA = "public"
_DSN_OPTIONS = ("schema", "pgbouncer", "min_size", "max_size")  # ours, never sent to the server
_CONNECT_TIMEOUT = 10.0

# SQLSTATEs the commit function raises (class "PW" is not used by PostgreSQL).
_RUN_NOT_FOUND = "PW001"
_SEQUENCE_CONFLICT = "PW002"  # DETAIL: the log head
_RUN_FINISHED = "PW003"  # DETAIL: the run's status
_HOOK_NOT_PENDING = "PW004"  # DETAIL: the hook's status ('' if it does not exist), HINT: its id
_LEASE_HELD = "PW005"  # DETAIL: the lease owner

# -- the schema ---------------------------------------------------------------------------------


def _commit_function(dialect: Dialect) -> str:
    """``CREATE FUNCTION pyworkflow_commit``: SQLite's commit, as one server-side call."""
    sql = dialect.render
    terminal = ", ".join(f"'{status.value}'" for status in RunStatus if status.is_terminal)
    pending = f"'{HookStatus.PENDING.value}'"
    event = ["p_types[i]", "p_stamps[i]", "p_data[i]", "p_command_ids[i]", "p_completion_keys[i]"]
    fields = ["p_status", "p_result", "p_error", "p_started_at", "p_completed_at"]
    fields += ["p_recovery_attempts", "p_now", "v_head + v_count"]
    lease = ["p_lease_owner", "p_lease_expires_at"]
    # A created hook arrives as the JSON array of its ``hook_params`` after the run id.
    casts = ("", "", "", "", "", "::bigint", "::bigint", "::bigint", "", "", "")
    hook = ["p_run_id"] + [f"(h->>{i}){cast}" for i, cast in enumerate(casts)]
    received = [f"'{HookStatus.RECEIVED.value}'", "p_received_payload", "p_now", "p_run_id"]

    def check_pending(hook_id: str) -> str:
        """Refuse the commit unless the hook named by parameter ``hook_id`` is pending."""
        return f"""    IF {hook_id} IS NOT NULL THEN
        {sql(T_HOOK_STATUS, ["p_run_id", hook_id])} INTO v_hook_status;
        IF v_hook_status IS DISTINCT FROM {pending} THEN
            RAISE EXCEPTION USING ERRCODE = '{_HOOK_NOT_PENDING}', MESSAGE = 'hook not pending',
                DETAIL = coalesce(v_hook_status, ''), HINT = {hook_id};
        END IF;
    END IF;
"""

    signature = f"""{dialect.table_prefix}pyworkflow_commit(
    p_run_id text, p_expected bigint, p_now bigint,
    p_types text[], p_stamps bigint[], p_data text[], p_command_ids text[],
    p_completion_keys text[],
    p_status text, p_result text, p_error text, p_started_at bigint, p_completed_at bigint,
    p_recovery_attempts integer,
    p_lease_set boolean, p_lease_owner text, p_lease_expires_at bigint,
    p_timer_set boolean, p_timer bigint,
    p_hooks json, p_received_hook text, p_received_payload text, p_expired_hook text,
    p_owner text
)"""
    body = f"""
DECLARE
    v_head bigint;
    v_status text;
    v_hook_status text;
    v_lease_owner text;
    v_lease_expires_at bigint;
    v_count integer := coalesce(cardinality(p_types), 0);
    h json;
BEGIN
    {sql(T_SELECT_HEAD, ["p_run_id"])} FOR UPDATE
        INTO v_head, v_status, v_lease_owner, v_lease_expires_at;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '{_RUN_NOT_FOUND}', MESSAGE = 'no workflow run';
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> v_head THEN
        RAISE EXCEPTION USING ERRCODE = '{_SEQUENCE_CONFLICT}', MESSAGE = 'the log moved',
            DETAIL = v_head::text;
    END IF;
    IF v_status IN ({terminal}) THEN
        RAISE EXCEPTION USING ERRCODE = '{_RUN_FINISHED}', MESSAGE = 'the run ended',
            DETAIL = v_status;
    END IF;
    IF p_owner IS NOT NULL AND v_lease_owner IS NOT NULL AND v_lease_owner <> p_owner
            AND NOT starts_with(v_lease_owner, '{RESERVED_LEASE_PREFIX}')
            AND (v_lease_expires_at IS NULL OR v_lease_expires_at > p_now) THEN
        RAISE EXCEPTION USING ERRCODE = '{_LEASE_HELD}', MESSAGE = 'the run is leased',
            DETAIL = v_lease_owner;
    END IF;
{check_pending("p_received_hook")}{check_pending("p_expired_hook")}    FOR i IN 1 .. v_count LOOP
        {sql(T_INSERT_EVENT, ["p_run_id", "v_head + i", *event])};
    END LOOP;
    IF p_lease_set THEN
        {sql(T_UPDATE_RUN_AND_LEASE, [*fields, *lease, "p_run_id"])};
    ELSE
        {sql(T_UPDATE_RUN, [*fields, "p_run_id"])};
    END IF;
    IF p_timer_set THEN
        IF p_timer IS NULL THEN
            {sql(T_CLEAR_TIMER, ["p_run_id"])};
        ELSE
            {sql(T_SET_TIMER, ["p_run_id", "p_timer"])};
        END IF;
    END IF;
    IF p_hooks IS NOT NULL THEN
        FOR h IN SELECT json_array_elements(p_hooks) LOOP
            {sql(T_INSERT_HOOK, hook)};
        END LOOP;
    END IF;
    IF p_received_hook IS NOT NULL THEN
        {sql(T_RECEIVE_HOOK, [*received, "p_received_hook"])};
    END IF;
    IF p_expired_hook IS NOT NULL THEN
        {sql(T_EXPIRE_HOOK, [f"'{HookStatus.EXPIRED.value}'", "p_run_id", "p_expired_hook"])};
    END IF;
    RETURN v_head + v_count;
END
"""
    # The body names the schema, so its quote tag must be one the schema name does not contain.
    tag = next(f"$body{n}$" for n in range(1000) if f"$body{n}$" not in body)
    return (
        f"CREATE OR REPLACE FUNCTION {signature} RETURNS bigint LANGUAGE plpgsql"
        f" AS {tag}{body}{tag}"
    )


_Migration = Callable[[Any, Statements], Awaitable[None]]


async def _migrate_to_1(conn: Any, statements: Statements) -> None:
    for statement in statements.schema_1:
        await conn.execute(statement)
    await conn.execute(_commit_function(statements.dialect))


async def _migrate_to_2(conn: Any, statements: Statements) -> None:
    """The commit function checks the run's lease (a new last parameter, ``p_owner``)."""
    prefix = statements.dialect.table_prefix
    await conn.execute(
        f"DROP FUNCTION IF EXISTS {prefix}pyworkflow_commit(text, bigint, bigint, text[],"
        " bigint[], text[], text[], text[], text, text, text, bigint, bigint, integer, boolean,"
        " text, bigint, boolean, bigint, json, text, text, text)"
    )
    await conn.execute(_commit_function(statements.dialect))


_MIGRATIONS: list[_Migration] = [_migrate_to_1, _migrate_to_2]
assert len(_MIGRATIONS) == SCHEMA_VERSION, "a schema change needs its migration step"

# -- statements only PostgreSQL runs ------------------------------------------------------------


class _PostgresStatements(Statements):
    """The shared statements plus the ones that use what only PostgreSQL has."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect)
        sql = dialect.render
        self.commit = (
            f"SELECT {dialect.table_prefix}pyworkflow_commit("
            + ", ".join(f"${n}" for n in range(1, 25))
            + ")"
        )
        # The run and its first events; the run is not inserted (and no event is) when its id
        # or its idempotency key is taken. Returns how many runs were inserted (0 or 1).
        self.create_run = (
            f"WITH run AS ({sql(T_INSERT_RUN)} ON CONFLICT DO NOTHING RETURNING run_id),"
            f" logged AS (INSERT INTO {dialect.table_prefix}events ({EVENT_COLUMNS})"
            " SELECT run.run_id, e.n, e.type, e.stamp, e.data, e.command_id, e.completion_key"
            " FROM run, unnest($25::text[], $26::bigint[], $27::text[], $28::text[], $29::text[])"
            " WITH ORDINALITY AS e(type, stamp, data, command_id, completion_key, n))"
            " SELECT count(*) FROM run"
        )
        # Bound with (claimed_until, now, now, limit).
        self.claim_timers = sql(
            "UPDATE {timers} SET claimed_until = ? WHERE run_id IN (SELECT run_id FROM {timers}"
            + T_DUE_TIMERS_WHERE
            + " ORDER BY fire_at, run_id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING run_id, fire_at"
        )
        # Bound with (owner, expires_at, *LEASABLE, now, limit).
        self.claim_leases = sql(
            "UPDATE {runs} SET lease_owner = ?, lease_expires_at = ? WHERE run_id IN"
            " (SELECT run_id FROM {runs}"
            + T_EXPIRED_LEASES_WHERE
            + " ORDER BY updated_at, run_id LIMIT ? FOR UPDATE SKIP LOCKED)"
            " RETURNING run_id, updated_at"
        )
        self.renew_leases = sql(
            "UPDATE {runs} SET lease_expires_at = ? WHERE run_id = ANY(?::text[])"
            " AND lease_owner = ?"
        )


def _advisory_key(schema: str) -> int:
    """The ``pg_advisory_xact_lock`` key of migrating ``schema`` (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"pyworkflow-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# -- connection errors --------------------------------------------------------------------------

# Failing to get a connection for one of these is worth another try a moment later.
_TRANSIENT_CONNECT_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# The statement was rolled back as a whole: running it again is always safe.
_ROLLED_BACK_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def _connection_lost(exc: BaseException, conn: Any) -> bool:
    return isinstance(exc, _TRANSIENT_CONNECT_ERRORS) or conn.is_closed()


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


class _Backoff:
    """Sleeps between tries: 5 ms doubling up to 200 ms, for at most ``budget`` seconds in all."""

    def __init__(self, budget: float) -> None:
        self.delay = 0.005
        self.deadline = asyncio.get_running_loop().time() + budget

    async def wait(self) -> bool:
        """Sleep before the next try; False (without sleeping) when the budget is spent."""
        if asyncio.get_running_loop().time() + self.delay > self.deadline:
            return False
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.2)
        return True


class _Connections:
    """The backend's connections to the server: a minimal pool.

    Why not ``asyncpg.Pool``: it spends about 45 µs of CPU on each acquire and release (a proxy
    object per acquire, a shielded task per release), more than the engine spends on a whole step.
    Our connections keep no session state, so one is ready for the next call as soon as a call on
    it returns; one a call may have left mid-protocol (cancelled, timed out, closed, still in a
    transaction) is closed instead of reused. Idle connections stay open until ``close``.

    Invariant: ``size`` counts the connections open or being opened, at most ``max_size``;
    ``idle`` holds the open ones no call uses, the most recently released last; ``waiters`` are
    the acquires waiting for a connection (given one) or for room to open one (given None).
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], max_size: int) -> None:
        self.connect, self.max_size = connect, max_size
        self.size = 0
        self.idle: list[Any] = []
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.closed = False

    async def acquire(self) -> Any:
        while True:
            idle = self.idle
            while idle:
                conn = idle.pop()
                if not conn.is_closed():
                    return conn
                self.size -= 1  # the server closed it while it was idle
            if self.size < self.max_size:
                self.size += 1
                try:
                    return await self.connect()
                except BaseException:
                    self._discarded()
                    raise
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed over as it was cancelled
                    self._hand_on(waiter.result())
                raise
            if conn is not None:
                return conn

    def release(self, conn: Any, *, reusable: bool = True) -> None:
        if not reusable or self.closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._discarded()
        else:
            self._hand_on(conn)

    def _hand_on(self, conn: Any | None) -> None:
        """Give ``conn`` (or, for None, room to open one) to the first waiter, else keep it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)

    def _discarded(self) -> None:
        self.size -= 1
        self._hand_on(None)

    async def close(self) -> None:
        """Close the idle connections; the ones in use are closed when they are released."""
        self.closed = True
        idle, self.idle = self.idle, []
        self.size -= len(idle)
        await asyncio.gather(*(conn.close(timeout=5) for conn in idle), return_exceptions=True)

    def terminate(self) -> None:
        """Close everything at once, without a goodbye (the event loop that opened it is gone)."""
        self.closed = True
        for conn in self.idle:
            conn.terminate()
        self.idle.clear()


# -- settings -----------------------------------------------------------------------------------


def _parse_bool(name: str, value: str, where: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r} in {where}")


def _parse_int(name: str, value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {value!r} in {where}") from None


def _split_dsn(dsn: str) -> tuple[str | None, dict[str, str]]:
    """The DSN without PyWorkflow's query parameters (None if nothing is left), and those."""
    where = shown_url(dsn)
    try:
        parts = urlsplit(dsn)
        if parts.scheme.lower() not in ("postgres", "postgresql"):
            raise ValueError("expected postgresql://")
        if "," not in parts.netloc:  # a list of hosts has a port each: asyncpg checks them
            parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {where}: {exc}") from None
    # Split by hand: urlunsplit would turn postgresql:///db into postgresql:/db.
    base, _, query = dsn.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    ours = {name: value for name, value in pairs if name in _DSN_OPTIONS}
    rest = urlencode([(name, value) for name, value in pairs if name not in _DSN_OPTIONS])
    if not (parts.netloc or parts.path.strip("/") or rest):
        return None, ours
    return base + (f"?{rest}" if rest else ""), ours


def _with_query(dsn: str, query: str) -> str:
    """``dsn`` with more query parameters."""
    if not query:
        return dsn
    return dsn + ("&" if "?" in dsn else "?") + query


# At most this many commits per group: two half-full groups on two connections keep the server
# busy on one while the client prepares the other (measured: 16 concurrent runs, 2 cores).
GROUP_COMMIT_SIZE = 8


class _PendingCommit:
    """A conditional commit waiting for its group's flush; ``done`` resolves when it is known."""

    __slots__ = ("args", "commit", "done", "events", "loop", "now")

    def __init__(
        self,
        commit: Commit,
        events: list[Event],
        now: datetime,
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.commit, self.events, self.now, self.args, self.loop = commit, events, now, args, loop
        self.done: asyncio.Future[None] = loop.create_future()

    def settle(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class PostgresStorageBackend(StorageBackend):
    """Storage in a PostgreSQL database (all tables in ``schema``) over asyncpg connections.

    Connect with a ``dsn`` (``postgresql://user:password@host:port/database``) and/or the
    separate settings (which win over the DSN's). ``schema``, ``pgbouncer``, ``min_size`` and
    ``max_size`` may also be given as query parameters of the DSN
    (``?schema=app&pgbouncer=true``); a keyword argument other than its default wins.
    Constructing does no I/O: the first call migrates the schema and opens ``min_size``
    connections; calls open more as they need them, up to ``max_size``. ``retry_for`` bounds how
    long a call keeps retrying a server it cannot reach (see the module docstring).
    """

    kind = "PostgreSQL database"

    def __init__(
        self,
        dsn: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        pgbouncer: bool = False,
        retry_for: float = 1.0,
    ) -> None:
        self._dsn, options = _split_dsn(dsn) if dsn is not None else (None, {})
        self.host, self.port, self.user, self.database = host, port, user, database
        self._password = password
        where = self._where()
        self.schema = schema if schema is not None else options.get("schema")
        self.pgbouncer = pgbouncer or _parse_bool(
            "pgbouncer", options.get("pgbouncer", "false"), where
        )
        if min_size == 1 and "min_size" in options:
            min_size = _parse_int("min_size", options["min_size"], where)
        if max_size == 10 and "max_size" in options:
            max_size = _parse_int("max_size", options["max_size"], where)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigurationError(
                f"PostgreSQL pool sizes need 0 <= min_size <= max_size and max_size >= 1,"
                f" got min_size={min_size}, max_size={max_size}"
            )
        self.min_size, self.max_size, self.retry_for = min_size, max_size, retry_for
        self._schema = self.schema or DEFAULT_SCHEMA
        self._sql = _PostgresStatements(postgres_dialect(self._schema))
        self._pool: _Connections | None = None  # opened by the first call
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pool belongs to
        self._opening: asyncio.Lock | None = None  # held while opening the pool
        self._opening_loop: asyncio.AbstractEventLoop | None = None
        self._batch: list[_PendingCommit] | None = None  # commits waiting for the next flush
        self._flushes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"PostgresStorageBackend({self._where()}, schema={self._schema!r})"

    def to_config(self) -> dict[str, Any]:
        """The config ``config_to_storage`` turns back into an equivalent backend."""
        options = {
            "schema": self.schema,
            "pgbouncer": "true" if self.pgbouncer else None,
            "min_size": str(self.min_size) if self.min_size != 1 else None,
            "max_size": str(self.max_size) if self.max_size != 10 else None,
        }
        config: dict[str, Any] = {"type": "postgres"}
        query = urlencode([(name, value) for name, value in options.items() if value is not None])
        if self._dsn is not None or query:
            config["dsn"] = _with_query(self._dsn or "postgresql://", query)
        settings = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self._password,
            "database": self.database,
        }
        config.update({name: value for name, value in settings.items() if value is not None})
        return config

    def _where(self) -> str:
        """The server, for messages: the DSN and settings, with the password as ``***``."""
        if self._dsn is None:
            user = f"{self.user or ''}{':***' if self._password else ''}"
            host = f"{self.host or ''}{f':{self.port}' if self.port else ''}"
            at = f"{user}@" if user else ""
            return shown_url(f"postgresql://{at}{host}/{self.database or ''}")
        settings = {"host": self.host, "port": self.port, "user": self.user}
        extra = ", ".join(f"{k}={v!r}" for k, v in settings.items() if v is not None)
        return shown_url(self._dsn) + (f" ({extra})" if extra else "")

    # -- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._connected_pool()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._loop is asyncio.get_running_loop():
            await pool.close()
        else:  # opened on an event loop that is gone: nothing to wait for
            pool.terminate()

    async def _connected_pool(self) -> _Connections:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._opening is None or self._opening_loop is not loop:
            self._opening, self._opening_loop = asyncio.Lock(), loop
        async with self._opening:
            if self._pool is not None and self._loop is not loop:
                self._pool.terminate()  # opened on an event loop that is gone
                self._pool = None
            if self._pool is None:
                pool = _Connections(self._open_connection, self.max_size)
                await self._run_on(pool, self._migrate, retry=True)
                await self._open_min_size(pool)
                self._pool, self._loop = pool, loop
            return self._pool

    async def _open_min_size(self, pool: _Connections) -> None:
        """Open ``min_size`` connections up front (the migration's is one of them)."""
        held: list[Any] = []
        try:
            while len(held) < self.min_size:
                held.append(await pool.acquire())
        except Exception as exc:
            pool.terminate()
            raise self._unreachable(exc) from None
        finally:
            for conn in held:
                pool.release(conn)

    async def _open_connection(self) -> Any:
        return await asyncpg.connect(
            self._dsn,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self._password,
            database=self.database,
            statement_cache_size=0 if self.pgbouncer else 100,
            timeout=_CONNECT_TIMEOUT,
        )

    async def _migrate(self, conn: Any) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` (one transaction, one migrating process)."""
        sql = self._sql
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _advisory_key(self._schema))
                exists = "SELECT 1 FROM pg_namespace WHERE nspname = $1"
                if await conn.fetchval(exists, self._schema) is None:
                    await conn.execute(f"CREATE SCHEMA {quote_identifier(self._schema)}")
                await conn.execute(sql.create_version_table)
                version = await conn.fetchval(sql.select_version)
                if version is not None and version > len(_MIGRATIONS):
                    raise newer_schema_error("PostgreSQL", version, len(_MIGRATIONS))
                for step in _MIGRATIONS[version or 0 :]:
                    await step(conn, sql)
                if version is None:
                    await conn.execute(sql.insert_version, len(_MIGRATIONS))
                elif version < len(_MIGRATIONS):
                    await conn.execute(sql.update_version, len(_MIGRATIONS))
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _TRANSIENT_CONNECT_ERRORS + _ROLLED_BACK_ERRORS):
                raise
            raise ConfigurationError(
                f"cannot set up schema {self._schema!r} in PostgreSQL at {self._where()}:"
                f" {_reason(exc)}"
            ) from None

    def _unreachable(self, exc: BaseException) -> ConfigurationError:
        return ConfigurationError(
            f"cannot connect to PostgreSQL at {self._where()}: {_reason(exc)}"
        )

    async def _run(self, work: _Work[_T], *, retry: bool = True) -> _T:
        """Run ``work`` on a pooled connection. See the module docstring for what is retried:
        ``retry=False`` for calls that must not run twice when their outcome is unknown."""
        pool = self._pool
        if pool is None or self._loop is not asyncio.get_running_loop():
            pool = await self._connected_pool()
        return await self._run_on(pool, work, retry=retry)

    async def _run_on(self, pool: _Connections, work: _Work[_T], *, retry: bool) -> _T:
        backoff: _Backoff | None = None
        while True:
            try:
                conn = await pool.acquire()
            except Exception as exc:
                if not isinstance(exc, _TRANSIENT_CONNECT_ERRORS):
                    raise self._unreachable(exc) from None
                failure: Exception = exc  # nothing was sent: another try is harmless
            else:
                try:
                    result = await work(conn)
                except BaseException as exc:
                    # A statement the server refused leaves its connection ready for the next.
                    pool.release(conn, reusable=isinstance(exc, asyncpg.PostgresError))
                    if isinstance(exc, _ROLLED_BACK_ERRORS):
                        failure = exc  # the statement was undone as a whole
                    elif isinstance(exc, Exception) and _connection_lost(exc, conn):
                        if not retry:
                            raise ConfigurationError(
                                f"lost the connection to PostgreSQL at {self._where()} in the"
                                " middle of a write, which may or may not have been applied:"
                                f" {_reason(exc)}"
                            ) from None
                        failure = exc
                    else:
                        raise
                else:
                    pool.release(conn)
                    return result
            backoff = backoff or _Backoff(self.retry_for)
            if not await backoff.wait():
                if isinstance(failure, _ROLLED_BACK_ERRORS):
                    raise failure
                raise self._unreachable(failure) from None

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        record, numbered = new_run_record(run, events, datetime.now(UTC))
        assert record.created_at is not None
        rows = event_rows(record.run_id, numbered, record.created_at)
        columns = list(zip(*rows, strict=True))[2:] if rows else [()] * 5
        args = (*run_params(record), *columns)
        try:
            inserted = await self._run(
                lambda conn: conn.fetchval(self._sql.create_run, *args), retry=False
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == COMPLETION_KEY_INDEX:
                keys = [key for key in (e.completion_key for e in numbered) if key is not None]
                raise duplicate_completion(record.run_id, keys) from None
            raise
        if inserted:
            return record, True
        if record.idempotency_key is not None:
            existing = await self.get_run_by_idempotency_key(record.idempotency_key)
            if existing is not None:
                return existing, False
        raise already_exists(record.run_id)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql.select_run, run_id))
        return run_from_row(row) if row is not None else None

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql.select_run_by_key, key))
        return run_from_row(row) if row is not None else None

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        sql, params = self._sql.list_runs(status, workflow_name, limit, cursor)
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return runs_page(rows, limit)

    # -- the log ------------------------------------------------------------------------------

    async def commit(self, commit: Commit) -> int:
        now = commit.now or datetime.now(UTC)
        # Numbered from the expected head (or 1); without an expected head the function decides
        # the sequences and the events are numbered again from what it returns.
        events = number_events(commit, commit.expected_sequence or 0, now)
        args = self._commit_args(commit, events, now)
        if commit.expected_sequence is not None:
            # The new head is known in advance, so the commit can join a group (see _flush).
            pending = _PendingCommit(commit, events, now, args, asyncio.get_running_loop())
            self._join_batch(pending)
            await pending.done
            return commit.expected_sequence + len(events)
        try:
            head: int = await self._run(
                lambda conn: conn.fetchval(self._sql.commit, *args), retry=False
            )
        except asyncpg.PostgresError as exc:
            raise self._commit_error(commit, events, now, exc) from None
        if commit.expected_sequence is None and events:
            number_events(commit, head - len(events), now)
        return head

    def _join_batch(self, pending: _PendingCommit) -> None:
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            pending.loop.call_soon(self._start_flush, batch)
        batch.append(pending)
        if len(batch) >= GROUP_COMMIT_SIZE:
            self._batch = None  # full: the next commits start another group, in parallel

    def _start_flush(self, batch: list[_PendingCommit]) -> None:
        if self._batch is batch:
            self._batch = None
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_PendingCommit]) -> None:
        """Group commit: the conditional commits issued in one turn of the event loop (one per
        run being activated) go to the server in one pipelined transaction, one round trip and
        one WAL flush for all of them. Each stays the same conditional function call; if one is
        refused, the transaction applied none, and each is sent again alone to find out which
        (a conflict is rare once activations hold their runs' leases). Rows are locked in run id
        order, so two processes' groups cannot deadlock."""
        try:
            if len(batch) > 1:
                batch.sort(key=lambda pending: pending.commit.run_id)
                rows = [pending.args for pending in batch]
                try:
                    await self._run(
                        lambda conn: conn.executemany(self._sql.commit, rows), retry=False
                    )
                except asyncpg.PostgresError:
                    pass  # nothing was applied: one at a time below
                else:
                    for pending in batch:
                        pending.settle(None)
                    return
            for pending in batch:
                await self._commit_alone(pending)
        except BaseException as exc:
            for pending in batch:
                pending.settle(exc)
            if not isinstance(exc, Exception):
                raise

    async def _commit_alone(self, pending: _PendingCommit) -> None:
        try:
            await self._run(
                lambda conn: conn.fetchval(self._sql.commit, *pending.args), retry=False
            )
        except asyncpg.PostgresError as exc:
            pending.settle(self._commit_error(pending.commit, pending.events, pending.now, exc))
        else:
            pending.settle(None)

    @staticmethod
    def _commit_args(commit: Commit, events: list[Event], now: datetime) -> tuple[Any, ...]:
        run_id = commit.run_id
        rows = event_rows(run_id, events, now)
        types, stamps, data, command_ids, keys = (
            list(zip(*rows, strict=True))[2:] if rows else [()] * 5
        )
        lease, timer = commit.lease, commit.timer
        hooks = (
            dumps([hook_params(run_id, hook)[1:] for hook in commit.hooks_created])
            if commit.hooks_created
            else None
        )
        received = commit.hook_received
        return (
            run_id,
            commit.expected_sequence,
            micros(now),
            types,
            stamps,
            data,
            command_ids,
            keys,
            commit.status.value if commit.status is not None else None,
            commit.result,
            commit.error,
            micros_or_none(commit.started_at),
            micros_or_none(commit.completed_at),
            commit.recovery_attempts,
            lease is None or isinstance(lease, tuple),
            lease[0] if isinstance(lease, tuple) else None,
            micros(lease[1]) if isinstance(lease, tuple) else None,
            timer is None or isinstance(timer, datetime),
            micros(timer) if isinstance(timer, datetime) else None,
            hooks,
            received[0] if received is not None else None,
            received[1] if received is not None else None,
            commit.hook_expired,
            commit.owner,
        )

    @staticmethod
    def _commit_error(
        commit: Commit, events: list[Event], now: datetime, exc: asyncpg.PostgresError
    ) -> Exception:
        """The port's exception for what the commit function refused."""
        run_id, state = commit.run_id, exc.sqlstate
        try:
            if state == _RUN_NOT_FOUND:
                return run_not_found(run_id)
            if state == _SEQUENCE_CONFLICT:
                number_events(commit, int(exc.detail), now)  # raises the conflict
            elif state == _RUN_FINISHED:
                check_run_open(run_id, RunStatus(exc.detail))  # raises RunFinishedError
            elif state == _LEASE_HELD:
                return lease_held(run_id, exc.detail)
            elif state == _HOOK_NOT_PENDING:
                status = HookStatus(exc.detail) if exc.detail else None
                check_hook_pending(run_id, exc.hint, status)  # raises the hook's error
            elif isinstance(exc, asyncpg.UniqueViolationError):
                if exc.constraint_name == COMPLETION_KEY_INDEX:
                    keys = [key for key in (e.completion_key for e in events) if key is not None]
                    return duplicate_completion(run_id, keys)
                return SequenceConflictError(f"run {run_id}: the log moved during the write")
        except Exception as refused:
            return refused
        return exc

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        params: tuple[str | int, ...]
        if command_id is None:
            sql, params = self._sql.select_events, (run_id, after_sequence)
        else:
            sql, params = self._sql.select_command_events, (run_id, after_sequence, command_id)
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return events_from_rows(run_id, rows)

    # -- timers -------------------------------------------------------------------------------

    async def schedule_timer(self, run_id: str, fire_at: datetime) -> None:
        at = micros(fire_at)
        await self._run(lambda conn: conn.execute(self._sql.set_timer, run_id, at))

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        at, until = micros(now), micros(now + claim_for)
        rows = await self._run(
            lambda conn: conn.fetch(self._sql.claim_timers, until, at, at, limit)
        )
        claimed = sorted((fire_at, run_id) for run_id, fire_at in rows)
        return [Timer(run_id, time_of(fire_at)) for fire_at, run_id in claimed]

    async def get_timer(self, run_id: str) -> Timer | None:
        fire_at = await self._run(lambda conn: conn.fetchval(self._sql.select_timer, run_id))
        return Timer(run_id, time_of(fire_at)) if fire_at is not None else None

    # -- leases -------------------------------------------------------------------------------

    async def acquire_lease(
        self, run_id: str, owner: str, expires_at: datetime, now: datetime
    ) -> bool:
        params = (owner, micros(expires_at), run_id, micros(now), owner)
        status = await self._run(lambda conn: conn.execute(self._sql.acquire_lease, *params))
        return bool(status == "UPDATE 1")

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        if run_ids:
            params = (micros(expires_at), list(run_ids), owner)
            await self._run(lambda conn: conn.execute(self._sql.renew_leases, *params))

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        params = (owner, micros(expires_at), *LEASABLE, micros(now), limit)
        rows = await self._run(lambda conn: conn.fetch(self._sql.claim_leases, *params))
        return [run_id for _, run_id in sorted((updated, run_id) for run_id, updated in rows)]

    # -- hooks --------------------------------------------------------------------------------

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql.select_hook, run_id, hook_id))
        return hook_from_row(row) if row is not None else None

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        sql, params = self._sql.list_hooks(run_id, status)
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return [hook_from_row(row) for row in rows]

    # -- step checkpoints ---------------------------------------------------------------------

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        sql = self._sql.put_checkpoint
        await self._run(lambda conn: conn.execute(sql, run_id, step_id, data))

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        sql = self._sql.get_checkpoint
        data: str | None = await self._run(lambda conn: conn.fetchval(sql, run_id, step_id))
        return data

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        sql = self._sql.delete_checkpoint
        await self._run(lambda conn: conn.execute(sql, run_id, step_id))


__all__ = ["DEFAULT_SCHEMA", "PostgresStorageBackend"]
