"""What only the Redis backend promises: one round trip per commit, scripts that survive a flush
or a restart, one clear error for an unreachable server, configuration by URL, and a key layout
that stays under its prefix. The shared contract runs against Redis from ``conftest.BACKENDS``.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.model.schemas import Commit, HookStatus, RunStatus, Timer, WorkflowRun
from pyworkflow.storage import config_to_storage, storage_to_config
from pyworkflow.storage.redis import LAYOUT_VERSION, MAX_IDLE_CONNECTIONS, RedisStorageBackend
from tests.conftest import namespace_for
from tests.servers import RedisServer, free_port
from tests.storage.test_contract import (
    a_hook,
    a_run,
    at,
    hook_received,
    new_run,
    started,
    step_completed,
    step_started,
)


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    return namespace_for(tmp_path)


@pytest.fixture
async def redis(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStorageBackend]:
    backend = RedisStorageBackend(redis_server.url, prefix=prefix)
    yield backend
    await backend.close()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain redis-py client on the same server, to look at what the backend did."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def sent_commands(admin: Redis, action: Callable[[], Awaitable[Any]]) -> list[str]:
    """The commands clients sent to the server while ``action`` ran, as MONITOR shows them.

    Commands a script runs are left out (what counts is what crossed the network), and so are
    those of the connection that sends the end marker.
    """
    marker = f"end-of-{time.monotonic_ns()}"
    commands: list[tuple[str, str]] = []
    async with admin.monitor() as monitor:
        await action()
        await admin.execute_command("ECHO", marker)
        while True:
            seen = await monitor.next_command()
            if marker in seen["command"]:
                return [command for port, command in commands if port != seen["client_port"]]
            if seen["client_type"] != "lua":
                commands.append((seen["client_port"], seen["command"]))


# -- round trips ------------------------------------------------------------------------------


async def test_a_commit_is_one_round_trip(redis: RedisStorageBackend, admin: Redis) -> None:
    await new_run(redis)
    await redis.commit(Commit("run-1", now=at(1), hooks_created=[a_hook("run-1", "h1")]))
    commit = Commit(
        "run-1",
        [step_started("run-1", "s1"), step_completed("run-1", "s1")],
        expected_sequence=1,
        now=at(2),
        status=RunStatus.RUNNING,
        started_at=at(2),
        timer=at(60),
        lease=("worker", at(30)),
        hooks_created=[a_hook("run-1", "h2")],
        hook_expired="h1",
    )

    commands = await sent_commands(admin, lambda: redis.commit(commit))

    assert len(commands) == 1 and commands[0].startswith("EVALSHA ")
    assert await redis.get_timer("run-1") == Timer("run-1", at(60))
    hook = await redis.get_hook("run-1", "h1")
    assert hook is not None and hook.status is HookStatus.EXPIRED


async def test_reading_the_tail_of_a_log_starts_at_its_index(
    redis: RedisStorageBackend, admin: Redis, prefix: str
) -> None:
    await new_run(redis)
    await redis.commit(Commit("run-1", [step_started("run-1", f"s{i}") for i in range(9)]))

    commands = await sent_commands(admin, lambda: redis.get_events("run-1", after_sequence=7))

    assert commands == [f"LRANGE {prefix}:log:run-1 7 -1"]
    assert [e.sequence for e in await redis.get_events("run-1", after_sequence=7)] == [8, 9, 10]


async def test_the_scripts_survive_a_script_flush(redis: RedisStorageBackend, admin: Redis) -> None:
    await new_run(redis)
    await admin.script_flush()
    noscript_before = (await admin.info("errorstats")).get("errorstat_NOSCRIPT", {"count": 0})

    assert await redis.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2

    noscript_after = (await admin.info("errorstats"))["errorstat_NOSCRIPT"]
    assert noscript_after["count"] == noscript_before["count"] + 1  # it was lost, then loaded
    assert await redis.commit(Commit("run-1", [step_started("run-1", "s2")])) == 3


# -- connections ------------------------------------------------------------------------------


async def test_concurrent_calls_open_connections_and_keep_a_few(
    redis: RedisStorageBackend, admin: Redis
) -> None:
    await new_run(redis)
    before = (await admin.info("clients"))["connected_clients"]

    runs = await asyncio.gather(*(redis.get_run("run-1") for _ in range(100)))

    assert all(run is not None and run.run_id == "run-1" for run in runs)
    after = (await admin.info("clients"))["connected_clients"]
    assert after - before <= MAX_IDLE_CONNECTIONS


def test_a_backend_outlives_its_event_loop(redis_server: RedisServer, prefix: str) -> None:
    """``asyncio.run`` twice (a CLI, a test): the second loop gets connections of its own."""
    backend = RedisStorageBackend(redis_server.url, prefix=prefix)
    asyncio.run(new_run(backend))  # and leave its connection open

    async def read_and_close() -> WorkflowRun | None:
        try:
            return await backend.get_run("run-1")
        finally:
            await backend.close()

    with warnings.catch_warnings():
        # The first loop's connection cannot be closed once that loop is gone: it is dropped.
        warnings.simplefilter("ignore", ResourceWarning)
        run = asyncio.run(read_and_close())
        gc.collect()
    assert run is not None and run.last_sequence == 1


# -- errors -----------------------------------------------------------------------------------


async def test_an_unreachable_server_is_one_clear_error() -> None:
    port = free_port()  # nothing listens there
    backend = RedisStorageBackend(f"redis://:hunter2@127.0.0.1:{port}/0", prefix="p")
    assert "hunter2" not in repr(backend)  # constructing did no I/O, and shows no password

    began = time.monotonic()
    with pytest.raises(ConfigurationError) as error:
        await backend.get_run("run-1")

    assert time.monotonic() - began < 2  # no retry loop
    message = str(error.value)
    assert f"'redis://:***@127.0.0.1:{port}/0'" in message and "hunter2" not in message
    assert error.value.__cause__ is None and error.value.__context__ is None
    with pytest.raises(ConfigurationError, match="cannot use Redis") as again:
        await config_to_storage({"url": f"redis://:hunter2@127.0.0.1:{port}/0"}).get_run("x")
    assert "hunter2" not in str(again.value)


async def test_an_outage_is_reported_and_a_restarted_server_is_used_again(
    redis: RedisStorageBackend, redis_server: RedisServer
) -> None:
    await new_run(redis)
    redis_server.kill()
    try:
        with pytest.raises(ConfigurationError, match="cannot use Redis at 'redis://127.0.0.1"):
            await redis.commit(Commit("run-1", [step_started("run-1", "s1")]))
    finally:
        redis_server.start()

    # The server kept nothing (it runs without persistence), not even the scripts: the
    # backend reconnects its idle connections and loads the scripts again.
    await new_run(redis)
    assert await redis.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2


async def test_a_newer_layout_is_refused(
    redis_server: RedisServer, admin: Redis, prefix: str
) -> None:
    await admin.set(f"{prefix}:version", LAYOUT_VERSION + 1)
    backend = RedisStorageBackend(redis_server.url, prefix=prefix)
    with pytest.raises(ConfigurationError, match=f"layout version {LAYOUT_VERSION + 1}"):
        await backend.get_run("run-1")


async def test_an_older_layout_is_read_and_moved_up(
    redis_server: RedisServer, admin: Redis, prefix: str
) -> None:
    """Layout 1 data reads correctly here; the marker moves up so that processes of the older
    release refuse what this one writes (a hook digest they would take for a token)."""
    await admin.set(f"{prefix}:version", 1)
    backend = RedisStorageBackend(redis_server.url, prefix=prefix)
    assert await backend.get_run("run-1") is None
    assert int(await admin.get(f"{prefix}:version")) == LAYOUT_VERSION == 2
    await backend.close()


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "url", "prefix"),
    [
        ({"url": "redis://localhost:6379/0"}, "redis://localhost:6379/0", "pyworkflow"),
        (
            {"type": "redis", "url": "rediss://:pw@cache:6380/2", "prefix": "app"},
            "rediss://:pw@cache:6380/2",
            "app",
        ),
        (
            {"type": "redis", "host": "cache", "port": "6380", "password": "pw", "db": 3},
            "redis://:pw@cache:6380/3",
            "pyworkflow",
        ),
        ({"type": "redis"}, "redis://localhost:6379/0", "pyworkflow"),
    ],
)
def test_config_to_storage(config: dict[str, Any], url: str, prefix: str) -> None:
    backend = config_to_storage(config)  # no server needed: constructing does no I/O
    assert isinstance(backend, RedisStorageBackend)
    assert (backend.url, backend.prefix) == (url, prefix)
    described = storage_to_config(backend)
    assert described == {"type": "redis", "url": url, "prefix": prefix}
    assert storage_to_config(config_to_storage(described)) == described


async def test_a_backend_from_its_config_sees_the_same_data(redis: RedisStorageBackend) -> None:
    await new_run(redis, idempotency_key="k")
    twin = config_to_storage(storage_to_config(redis))
    try:
        assert await twin.get_run_by_idempotency_key("k") == await redis.get_run("run-1")
    finally:
        await twin.close()


# -- timers -----------------------------------------------------------------------------------


async def test_timers_claimed_by_many_backends_fire_once(
    redis_server: RedisServer, prefix: str
) -> None:
    backends = [RedisStorageBackend(redis_server.url, prefix=prefix) for _ in range(4)]
    run_ids = [f"run-{i}" for i in range(50)]
    for i, run_id in enumerate(run_ids):
        await new_run(backends[i % 4], run_id)
        await backends[i % 4].commit(Commit(run_id, now=at(0), timer=at(i)))
    claim_for = timedelta(seconds=30)

    async def claim_all(now: datetime) -> list[str]:
        batches = await asyncio.gather(
            *(b.claim_due_timers(now, limit=7, claim_for=claim_for) for b in backends * 5)
        )
        return sorted(timer.run_id for batch in batches for timer in batch)

    assert await claim_all(at(100)) == sorted(run_ids)
    assert await claim_all(at(129)) == []  # every claim holds until 130
    assert await claim_all(at(130)) == sorted(run_ids)
    for backend in backends:
        await backend.close()


# -- layout -----------------------------------------------------------------------------------


async def test_every_key_is_under_the_prefix(
    redis: RedisStorageBackend, admin: Redis, prefix: str
) -> None:
    before = {key async for key in admin.scan_iter()}
    await new_run(redis, idempotency_key="k", status=RunStatus.RUNNING)
    await redis.commit(
        Commit(
            "run-1",
            [step_started("run-1", "s1")],
            now=at(1),
            timer=at(5),
            lease=("w", at(9)),
            hooks_created=[a_hook("run-1", "h1")],
        )
    )
    await redis.commit(hook_received("run-1", "h1"))
    await redis.claim_due_timers(at(6))
    await redis.claim_expired_leases(at(10), "sweeper", at(40))
    await redis.put_checkpoint("run-1", "s1", "cp")

    added = {key async for key in admin.scan_iter()} - before
    assert added and all(key.startswith(f"{prefix}:") for key in added)


async def test_ids_with_separators_stay_apart(redis: RedisStorageBackend) -> None:
    for run_id in ("r", "r:x", "r2", "é"):
        await new_run(redis, run_id, workflow_name=f"flow:{run_id}")
        hooks = [a_hook(run_id, hook_id) for hook_id in ("h:1", "h", "ü")]
        await redis.commit(Commit(run_id, now=at(1), hooks_created=hooks))

    assert [h.hook_id for h in await redis.list_hooks("r")] == ["h", "h:1", "ü"]
    assert {h.run_id for h in await redis.list_hooks("r:x")} == {"r:x"}
    assert await redis.list_hooks("") == []
    runs, _ = await redis.list_runs(workflow_name="flow:r")
    assert [run.run_id for run in runs] == ["r"]
    log = await redis.get_events("r:x")
    assert [e.run_id for e in log] == ["r:x"] and await redis.get_events("r:") == []


async def test_times_round_trip_and_order_far_from_the_epoch(redis: RedisStorageBackend) -> None:
    instants = {
        "ancient": datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "before-epoch": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "epoch": datetime(1970, 1, 1, tzinfo=UTC),
        "far": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    }
    for run_id in ("far", "epoch", "ancient", "before-epoch"):
        await redis.create_run(a_run(run_id, created_at=instants[run_id]), [started(run_id)])

    runs, _ = await redis.list_runs()
    assert [(run.run_id, run.created_at) for run in runs] == list(instants.items())
    event = Event("far", EventType.STEP_STARTED, {"command_id": "s"}, timestamp=instants["far"])
    await redis.commit(Commit("far", [event]))
    assert (await redis.get_events("far", after_sequence=1))[0].timestamp == instants["far"]
