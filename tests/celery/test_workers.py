"""The celery runtime on real worker processes: runs complete, timers are durable, retries honour
their delays, loops persist per process, and starting is durable and idempotent.

Two workers serve the whole module (``conftest.cluster``): ``a`` is a prefork worker with two
children, ``b`` a solo worker; both use the SQLite file of the module and Redis database 11.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import pytest

from pyworkflow import (
    EventType,
    HookStatus,
    RunStatus,
    cancel_workflow,
    get_hook_token,
    resume_hook,
)
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.storage import SQLiteStorageBackend
from pyworkflow_testing import oracles
from tests.celery import workflows as wf
from tests.celery.conftest import LEASE_TTL, Client, heal, until
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

COMPLETIONS = {
    EventType.STEP_COMPLETED,
    EventType.STEP_FAILED,
    EventType.SLEEP_COMPLETED,
    EventType.HOOK_RECEIVED,
}


async def answer_hooks(client: Client, run_ids: list[str], payload: Any) -> set[str]:
    """Deliver ``payload`` to every pending hook of ``run_ids``; returns the runs answered."""
    answered = set()
    for hook in await client.storage.list_hooks(status=HookStatus.PENDING):
        if hook.run_id in run_ids:
            token = await get_hook_token(hook.run_id, hook.hook_id, storage=client.storage)
            await resume_hook(token, payload, storage=client.storage)
            answered.add(hook.run_id)
    return answered


async def answer_every_hook(client: Client, run_ids: list[str], payload: Any) -> None:
    """Wait until every run of ``run_ids`` waits on a hook, answering each as it appears."""
    answered: set[str] = set()

    async def all_answered() -> bool:
        answered.update(await answer_hooks(client, run_ids, payload))
        return len(answered) == len(run_ids)

    await until(all_answered, "every run to wait on its approval hook")


async def check_logs(client: Client, run_ids: list[str]) -> None:
    """Every log is well formed, replays from scratch, and records each completion once."""
    for run_id in run_ids:
        run = await client.run(run_id)
        events = await client.events(run_id)
        twice = [
            key
            for key, count in Counter(
                (e.type.value, e.command_id) for e in events if e.type in COMPLETIONS
            ).items()
            if count > 1
        ]
        assert not twice, f"{run_id}: completions recorded twice: {twice}"
        assert oracles.well_formed(run, events) == [], run_id
        definition = workflow_definition_of_name(run.workflow_name)
        assert await oracles.replays_the_same(definition, events) == [], run_id


def workflow_definition_of_name(name: str) -> Any:
    from pyworkflow.core.registry import get_workflow

    return get_workflow(name).func


async def test_twenty_workflows_with_steps_sleeps_and_a_hook_complete(client: Client) -> None:
    ledger = str(client.cluster.ledger)
    run_ids = [await client.start(wf.order, ledger, n) for n in range(20)]

    await answer_every_hook(client, run_ids, {"ok": True})
    results = await client.completed(run_ids)
    assert results == [wf.order_result(n) for n in range(20)]
    await check_logs(client, run_ids)

    lateness = []
    for run_id in run_ids:
        events = await client.events(run_id)
        started = {e.command_id: e for e in events}
        for event in events:
            if event.type is EventType.SLEEP_COMPLETED:
                due = datetime.fromisoformat(started_sleep(events, event.command_id))
                lateness.append((event.timestamp - due).total_seconds())
        # RetryableError(retry_after=0.4) and retry_delay=0.3 are honoured through timers
        flaky = [e for e in events if e.command_id and e.command_id.startswith("step:celery_fl")]
        shaky = [e for e in events if e.command_id and e.command_id.startswith("step:celery_sh")]
        for steps, delay in ((flaky, 0.4), (shaky, 0.3)):
            retrying = next(e for e in steps if e.type is EventType.STEP_RETRYING)
            second = next(
                e for e in steps if e.type is EventType.STEP_STARTED and e.data["attempt"] == 2
            )
            assert (second.timestamp - retrying.timestamp).total_seconds() >= delay - 0.01
        assert started  # every run has events
    lateness.sort()
    assert lateness[0] >= 0, "a sleep woke early"
    assert lateness[int(0.99 * (len(lateness) - 1))] <= 1.0, f"timer lateness: {lateness}"


def started_sleep(events: list[Any], command_id: str) -> str:
    return next(
        e.data["resume_at"]
        for e in events
        if e.type is EventType.SLEEP_STARTED and e.command_id == command_id
    )


async def test_a_sleep_longer_than_the_visibility_timeout_wakes_once(client: Client) -> None:
    seconds = client.cluster.visibility_timeout + 0.5
    run_id = await client.start(wf.long_sleep, str(client.cluster.ledger), seconds)
    assert await client.completed([run_id], deadline=seconds + 15) == ["after-sleep"]
    events = await client.events(run_id)
    types = [e.type.value for e in events]
    assert types.count("sleep.started") == types.count("sleep.completed") == 1
    assert "workflow.interrupted" not in types
    after = [line for line in client.ledger() if line["run_id"] == run_id]
    assert len(after) == 1, f"the step after the sleep ran {len(after)} times"


async def test_a_step_timeout_is_enforced_on_the_worker(client: Client) -> None:
    run_id = await client.start(wf.timeouts, str(client.cluster.ledger))
    [result] = await client.completed([run_id])
    assert result.startswith("timed out: step 'celery_too_slow' timed out after 0.3s")
    failed = [e for e in await client.events(run_id) if e.type is EventType.STEP_FAILED]
    assert failed[0].data["error_type"].endswith("StepTimeoutError")
    assert (failed[0].timestamp - (await client.run(run_id)).created_at).total_seconds() < 5


async def test_each_worker_process_keeps_one_event_loop(client: Client) -> None:
    cluster = client.cluster
    await cluster.wait_ready(client.app, "a", "b")
    run_ids = [await client.start(wf.spread, str(cluster.ledger), 6, 0.2) for _ in range(3)]
    results = await client.completed(run_ids)
    loops: dict[int, set[int]] = defaultdict(set)
    threads: dict[int, set[str]] = defaultdict(set)
    for spots in results:
        for spot in spots:
            loops[spot["pid"]].add(spot["loop"])
            threads[spot["pid"]].add(spot["thread"])
    assert all(len(ids) == 1 for ids in loops.values()), loops
    assert all(names == {"pyworkflow-loop"} for names in threads.values()), threads
    prefork = cluster.workers["a"].pids() - {cluster.workers["a"].proc.pid}  # type: ignore[union-attr]
    solo = cluster.workers["b"].pids()
    assert set(loops) & prefork, f"no step ran in a prefork child: {set(loops)} vs {prefork}"
    assert set(loops) & solo, f"no step ran in the solo worker: {set(loops)} vs {solo}"


async def test_concurrent_starts_with_one_idempotency_key_give_one_run(client: Client) -> None:
    other = SQLiteStorageBackend(str(client.cluster.db))  # a second caller, its own connection
    try:
        ids = await asyncio.gather(
            client.start(wf.two_steps, str(client.cluster.ledger), idempotency_key="order-42"),
            wf_start(client, other, "order-42"),
        )
    finally:
        await other.close()
    assert ids[0] == ids[1]
    assert await client.completed([ids[0]]) == ["xy"]
    types = [e.type.value for e in await client.events(ids[0])]
    assert types.count("workflow.started") == 1


async def wf_start(client: Client, storage: SQLiteStorageBackend, key: str) -> str:
    from pyworkflow import api

    return await api.start(
        wf.two_steps,
        str(client.cluster.ledger),
        runtime=client.runtime,
        storage=storage,
        idempotency_key=key,
    )


async def test_a_run_whose_caller_died_before_enqueueing_is_started_by_the_sweeper(
    client: Client,
) -> None:
    """``start`` writes first, then enqueues: a caller lost in between leaves a leased run."""
    engine = client.runtime.engine_for(client.storage)
    run, created = await engine.start_run(
        workflow_definition_of(wf.two_steps), (str(client.cluster.ledger),), {}
    )
    assert created  # stored, never enqueued: what a caller killed at that point leaves behind
    assert await client.completed([run.run_id], deadline=LEASE_TTL * 3 + 10) == ["xy"]
    types = [e.type.value for e in await client.events(run.run_id)]
    assert types[:2] == ["workflow.started", "workflow.interrupted"]


async def test_a_fault_free_run_logs_the_same_on_the_simulator_and_on_celery(
    client: Client, tmp_path: Any
) -> None:
    """Same workflow, same inputs: the same event types and command ids, in the same order."""
    from pyworkflow_testing import Simulation

    sim = Simulation(seed=3, workers=2, dispatch_steps=True)
    try:
        simulated = await sim.start(wf.replayable, str(tmp_path / "sim-ledger.jsonl"))
        assert await sim.wait_for_hook(simulated, "approval")
        await sim.resume_hook(simulated, "approval", {"ok": True})
        await sim.run_until_idle()
        expected_result = await simulated.result()
        expected = [(e.type.value, e.command_id) for e in await simulated.events()]
        sim.check()
    finally:
        sim.close()

    run_id = await client.start(wf.replayable, str(client.cluster.ledger))

    async def answered() -> bool:
        return bool(await answer_hooks(client, [run_id], {"ok": True}))

    await until(answered, "the run to wait on its approval hook")
    assert await client.completed([run_id]) == [expected_result]
    assert [(e.type.value, e.command_id) for e in await client.events(run_id)] == expected
    assert ("step.started", "step:celery_work:1") in expected  # dispatched and inline steps,
    assert ("step.retrying", "step:celery_flaky:4") in expected  # a retry, a sleep and a hook


async def test_a_step_longer_than_the_lease_keeps_its_run_leased(client: Client) -> None:
    """The worker executing a step renews the run's lease: no sweeper can take the run over."""
    seconds = LEASE_TTL + 0.8  # past its lease, within the 3 s visibility timeout
    run_id = await client.start(wf.long_step, str(client.cluster.ledger), seconds)

    def started() -> float | None:
        lines = [line for line in client.ledger() if line["run_id"] == run_id]
        return float(lines[0]["at"]) if lines else None

    began = await until(started, "the long step to start")
    await until(lambda: time.time() > began + LEASE_TTL + 0.3, "the run's first lease to lapse")
    # A sweep now, from this process: only a lease nobody renewed could be taken.
    assert run_id not in await client.runtime.engine_for(client.storage).recover_expired()
    assert await client.completed([run_id]) == ["long"]
    types = [e.type.value for e in await client.events(run_id)]
    assert "workflow.interrupted" not in types
    assert len([line for line in client.ledger() if line["run_id"] == run_id]) == 1


async def test_cancelling_a_run_sleeping_on_a_worker_ends_it_now(client: Client) -> None:
    """The request is recorded by the caller, the broker wakes the run on a worker, the sleep
    raises CancellationError there, and the run ends cancelled without the step after it."""
    run_id = await client.start(wf.long_sleep, str(client.cluster.ledger), 3600)

    async def sleeping() -> bool:
        return any(e.type is EventType.SLEEP_STARTED for e in await client.events(run_id))

    await until(sleeping, "the run to start its hour-long sleep")
    assert await cancel_workflow(
        run_id, reason="test", storage=client.storage, runtime=client.runtime
    )
    [run] = await client.finished([run_id])
    assert run.status is RunStatus.CANCELLED
    assert [e.type.value for e in await client.events(run_id)][-1] == "workflow.cancelled"
    assert not [line for line in client.ledger() if line["run_id"] == run_id]


async def children_of(client: Client, parent_id: str) -> list[Any]:
    runs, _ = await client.storage.list_runs(limit=1000)
    return [run for run in runs if run.parent_run_id == parent_id]


async def test_twenty_children_survive_a_sigkilled_worker(client: Client) -> None:
    """A parent with 20 children on two workers, one SIGKILLed mid-way: it completes, with 20
    child runs each recorded once in the parent and each ending recorded once."""
    ledger = str(client.cluster.ledger)
    run_id = await client.start(wf.parent, ledger, 20)

    async def children_at_work() -> bool:
        return sum(line["run_id"].startswith(run_id) for line in client.ledger()) >= 3

    await until(children_at_work, "the children to start working")
    client.cluster.kill("a")  # SIGKILL: the prefork worker and its pool
    [total] = await client.completed([run_id], deadline=60)
    assert total == sum(n * n for n in range(20))
    children = await children_of(client, run_id)
    assert sorted(c.run_id for c in children) == sorted(f"{run_id}.c{i}" for i in range(1, 21))
    assert {c.status for c in children} == {RunStatus.COMPLETED}
    events = await client.events(run_id)
    started = [e.data["child_run_id"] for e in events if e.type is EventType.CHILD_WORKFLOW_STARTED]
    ended = [e.data["child_run_id"] for e in events if e.type is EventType.CHILD_WORKFLOW_COMPLETED]
    assert sorted(started) == sorted(ended) == sorted(c.run_id for c in children)
    for c in children:  # each child's step recorded once, whatever ran twice
        completed = [e for e in await client.events(c.run_id) if e.type in COMPLETIONS]
        assert len(completed) == 1


async def test_cancelling_a_parent_mid_sleep_cancels_its_tree(client: Client) -> None:
    ledger = str(client.cluster.ledger)
    run_id = await client.start(wf.sleepy_parent, ledger, 3)

    async def all_asleep() -> bool:
        children = await children_of(client, run_id)
        runs = [run_id, *(c.run_id for c in children)]
        if len(runs) < 4:
            return False
        for rid in runs:
            if not any(e.type is EventType.SLEEP_STARTED for e in await client.events(rid)):
                return False
        return True

    await until(all_asleep, "the parent and its three children to fall asleep")
    assert await cancel_workflow(
        run_id, reason="tree", storage=client.storage, runtime=client.runtime
    )
    children = await children_of(client, run_id)
    runs = await client.finished([run_id, *(c.run_id for c in children)])
    assert {run.status for run in runs} == {RunStatus.CANCELLED}
    assert not [line for line in client.ledger() if line["run_id"].startswith(run_id)]


async def test_a_dispatched_step_sees_its_run_cancelled_and_stops_early(client: Client) -> None:
    """The request is recorded by this process; the worker running the step finds it in the
    run's log at its next lease renewal, and ``check_cancellation()`` raises there."""
    ledger = str(client.cluster.ledger)
    run_id = await client.start(wf.chore, ledger, 100_000)  # ~17 minutes if never stopped

    async def chore_began() -> bool:
        return any(line.get("phase") == "began" for line in client.ledger())

    await until(chore_began, "the long step to begin on a worker")
    assert await cancel_workflow(
        run_id, reason="stop", storage=client.storage, runtime=client.runtime
    )
    [run] = await client.finished([run_id])
    assert run.status is RunStatus.CANCELLED
    stopped = [line for line in client.ledger() if line.get("phase") == "stopped"]
    assert len(stopped) == 1 and stopped[0]["after"] < 100_000
    types = [e.type.value for e in await client.events(run_id)]
    assert "step.failed" in types and "step.retrying" not in types


async def test_a_test_that_left_the_broker_down_and_a_worker_deaf_does_not_fail_the_next(
    client: Client, redis_server: RedisServer
) -> None:
    """What the ``client`` fixture does before each test (``heal``): a broker that a failed test
    left down is started, and a worker that no longer answers (here: stopped) is started again."""
    cluster = client.cluster
    deaf = cluster.workers["b"]
    assert deaf.proc is not None
    before = deaf.proc.pid
    os.kill(before, signal.SIGSTOP)
    redis_server.kill()
    await heal(cluster, client.app, redis_server, deadline=3.0)
    assert redis_server.alive()
    assert deaf.proc.pid != before
    answered = await asyncio.get_running_loop().run_in_executor(
        None, cluster.ping, client.app, list(cluster.workers), 2.0
    )
    assert answered == set(cluster.workers)
    run_id = await client.start(wf.pipeline, str(cluster.ledger), 7)
    assert await client.completed([run_id]) == [wf.pipeline_result(7)]
