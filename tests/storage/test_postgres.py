"""What only the PostgreSQL backend promises: migrations, pgbouncer mode, errors, configuration.

The contract every backend keeps is in ``test_contract.py`` (it runs against PostgreSQL too).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pyworkflow.model.exceptions import ConfigurationError, SequenceConflictError
from pyworkflow.model.schemas import Commit
from pyworkflow.storage import config_to_storage, storage_to_config
from pyworkflow.storage.base import SCHEMA_VERSION
from pyworkflow.storage.postgres import PostgresStorageBackend
from tests.conftest import namespace_for
from tests.servers import PostgresServer, free_port, wait_for_port
from tests.storage.test_contract import at, new_run, step_completed, step_started


@pytest.fixture
def schema(tmp_path: Path) -> str:
    return namespace_for(tmp_path)


@pytest.fixture
async def opened() -> AsyncIterator[list[PostgresStorageBackend]]:
    """Backends a test opens; closed at teardown."""
    backends: list[PostgresStorageBackend] = []
    yield backends
    for backend in backends:
        await backend.close()


@pytest.fixture
async def admin(postgres_server: PostgresServer) -> AsyncIterator[Any]:
    """A plain asyncpg connection to look at (and interfere with) the server."""
    conn = await asyncpg.connect(postgres_server.dsn)
    yield conn
    await conn.close()


def backend_at(
    opened: list[PostgresStorageBackend], dsn: str, **options: Any
) -> PostgresStorageBackend:
    backend = PostgresStorageBackend(dsn, **options)
    opened.append(backend)
    return backend


# -- migrations ---------------------------------------------------------------------------------


async def test_concurrent_first_connects_migrate_once(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend], admin: Any
) -> None:
    backends = [backend_at(opened, postgres_server.dsn, schema=schema) for _ in range(6)]
    await asyncio.gather(*(backend.connect() for backend in backends))

    versions = await admin.fetch(f'SELECT version FROM "{schema}".schema_version')
    assert [row["version"] for row in versions] == [SCHEMA_VERSION]
    tables = await admin.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
    )
    assert [row["tablename"] for row in tables] == [
        "checkpoints",
        "events",
        "hooks",
        "runs",
        "schedules",
        "schema_version",
        "timers",
    ]
    functions = "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    assert await admin.fetchval(functions + " WHERE n.nspname = $1", schema) == 1

    # Connecting to an up-to-date schema changes nothing; every backend sees the same tables.
    again = backend_at(opened, postgres_server.dsn, schema=schema)
    await new_run(again)
    assert all([await backend.get_run("run-1") for backend in backends])
    assert len(await admin.fetch(f'SELECT version FROM "{schema}".schema_version')) == 1


async def test_schemas_keep_their_data_apart(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend]
) -> None:
    first = backend_at(opened, postgres_server.dsn, schema=schema)
    other = backend_at(opened, postgres_server.dsn, schema=schema + "-other")
    await new_run(first)
    assert await other.get_run("run-1") is None
    await new_run(other)  # the same run id in another schema


async def test_any_schema_name_is_quoted_safely(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend]
) -> None:
    odd = f'{schema} "odd" $body$ $body0$ name'
    backend = backend_at(opened, postgres_server.dsn, schema=odd)
    await new_run(backend)
    assert await backend.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2
    assert len(await backend_at(opened, postgres_server.dsn, schema=odd).get_events("run-1")) == 2


async def test_a_newer_schema_is_refused(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend], admin: Any
) -> None:
    await backend_at(opened, postgres_server.dsn, schema=schema).connect()
    await admin.execute(f'UPDATE "{schema}".schema_version SET version = 99')
    with pytest.raises(ConfigurationError, match="schema version 99"):
        await backend_at(opened, postgres_server.dsn, schema=schema).connect()


# -- pgbouncer mode -----------------------------------------------------------------------------


async def _prepared_statements(backend: PostgresStorageBackend) -> list[str]:
    """The named prepared statements of the backend's (one) connection."""
    assert backend.max_size == 1
    rows = await backend._run(lambda conn: conn.fetch("SELECT name FROM pg_prepared_statements"))
    return [row["name"] for row in rows]


async def _exercise(backend: PostgresStorageBackend) -> None:
    await new_run(backend)
    await backend.commit(Commit("run-1", [step_started("run-1", "s1")], expected_sequence=1))
    await backend.commit(Commit("run-1", [step_completed("run-1", "s1")], timer=at(1)))
    assert len(await backend.get_events("run-1")) == 3
    assert [timer.run_id for timer in await backend.claim_due_timers(at(2))] == ["run-1"]
    await backend.renew_leases(["run-1"], "w", at(30))
    runs, _ = await backend.list_runs()
    assert [run.run_id for run in runs] == ["run-1"]


async def test_pgbouncer_mode_prepares_no_named_statements(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend]
) -> None:
    backend = backend_at(opened, postgres_server.dsn + "?pgbouncer=true", schema=schema, max_size=1)
    assert backend.pgbouncer
    await _exercise(backend)
    assert await _prepared_statements(backend) == []


@pytest.fixture(scope="module")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a pgbouncer in transaction pooling mode in front of the test server, with
    fewer server connections than clients: consecutive statements of one client connection run
    on different server connections. Skips the test where pgbouncer is not installed."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.skip("pgbouncer is not installed")
    directory = Path(tempfile.mkdtemp(prefix="pyworkflow-pgbouncer-"))
    port = free_port()
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\n* = host=127.0.0.1 port={postgres_server.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory}/users.txt\npool_mode = transaction\n"
        "default_pool_size = 2\nmax_client_conn = 100\n"
        f"logfile = {directory}/pgbouncer.log\n"
    )
    argv = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(directory, "postgres")
        for name in ("users.txt", "pgbouncer.ini"):
            shutil.chown(directory / name, "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "pgbouncer", directory / "pgbouncer.log")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


async def test_behind_pgbouncer_transaction_pooling(
    pgbouncer: str, schema: str, opened: list[PostgresStorageBackend]
) -> None:
    backend = backend_at(opened, pgbouncer + "?pgbouncer=true", schema=schema, max_size=6)
    await _exercise(backend)
    # Many clients over two server connections: the races still have one winner.
    results = await asyncio.gather(
        *(
            backend.commit(Commit("run-1", [step_started("run-1", f"r{i}")], expected_sequence=3))
            for i in range(12)
        ),
        return_exceptions=True,
    )
    assert results.count(4) == 1
    assert all(isinstance(r, SequenceConflictError) for r in results if r != 4)
    reads = await asyncio.gather(*(backend.get_run("run-1") for _ in range(30)))
    assert {run.last_sequence for run in reads if run is not None} == {4}
    twin = backend_at(opened, pgbouncer + "?pgbouncer=true", schema=schema)
    assert [e.sequence for e in await twin.get_events("run-1")] == [1, 2, 3, 4]


async def test_by_default_statements_are_prepared_once(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend]
) -> None:
    backend = backend_at(opened, postgres_server.dsn, schema=schema, max_size=1)
    await _exercise(backend)
    assert len(await _prepared_statements(backend)) > 5  # so the check above can see them


# -- errors -------------------------------------------------------------------------------------


async def test_an_unreachable_server_is_one_clear_error(
    opened: list[PostgresStorageBackend],
) -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/orders"
    backend = backend_at(opened, url, schema="s", retry_for=0.05)
    with pytest.raises(ConfigurationError) as error:
        await backend.get_run("run-1")

    message = str(error.value)
    assert "hunter2" not in message
    assert "postgresql://app:***@127.0.0.1:" in message
    assert "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


async def test_an_unreachable_server_from_settings_names_it_without_password(
    opened: list[PostgresStorageBackend],
) -> None:
    port = free_port()
    backend = config_to_storage(
        {"type": "postgres", "host": "127.0.0.1", "port": port, "user": "app", "password": "pw9"}
    )
    assert isinstance(backend, PostgresStorageBackend)
    opened.append(backend)
    backend.retry_for = 0.05
    with pytest.raises(ConfigurationError, match=f"app:\\*\\*\\*@127.0.0.1:{port}") as error:
        await backend.connect()
    assert "pw9" not in str(error.value)


async def test_an_unknown_database_fails_at_once(
    postgres_server: PostgresServer, opened: list[PostgresStorageBackend]
) -> None:
    dsn = postgres_server.dsn.rsplit("/", 1)[0] + "/no_such_database"
    backend = backend_at(opened, dsn, retry_for=30)  # not worth retrying: fails before that
    with pytest.raises(ConfigurationError, match="no_such_database"):
        await asyncio.wait_for(backend.connect(), timeout=10)


@pytest.mark.parametrize(
    ("dsn", "options", "message"),
    [
        ("postgresql://u:hunter2@host:port/db", {}, "malformed PostgreSQL URL"),
        ("mysql://u:hunter2@host/db", {}, "expected postgresql://"),
        ("postgresql://u:hunter2@host/db?pgbouncer=maybe", {}, "pgbouncer must be true or false"),
        ("postgresql://u:hunter2@host/db?max_size=lots", {}, "max_size must be a number"),
        ("postgresql://u:hunter2@host/db", {"min_size": 5, "max_size": 2}, "pool sizes"),
        ("postgresql://u:hunter2@host/db", {"schema": "x" * 64}, "schema name"),
    ],
)
def test_malformed_settings_fail_at_construction(
    dsn: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        PostgresStorageBackend(dsn, **options)
    assert "hunter2" not in str(error.value)


async def test_a_connection_lost_mid_read_is_retried(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend], admin: Any
) -> None:
    backend = backend_at(opened, postgres_server.dsn, schema=schema, max_size=1)
    await new_run(backend)
    await backend.commit(Commit("run-1", now=at(0), lease=("w", at(30)), owner="w"))
    async with admin.transaction():  # holds the run row, so the lease renewal waits for it
        await admin.execute(f"SELECT 1 FROM \"{schema}\".runs WHERE run_id = 'run-1' FOR UPDATE")
        renewal = asyncio.create_task(backend.renew_leases(["run-1"], "w", at(60)))
        await _terminate_waiting(admin)
    await renewal  # it ran again on a fresh connection
    run = await backend.get_run("run-1")
    assert run is not None and run.lease_expires_at == at(60)


async def test_a_commit_that_lost_its_connection_is_reported_not_repeated(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend], admin: Any
) -> None:
    backend = backend_at(opened, postgres_server.dsn, schema=schema, max_size=1)
    await new_run(backend)
    async with admin.transaction():
        await admin.execute(f"SELECT 1 FROM \"{schema}\".runs WHERE run_id = 'run-1' FOR UPDATE")
        commit = asyncio.create_task(backend.commit(Commit("run-1", [step_started("run-1", "s")])))
        await _terminate_waiting(admin)
        with pytest.raises(ConfigurationError, match="may or may not have been applied"):
            await commit
    assert len(await backend.get_events("run-1")) == 1  # nothing applied, nothing repeated
    assert await backend.commit(Commit("run-1", [step_started("run-1", "s")])) == 2


async def test_connections_the_server_dropped_are_replaced(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend], admin: Any
) -> None:
    backend = backend_at(opened, postgres_server.dsn, schema=schema)
    await new_run(backend)
    await admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    await asyncio.sleep(0.05)  # the pool's sockets see the server close them
    assert await backend.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2


async def _terminate_waiting(admin: Any) -> None:
    """Terminate the (one) connection waiting for a lock, once it waits."""
    waiting = (
        "SELECT pid FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    for _ in range(500):
        pid = await admin.fetchval(waiting)
        if pid is not None:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no connection waited for the lock")


# -- configuration ------------------------------------------------------------------------------


async def test_config_by_url_round_trips(
    postgres_server: PostgresServer, schema: str, opened: list[PostgresStorageBackend]
) -> None:
    url = f"{postgres_server.dsn}?schema={schema}&pgbouncer=true&max_size=3"
    backend = config_to_storage({"url": url})
    assert isinstance(backend, PostgresStorageBackend)
    opened.append(backend)
    assert (backend.schema, backend.pgbouncer, backend.min_size, backend.max_size) == (
        schema,
        True,
        1,
        3,
    )
    config = storage_to_config(backend)
    assert config == {"type": "postgres", "dsn": url}
    twin = config_to_storage(config)
    assert isinstance(twin, PostgresStorageBackend)
    opened.append(twin)
    assert storage_to_config(twin) == config

    await new_run(backend)
    assert await twin.get_run("run-1") == await backend.get_run("run-1")


async def test_config_by_settings_round_trips(
    postgres_server: PostgresServer, opened: list[PostgresStorageBackend]
) -> None:
    settings = {
        "type": "postgresql",
        "host": "127.0.0.1",
        "port": str(postgres_server.port),
        "user": "postgres",
        "password": "unused",
        "database": "postgres",
    }
    backend = config_to_storage(settings)
    assert isinstance(backend, PostgresStorageBackend)
    opened.append(backend)
    config = storage_to_config(backend)
    assert config == {**settings, "type": "postgres", "port": postgres_server.port}
    twin = config_to_storage(config)
    assert isinstance(twin, PostgresStorageBackend)
    opened.append(twin)
    assert storage_to_config(twin) == config
    await twin.connect()  # the settings reach the server


def test_a_schema_given_as_argument_wins_over_the_dsn() -> None:
    backend = PostgresStorageBackend("postgresql://h/db?schema=a", schema="b")
    assert backend.schema == "b"
    assert storage_to_config(backend) == {"type": "postgres", "dsn": "postgresql://h/db?schema=b"}
    assert storage_to_config(PostgresStorageBackend(schema="c")) == {
        "type": "postgres",
        "dsn": "postgresql://?schema=c",
    }


def test_schema_pool_and_pgbouncer_settings_as_config_keys() -> None:
    backend = config_to_storage(
        {
            "type": "postgres",
            "host": "db.internal",
            "schema": "app",
            "pgbouncer": "true",
            "min_size": "2",
            "max_size": 4,
        }
    )
    assert isinstance(backend, PostgresStorageBackend)
    assert (backend.schema, backend.pgbouncer, backend.min_size, backend.max_size) == (
        "app",
        True,
        2,
        4,
    )
    with pytest.raises(ConfigurationError, match="max_size must be a number"):
        config_to_storage({"type": "postgres", "max_size": "many"})


# -- group commit -------------------------------------------------------------------------------


async def test_commits_of_one_loop_turn_go_in_groups_and_a_refused_one_spares_the_rest(
    postgres_server: PostgresServer,
    schema: str,
    opened: list[PostgresStorageBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = backend_at(opened, postgres_server.dsn, schema=schema)
    groups: list[int] = []
    flush = PostgresStorageBackend._flush

    async def counting(self: PostgresStorageBackend, batch: list[Any]) -> None:
        groups.append(len(batch))
        await flush(self, batch)

    monkeypatch.setattr(PostgresStorageBackend, "_flush", counting)
    runs = [f"run-{n}" for n in range(12)]
    for run_id in runs:
        await new_run(backend, run_id)
    groups.clear()

    def step(run_id: str, expected: int) -> Commit:
        return Commit(run_id, [step_started(run_id, "s1")], expected_sequence=expected, now=at(1))

    # run-5's commit is stale: its group is refused as a whole, then sent again one by one.
    results = await asyncio.gather(
        *(backend.commit(step(run_id, 7 if run_id == "run-5" else 1)) for run_id in runs),
        return_exceptions=True,
    )
    assert groups == [8, 4]  # GROUP_COMMIT_SIZE, then the rest
    assert isinstance(results[5], SequenceConflictError)
    assert [r for n, r in enumerate(results) if n != 5] == [2] * 11
    for n, run_id in enumerate(runs):
        events = await backend.get_events(run_id)
        assert len(events) == (1 if n == 5 else 2), run_id
