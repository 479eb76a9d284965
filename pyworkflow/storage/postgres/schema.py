"""The PostgreSQL backend's schema: its tables, the PL/pgSQL commit function, the migrations.

- **A commit is one round trip.** The migration creates a PL/pgSQL function
  ``<schema>.pyworkflow_commit``, and ``commit`` is one ``SELECT`` of it. The function locks the
  run row (``FOR UPDATE``), so commits to one run take turns; it checks the expected sequence
  against ``last_sequence``, that the run is open and that a hook it moves is pending, then runs
  the statements SQLite's commit runs (their texts come from ``pyworkflow.storage.sql``). A failed
  check raises inside the function (SQLSTATEs ``PW001``..``PW005``), so the whole statement rolls
  back and nothing of the ``Commit`` stays; the unique index on ``(run_id, completion_key)`` turns a
  duplicate completion into a unique violation the same way. ``commit_args`` lays a ``Commit`` out
  as the function's arguments and ``commit_error`` turns what it refused into the port's exception,
  so the function's signature and SQLSTATEs are written and read in this one module. A commit
  that also writes other runs (``runs_created``, ``notices``) or links its chain calls the same
  function in an explicit transaction, followed by those writes (``backend.py``).
  ``create_run`` is one statement too (two data-modifying CTEs).
- **Timestamps** are ``BIGINT`` microseconds since the epoch, as in SQLite: exact round trips, no
  time zone conversion, and the row mapping is shared. Identifiers are ``TEXT COLLATE "C"``, so
  ``(created_at, run_id)`` and ``(run_id, hook_id)`` order as Python orders strings.
- **Claims** of timers and expired leases are one ``UPDATE … WHERE run_id IN (SELECT … FOR UPDATE
  SKIP LOCKED)``: concurrent claimants skip each other's rows instead of waiting or double-claiming.
  Due schedules are claimed the same way (the locked selection is a CTE, so the statement can
  return each schedule's poll time before the claim, which orders the result).
- **Schedules** are one row each (``sql.SCHEMA_SCHEDULES``); ``update_schedule`` is one
  ``UPDATE … WHERE schedule_id = $ AND revision = $`` (compare-and-set), ``create_schedule`` an
  ``INSERT … ON CONFLICT DO NOTHING`` followed, when the id is taken, by a read of the stored one.
- **Migrations** run on connect, in one transaction holding ``pg_advisory_xact_lock`` on a key
  derived from the schema name, so processes connecting at once migrate one after the other. The
  version is recorded in ``<schema>.schema_version``, as in SQLite. The ``schedules`` table is
  created in that transaction where it is missing (a schema made before schedules existed gets it
  on its next connect; older releases ignore it, so it needs no version of its own). Its DDL runs
  only when the catalog lacks the table: ``CREATE INDEX IF NOT EXISTS`` would lock the table
  against writes on every connect before finding the index there.

This module must never open, pool or retry a connection (it is handed one), never rely on session
state (``SET search_path``, session-level locks: see ``pool.py``), never build SQL from values
(they are parameters), and never import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from pyworkflow.model.events import Event
from pyworkflow.model.exceptions import SequenceConflictError
from pyworkflow.model.schemas import RESERVED_LEASE_PREFIX, Change, Commit, HookStatus, RunStatus
from pyworkflow.storage.base import (
    SCHEMA_VERSION,
    check_hook_pending,
    check_run_open,
    duplicate_completion,
    lease_held,
    number_events,
    run_not_found,
)
from pyworkflow.storage.sql import (
    COMPLETION_KEY_INDEX,
    EVENT_COLUMNS,
    T_CLEAR_TIMER,
    T_DUE_SCHEDULES_WHERE,
    T_DUE_TIMERS_WHERE,
    T_EXPIRE_HOOK,
    T_EXPIRED_LEASES_WHERE,
    T_HOOK_STATUS,
    T_INSERT_EVENT,
    T_INSERT_EVENT_ONCE,
    T_INSERT_HOOK,
    T_INSERT_RUN,
    T_INSERT_SCHEDULE,
    T_RECEIVE_HOOK,
    T_SELECT_HEAD,
    T_SELECT_NOTICE_TARGET,
    T_SET_TIMER,
    T_UPDATE_RUN,
    T_UPDATE_RUN_AND_LEASE,
    T_UPDATE_SCHEDULE,
    Dialect,
    Statements,
    dumps,
    event_rows,
    hook_params,
    micros,
    micros_or_none,
    newer_schema_error,
    quote_identifier,
)

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


async def _migrate_to_3(conn: Any, statements: Statements) -> None:
    """Values stored once, hook tokens as digests (see the SQLite backend's ``_migrate_to_3``):
    no table changes; the version keeps older releases away."""
    del conn, statements


_MIGRATIONS: list[_Migration] = [_migrate_to_1, _migrate_to_2, _migrate_to_3]
assert len(_MIGRATIONS) == SCHEMA_VERSION, "a schema change needs its migration step"

# -- statements only PostgreSQL runs ------------------------------------------------------------


class PostgresStatements(Statements):
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
        # A commit with notices locks its run and theirs first, in run id order (as group commits
        # lock theirs), so a parent and a child noticing each other cannot deadlock.
        self.lock_runs = sql(
            "SELECT run_id FROM {runs} WHERE run_id = ANY(?::text[]) ORDER BY run_id FOR UPDATE"
        )
        # A commit's notice locks the run it goes to (and each run of the chain it follows), so
        # it is numbered from a head no other commit can move before this one ends.
        self.lock_notice_target = sql(T_SELECT_NOTICE_TARGET + " FOR UPDATE")
        # Returns the sequence, or no row when the completion key is already recorded.
        self.insert_notice_event = sql(T_INSERT_EVENT_ONCE + " RETURNING sequence")
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
        # Whether the schedules table exists, bound with the schema name.
        self.schedules_exist = (
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'schedules'"
        )
        # Returns the id when inserted, no row when the id is taken.
        self.create_schedule = sql(T_INSERT_SCHEDULE + " RETURNING schedule_id")
        # Returns the id when the compare-and-set succeeded, no row otherwise.
        self.update_schedule = sql(T_UPDATE_SCHEDULE + " RETURNING schedule_id")
        # Bound with (now, limit, poll_at after the claim). Returns each claimed schedule's poll
        # time before the claim (to order them: earliest first), its id and its record.
        self.claim_schedules = sql(
            "WITH due AS (SELECT schedule_id, poll_at FROM {schedules}"
            + T_DUE_SCHEDULES_WHERE
            + " ORDER BY poll_at, schedule_id LIMIT ? FOR UPDATE SKIP LOCKED)"
            " UPDATE {schedules} AS s SET poll_at = ? FROM due"
            " WHERE s.schedule_id = due.schedule_id RETURNING due.poll_at, s.schedule_id, s.data"
        )


def _advisory_key(schema: str) -> int:
    """The ``pg_advisory_xact_lock`` key of migrating ``schema`` (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"pyworkflow-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(conn: Any, statements: PostgresStatements, schema: str) -> None:
    """Bring ``schema`` to ``SCHEMA_VERSION`` (one transaction, one migrating process)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _advisory_key(schema))
        exists = "SELECT 1 FROM pg_namespace WHERE nspname = $1"
        if await conn.fetchval(exists, schema) is None:
            await conn.execute(f"CREATE SCHEMA {quote_identifier(schema)}")
        await conn.execute(statements.create_version_table)
        version = await conn.fetchval(statements.select_version)
        if version is not None and version > len(_MIGRATIONS):
            raise newer_schema_error("PostgreSQL", version, len(_MIGRATIONS))
        for step in _MIGRATIONS[version or 0 :]:
            await step(conn, statements)
        if await conn.fetchval(statements.schedules_exist, schema) is None:
            for statement in statements.schema_schedules:
                await conn.execute(statement)
        if version is None:
            await conn.execute(statements.insert_version, len(_MIGRATIONS))
        elif version < len(_MIGRATIONS):
            await conn.execute(statements.update_version, len(_MIGRATIONS))


# -- calling the commit function ----------------------------------------------------------------


def commit_args(commit: Commit, events: list[Event], now: datetime) -> tuple[Any, ...]:
    """The commit function's arguments for ``commit``, in the order of its signature."""
    run_id = commit.run_id
    rows = event_rows(run_id, events, now)
    types, stamps, data, command_ids, keys = list(zip(*rows, strict=True))[2:] if rows else [()] * 5
    lease, timer = commit.lease_change, commit.timer_change
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
        lease.change is not Change.KEEP,  # then owner and expiry are set, or both None
        lease.owner,
        micros_or_none(lease.expires_at),
        timer.change is not Change.KEEP,
        micros_or_none(timer.fire_at),
        hooks,
        received[0] if received is not None else None,
        received[1] if received is not None else None,
        commit.hook_expired,
        commit.owner,
    )


def commit_error(
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
    unexpected: Exception = exc  # none of ours: the caller raises it as it came
    return unexpected


__all__ = ["PostgresStatements", "commit_args", "commit_error", "migrate"]
