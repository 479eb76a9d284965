"""The PostgreSQL storage backend: the ``StorageBackend`` port over the package's other modules.

``PostgresStorageBackend`` turns each call of the port into statements (``schema.py``: the tables,
the commit function and what its refusals mean) run on a pooled connection (``pool.py``: the
pool and the retries), with the server named by ``dsn.py`` and conditional commits grouped by
``group_commit.py`` (except those that write other runs too: one explicit transaction each).
Constructing does no I/O; the first call migrates the schema and opens the pool, once per event
loop.

This module must never talk to the server except through ``_run`` (and ``_run_on`` for the
migration, while opening the pool), never hold a connection across calls, never retry by itself
(``pool.run_on`` decides, told by ``retry=`` whether running a call twice is harmless), and never
import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

import asyncpg

from pyworkflow.model.events import Event
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.model.schedules import Schedule, ScheduleStatus, schedule_from_json
from pyworkflow.model.schemas import (
    Commit,
    Hook,
    HookStatus,
    Notice,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage.base import (
    SECRETS_RUN,
    StorageBackend,
    already_exists,
    duplicate_completion,
    new_run_record,
    number_events,
    with_logged_args,
)
from pyworkflow.storage.postgres.dsn import (
    parse_bool,
    parse_int,
    shown_server,
    split_dsn,
    with_query,
)
from pyworkflow.storage.postgres.group_commit import GroupCommit, PendingCommit
from pyworkflow.storage.postgres.pool import (
    ROLLED_BACK_ERRORS,
    TRANSIENT_CONNECT_ERRORS,
    Connections,
    Work,
    open_connection,
    open_min_size,
    reason,
    run_on,
)
from pyworkflow.storage.postgres.schema import (
    PostgresStatements,
    commit_args,
    commit_error,
    migrate,
)
from pyworkflow.storage.sql import (
    COMPLETION_KEY_INDEX,
    LEASABLE,
    event_rows,
    events_from_rows,
    hook_from_row,
    micros,
    postgres_dialect,
    run_from_row,
    run_params,
    runs_page,
    schedule_params,
    time_of,
)

_T = TypeVar("_T")

DEFAULT_SCHEMA = "public"


class _Refused(Exception):
    """Carries what refuses a commit out of its transaction (which rolls back) to the caller,
    so the connection is handed back for reuse rather than closed as for an unknown error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class PostgresStorageBackend(GroupCommit, StorageBackend):
    """Storage in a PostgreSQL database (all tables in ``schema``) over asyncpg connections.

    Connect with a ``dsn`` (``postgresql://user:password@host:port/database``) and/or the
    separate settings (which win over the DSN's). ``schema``, ``pgbouncer``, ``min_size`` and
    ``max_size`` may also be given as query parameters of the DSN
    (``?schema=app&pgbouncer=true``); a keyword argument other than its default wins.
    Constructing does no I/O: the first call migrates the schema and opens ``min_size``
    connections; calls open more as they need them, up to ``max_size``. ``retry_for`` bounds how
    long a call keeps retrying a server it cannot reach (see ``pool.py``).
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
        self._dsn, options = split_dsn(dsn) if dsn is not None else (None, {})
        self.host, self.port, self.user, self.database = host, port, user, database
        self._password = password
        where = self._where()
        self.schema = schema if schema is not None else options.get("schema")
        self.pgbouncer = pgbouncer or parse_bool(
            "pgbouncer", options.get("pgbouncer", "false"), where
        )
        if min_size == 1 and "min_size" in options:
            min_size = parse_int("min_size", options["min_size"], where)
        if max_size == 10 and "max_size" in options:
            max_size = parse_int("max_size", options["max_size"], where)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigurationError(
                f"PostgreSQL pool sizes need 0 <= min_size <= max_size and max_size >= 1,"
                f" got min_size={min_size}, max_size={max_size}"
            )
        self.min_size, self.max_size, self.retry_for = min_size, max_size, retry_for
        self._schema = self.schema or DEFAULT_SCHEMA
        self._sql = PostgresStatements(postgres_dialect(self._schema))
        self._pool: Connections | None = None  # opened by the first call
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pool belongs to
        self._opening: asyncio.Lock | None = None  # held while opening the pool
        self._opening_loop: asyncio.AbstractEventLoop | None = None
        self._batch: list[PendingCommit] | None = None  # commits waiting for the next flush
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
            config["dsn"] = with_query(self._dsn or "postgresql://", query)
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
        return shown_server(
            self._dsn,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self._password,
            database=self.database,
        )

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

    async def _connected_pool(self) -> Connections:
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
                pool = Connections(self._open_connection, self.max_size)
                await self._run_on(pool, self._migrate, retry=True)
                await open_min_size(pool, self.min_size, self._where)
                self._pool, self._loop = pool, loop
            return self._pool

    async def _open_connection(self) -> Any:
        return await open_connection(
            self._dsn,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self._password,
            database=self.database,
            pgbouncer=self.pgbouncer,
        )

    async def _migrate(self, conn: Any) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` (one transaction, one migrating process)."""
        try:
            await migrate(conn, self._sql, self._schema)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, TRANSIENT_CONNECT_ERRORS + ROLLED_BACK_ERRORS):
                raise
            raise ConfigurationError(
                f"cannot set up schema {self._schema!r} in PostgreSQL at {self._where()}:"
                f" {reason(exc)}"
            ) from None

    async def _run(self, work: Work[_T], *, retry: bool = True) -> _T:
        """Run ``work`` on a pooled connection. See ``pool.py`` for what is retried:
        ``retry=False`` for calls that must not run twice when their outcome is unknown."""
        pool = self._pool
        if pool is None or self._loop is not asyncio.get_running_loop():
            pool = await self._connected_pool()
        return await self._run_on(pool, work, retry=retry)

    async def _run_on(self, pool: Connections, work: Work[_T], *, retry: bool) -> _T:
        return await run_on(pool, work, retry=retry, retry_for=self.retry_for, where=self._where)

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
            return with_logged_args(record, numbered[0] if numbered else None), True
        if record.idempotency_key is not None:
            existing = await self.get_run_by_idempotency_key(record.idempotency_key)
            if existing is not None:
                return existing, False
        raise already_exists(record.run_id)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql.select_run, run_id))
        return run_from_row(row) if row is not None else None

    async def list_children(
        self, parent_run_id: str, *, open_only: bool = False
    ) -> list[WorkflowRun]:
        sql = self._sql.select_children
        rows = await self._run(lambda conn: conn.fetch(sql, parent_run_id))
        runs = [run_from_row(row) for row in rows]
        return [run for run in runs if not (open_only and run.status.is_terminal)]

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
        args = commit_args(commit, events, now)
        if (
            commit.runs_created
            or commit.notices
            or commit.hooks_disposed
            or commit.continued_to_run_id is not None
        ):
            reached = await self._commit_reaching_out(commit, events, now, args)
            if commit.expected_sequence is None and events:
                number_events(commit, reached - len(events), now)
            return reached
        if commit.expected_sequence is not None:
            # The new head is known in advance, so the commit can join a group (see _flush).
            pending = PendingCommit(commit, events, now, args, asyncio.get_running_loop())
            self._join_batch(pending)
            await pending.done
            return commit.expected_sequence + len(events)
        try:
            head: int = await self._run(
                lambda conn: conn.fetchval(self._sql.commit, *args), retry=False
            )
        except asyncpg.PostgresError as exc:
            raise commit_error(commit, events, now, exc) from None
        if commit.expected_sequence is None and events:
            number_events(commit, head - len(events), now)
        return head

    async def _commit_reaching_out(
        self, commit: Commit, events: list[Event], now: datetime, args: tuple[Any, ...]
    ) -> int:
        """A commit that also writes other runs (``runs_created``, ``notices``) or links its
        chain (``continued_to_run_id``): the commit function, then those writes, in one explicit
        transaction. It never joins a group, so no other commit depends on what it refuses; such
        commits are rare (a child started or ended, a chain continued), the extra round trips
        are theirs alone."""

        async def work(conn: Any) -> int | Exception:
            try:
                async with conn.transaction():
                    if commit.notices:  # the runs it writes, locked in one order: no deadlock
                        targets = [commit.run_id, *(notice.run_id for notice in commit.notices)]
                        await conn.execute(self._sql.lock_runs, targets)
                    head: int = await conn.fetchval(self._sql.commit, *args)
                    if commit.hooks_disposed:
                        await conn.executemany(
                            self._sql.dispose_hook,
                            [(commit.run_id, hook_id) for hook_id in commit.hooks_disposed],
                        )
                    if commit.continued_to_run_id is not None:
                        await conn.execute(
                            self._sql.set_continued_to, commit.continued_to_run_id, commit.run_id
                        )
                    for run, first in commit.runs_created:
                        await self._insert_created_run(conn, run, first, now)
                    for notice in commit.notices:
                        await self._deliver(conn, notice, now)
                    return head
            except _Refused as refused:  # rolled back: the connection is fit for the next call
                return refused.error

        try:
            outcome = await self._run(work, retry=False)
        except asyncpg.PostgresError as exc:
            raise commit_error(commit, events, now, exc) from None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _insert_created_run(
        self, conn: Any, run: WorkflowRun, first: list[Event], now: datetime
    ) -> None:
        """Insert a run of ``Commit.runs_created`` as ``create_run`` would, or refuse the commit
        (``_Refused``) when its id is taken."""
        if run.idempotency_key is not None:
            if await conn.fetchval(self._sql.run_exists, run.run_id) is not None:
                raise _Refused(already_exists(run.run_id))
            raise _Refused(ValueError("a run created by a commit cannot have an idempotency key"))
        try:
            record, numbered = new_run_record(run, first, now)
        except ValueError as exc:
            raise _Refused(exc) from None
        assert record.created_at is not None
        rows = event_rows(record.run_id, numbered, record.created_at)
        columns = list(zip(*rows, strict=True))[2:] if rows else [()] * 5
        try:
            inserted = await conn.fetchval(self._sql.create_run, *run_params(record), *columns)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != COMPLETION_KEY_INDEX:
                raise
            keys = [key for key in (e.completion_key for e in numbered) if key is not None]
            raise _Refused(duplicate_completion(record.run_id, keys)) from None
        if not inserted:
            raise _Refused(already_exists(record.run_id))

    async def _deliver(self, conn: Any, notice: Notice, now: datetime) -> None:
        """Append a notice to its run (followed along a chain), or skip it (see ``Notice``).
        Nothing here fails on a skipped notice: an error would abort the whole transaction."""
        run_id = notice.run_id
        row = await conn.fetchrow(self._sql.lock_notice_target, run_id)
        seen = {run_id}
        while notice.follow_chain and row is not None and row[2] is not None:
            if row[2] in seen:
                return  # a chain that loops has no run carrying it on
            seen.add(row[2])
            run_id = row[2]
            row = await conn.fetchrow(self._sql.lock_notice_target, run_id)
        if row is None or RunStatus(row[1]).is_terminal:
            return
        event = notice.event.copy_for(run_id)  # the caller's event stays as it is
        event.place(row[0] + 1, now)
        (values,) = event_rows(run_id, [event], now)
        if await conn.fetchval(self._sql.insert_notice_event, *values) is None:
            return  # its completion key is already recorded: delivered before
        await conn.execute(self._sql.advance_run, event.sequence, micros(now), run_id)
        if notice.wake_at is not None:
            await conn.execute(self._sql.set_timer, run_id, micros(notice.wake_at))

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

    # -- schedules ----------------------------------------------------------------------------

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        stored = schedule.copy()
        stored.revision = 1
        params = schedule_params(stored)
        # Not run again after a lost connection: the retry would find its own schedule "taken".
        inserted = await self._run(
            lambda conn: conn.fetchval(self._sql.create_schedule, *params), retry=False
        )
        if inserted is not None:
            return stored, True
        existing = await self.get_schedule(stored.schedule_id)
        assert existing is not None  # schedules are never removed
        return existing, False

    async def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        stored = schedule.copy()
        stored.revision = expected_revision + 1
        schedule_id, *values = schedule_params(stored)
        params = (*values, schedule_id, expected_revision)
        # Not run again after a lost connection: the retry would find the revision moved on.
        updated = await self._run(
            lambda conn: conn.fetchval(self._sql.update_schedule, *params), retry=False
        )
        return stored if updated is not None else None

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        data = await self._run(lambda conn: conn.fetchval(self._sql.select_schedule, schedule_id))
        return schedule_from_json(data) if data is not None else None

    async def list_schedules(
        self,
        *,
        workflow_name: str | None = None,
        status: ScheduleStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Schedule]:
        if limit < 1:
            return []
        sql, params = self._sql.list_schedules(workflow_name, status, limit, max(offset, 0))
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return [schedule_from_json(data) for (data,) in rows]

    async def claim_due_schedules(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=10)
    ) -> list[Schedule]:
        if limit < 1:
            return []
        params = (micros(now), limit, micros(now + claim_for))
        rows = await self._run(lambda conn: conn.fetch(self._sql.claim_schedules, *params))
        return [schedule_from_json(data) for _, _, data in sorted(rows, key=lambda r: (r[0], r[1]))]

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

    async def keep_secret(self, name: str, candidate: str) -> str:
        add, get = self._sql.add_checkpoint, self._sql.get_checkpoint
        await self._run(lambda conn: conn.execute(add, SECRETS_RUN, name, candidate))
        stored: str = await self._run(lambda conn: conn.fetchval(get, SECRETS_RUN, name))
        return stored


__all__ = ["DEFAULT_SCHEMA", "PostgresStorageBackend"]
