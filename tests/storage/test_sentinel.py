"""Redis storage through Redis Sentinel (``sentinel://``), on a real group: a master, a replica
and three sentinels (``tests/sentinel.py``).

The backend finds the master through the sentinels; after a failover it drops its connections to
the old master and finds the new one, without retrying a call whose reply was lost; runs in
flight on the local runtime all complete across a failover; a URL whose sentinels do not answer,
or do not know the master's name, is one clear ``ConfigurationError``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pyworkflow import api
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.model.events import EventType
from pyworkflow.model.exceptions import ConfigurationError, SequenceConflictError
from pyworkflow.model.schemas import Commit, RunStatus
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage import config_to_storage
from pyworkflow.storage.redis import RedisStorageBackend
from pyworkflow_testing import oracles
from tests import polling
from tests.conftest import namespace_for
from tests.integration.test_server_restart import pipeline
from tests.sentinel import Node, SentinelGroup, sentinel_group
from tests.servers import free_port
from tests.storage.test_contract import new_run, step_completed, step_started

pytestmark = pytest.mark.integration

RUNS = 8
DEADLINE = 30.0


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with sentinel_group() as made:
        yield made


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    return namespace_for(tmp_path)


@pytest.fixture
async def storage(group: SentinelGroup, prefix: str) -> AsyncIterator[RedisStorageBackend]:
    backend = RedisStorageBackend(group.url(), prefix=prefix)
    yield backend
    await backend.close()


def our_connections(node: Node) -> int:
    """Clients connected to ``node`` other than the sentinels and this question's own."""
    with node.client() as client:
        me = client.client_id()
        return sum(
            1
            for info in client.client_list(_type="normal")
            if int(info["id"]) != me and not info["name"].startswith("sentinel-")
        )


# -- through a sentinel:// URL ------------------------------------------------------------------


async def test_the_contract_basics_work_through_a_sentinel_url(
    group: SentinelGroup, prefix: str
) -> None:
    storage = config_to_storage({"type": "redis", "url": group.url(db=3), "prefix": prefix})
    assert isinstance(storage, RedisStorageBackend)
    try:
        await new_run(storage)
        head = await storage.commit(
            Commit(
                "run-1",
                [step_started("run-1", "s1"), step_completed("run-1", "s1")],
                expected_sequence=1,
                status=RunStatus.RUNNING,
            )
        )
        assert head == 3
        with pytest.raises(SequenceConflictError):
            await storage.commit(
                Commit("run-1", [step_started("run-1", "s2")], expected_sequence=1)
            )
        events = await storage.get_events("run-1")
        assert [e.type for e in events] == [
            EventType.WORKFLOW_STARTED,
            EventType.STEP_STARTED,
            EventType.STEP_COMPLETED,
        ]
        run = await storage.get_run("run-1")
        assert run is not None and run.status is RunStatus.RUNNING and run.last_sequence == 3
    finally:
        await storage.close()
    # The data is on the master the sentinels name, in database 3.
    with redis.Redis(port=group.master().port, db=3, decode_responses=True) as master:
        assert master.llen(f"{prefix}:log:run-1") == 3


async def test_a_demoted_master_loses_its_idle_connections_and_the_new_one_is_found(
    group: SentinelGroup, storage: RedisStorageBackend
) -> None:
    await new_run(storage)
    await asyncio.gather(*(storage.get_run("run-1") for _ in range(6)))  # several connections
    old = group.master()
    assert our_connections(old) >= 2

    # Sentinel promotes the replica; the old master, a replica now, keeps its clients.
    _, new = await asyncio.to_thread(group.fail_over, drop_clients=False)
    commit = Commit("run-1", [step_started("run-1", "s1")], expected_sequence=1)
    with pytest.raises(ConfigurationError, match="read only replica") as refused:
        await storage.commit(commit)  # refused by the old master, never applied: READONLY
    assert f"127.0.0.1:{old.port}" in str(refused.value)
    assert refused.value.__context__ is None  # one error, not redis-py's chain

    # Every connection to the old master is closed; the next call finds the new master.
    await polling.until(lambda: our_connections(old) == 0, "the old connections to close", 10)
    assert await storage.commit(commit) == 2
    assert our_connections(new) >= 1 and our_connections(old) == 0
    assert [e.type for e in await storage.get_events("run-1")] == [
        EventType.WORKFLOW_STARTED,
        EventType.STEP_STARTED,
    ]


async def test_a_master_refusing_writes_for_want_of_replicas_is_an_outage(
    group: SentinelGroup, storage: RedisStorageBackend
) -> None:
    await new_run(storage)
    master = group.master()
    commit = Commit("run-1", [step_started("run-1", "s1")], expected_sequence=1)
    with master.client() as admin:
        admin.config_set("min-replicas-to-write", 2)  # it has one
    try:
        with pytest.raises(ConfigurationError, match="NOREPLICAS"):
            await storage.commit(commit)
        # Dropped, as for a demoted master.
        await polling.until(lambda: our_connections(master) == 0, "the connections to close", 10)
    finally:
        with master.client() as admin:
            admin.config_set("min-replicas-to-write", 0)
    assert await storage.commit(commit) == 2


# -- runs in flight across a failover (``pipeline``: the storage-restart tests' workload) --------


async def _runs(storage: RedisStorageBackend, run_ids: list[str]) -> list[Any] | None:
    """The runs, or None while storage is in the middle of a failover."""
    try:
        return [await storage.get_run(run_id) for run_id in run_ids]
    except ConfigurationError:
        return None


async def test_runs_in_flight_all_complete_across_a_failover(
    group: SentinelGroup, storage: RedisStorageBackend
) -> None:
    runtime = LocalRuntime(poll_interval=0.2, lease_ttl=2.0)
    try:
        run_ids = [
            await api.start(pipeline, seed, runtime=runtime, storage=storage)
            for seed in range(RUNS)
        ]

        async def under_way() -> bool:
            runs = await _runs(storage, run_ids)
            return runs is not None and all(run.last_sequence > 3 for run in runs)

        await polling.until(under_way, "every run to have done some work", DEADLINE)
        runs = await _runs(storage, run_ids)
        assert runs is not None and not any(run.status.is_terminal for run in runs)
        old, new = await asyncio.to_thread(group.fail_over)

        async def all_finished() -> bool:
            runs = await _runs(storage, run_ids)
            return runs is not None and all(run.status.is_terminal for run in runs)

        await polling.until(all_finished, "every run to finish", DEADLINE)
    finally:
        await runtime.shutdown()

    for seed, run_id in enumerate(run_ids):
        run = await storage.get_run(run_id)
        assert run is not None and run.status is RunStatus.COMPLETED, (run_id, run)
        assert await api.get_workflow_result(run_id, storage=storage) == seed + 6
        events = await storage.get_events(run_id)
        completed = Counter(e.command_id for e in events if e.type is EventType.STEP_COMPLETED)
        assert len(completed) == 4 and set(completed.values()) == {1}, completed
        assert oracles.well_formed(run, events) == [], run_id
        assert await oracles.replays_the_same(workflow_definition_of(pipeline).func, events) == []
    # All of it is on the new master.
    with redis.Redis(port=new.port, decode_responses=True) as master:
        assert master.execute_command("ROLE")[0] == "master"
        assert all(master.exists(f"{storage.prefix}:run:{run_id}") for run_id in run_ids)
    assert group.master() is new and old is not new


# -- URLs that cannot work ------------------------------------------------------------------------


async def test_sentinels_that_do_not_answer_are_one_clear_error() -> None:
    url = f"sentinel://:s3cret@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster"
    storage = RedisStorageBackend(url)
    with pytest.raises(ConfigurationError, match="no sentinel answered") as refused:
        await storage.get_run("run-1")
    message = str(refused.value)
    assert "cannot use Redis at 'sentinel://:***@127.0.0.1:" in message
    assert "s3cret" not in message and "Connect call failed" in message
    assert refused.value.__context__ is None
    await storage.close()


async def test_a_master_name_no_sentinel_knows_is_one_clear_error(group: SentinelGroup) -> None:
    url = group.url(master_name="nosuchmaster") + "?sentinel_password=hidden"
    storage = RedisStorageBackend(url)
    with pytest.raises(ConfigurationError, match="no sentinel knows a master named") as refused:
        await storage.get_run("run-1")
    message = str(refused.value)
    assert "'nosuchmaster'" in message and "hidden" not in message
    assert all(f"127.0.0.1:{s.port}" in message for s in group.sentinels)  # every one asked
    await storage.close()


async def test_a_redis_server_is_not_a_sentinel(group: SentinelGroup) -> None:
    storage = RedisStorageBackend(f"sentinel://127.0.0.1:{group.master().port}/mymaster")
    with pytest.raises(ConfigurationError, match="no sentinel answered.*SENTINEL"):
        await storage.get_run("run-1")
    await storage.close()
