"""A child awaited alone runs in its parent's activation (``Engine._child_here``), on every
backend (``PYWORKFLOW_TEST_STORAGE``): no message for the child, no activation of the parent
to hear how it ended, and the child's first write joined to the parent's write that creates it
(one transaction on SQLite). A child about to write anything but its ending (a step, a wait)
is left to its own activation, as before: cancelling the parent is not held up by it. A joined
write that fails leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pyworkflow import (
    cancel_workflow,
    configure_from_yaml,
    get_workflow_result,
    sleep,
    start,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow.model.exceptions import SequenceConflictError
from pyworkflow.model.schemas import Commit, RunStatus
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import Env
from tests.unit.test_children import children_of, settle_all

ran: list[int] = []


@workflow(name="here_square")
async def square(n: int) -> int:
    return n * n


@workflow(name="here_sum_of_squares")
async def sum_of_squares(n: int) -> int:
    total = 0
    for i in range(n):
        total += await start_child_workflow(square, i)
    return total


@step(name="here_double")
async def double(n: int) -> int:
    ran.append(n)
    return 2 * n


@workflow(name="here_doubled")
async def doubled(n: int) -> int:
    return await double(n)


@workflow(name="here_parent_of_doubled")
async def parent_of_doubled(n: int) -> int:
    return await start_child_workflow(doubled, n) + 1


@workflow(name="here_sleepy")
async def sleepy() -> str:
    await sleep("1h")
    return "late"


@workflow(name="here_waits")
async def waits() -> str:
    return "parent of " + await start_child_workflow(sleepy)


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


class Enqueued:
    """Counts the activations an engine sends to its queue."""

    def __init__(self, env: Env | Any) -> None:
        self.run_ids: list[str] = []
        queue = (env.engine if isinstance(env, Env) else env).queue
        original = queue.enqueue_activation

        async def counted(run_id: str) -> None:
            self.run_ids.append(run_id)
            await original(run_id)

        queue.enqueue_activation = counted  # type: ignore[method-assign]


async def test_children_awaited_alone_run_in_their_parent_s_activation(env: Env) -> None:
    sent = Enqueued(env)
    run_id = await env.start(sum_of_squares, 4)
    # No settle: the parent's first activation ran the four children and ended the run.
    run = await env.storage.get_run(run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == 0 + 1 + 4 + 9
    children = await children_of(env, run_id)
    assert sorted(c.run_id for c in children) == [f"{run_id}.c{i}" for i in range(1, 5)]
    assert {c.status for c in children} == {RunStatus.COMPLETED}
    assert sent.run_ids == []  # no message for a child, none for the parent
    events = [e.type.value for e in await env.storage.get_events(run_id)]
    assert events.count("child_workflow.started") == events.count("child_workflow.completed") == 4


async def test_a_child_that_runs_a_step_is_left_to_its_own_activation(env: Env) -> None:
    """The child stops before its first write that is not its ending (its lease for the step):
    the parent blocks in the write that creates the child, and the child is queued. Its steps
    are its own: the parent is not held while they run."""
    sent = Enqueued(env)
    run_id = await env.start(parent_of_doubled, 5)
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    assert ran == [] and sent.run_ids == [f"{run_id}.c1"]
    await env.settle()
    assert await get_workflow_result(run_id, storage=env.storage) == 11
    assert ran == [5]
    child = (await children_of(env, run_id))[0]
    child_events = [e.type.value for e in await env.storage.get_events(child.run_id)]
    assert child_events == [
        "workflow.started",
        "step.started",
        "step.completed",
        "workflow.completed",
    ]


async def test_a_child_that_blocks_is_left_to_its_own_activations(env: Env) -> None:
    sent = Enqueued(env)
    run_id = await env.start(waits)
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    (child,) = await children_of(env, run_id)
    assert sent.run_ids == [child.run_id]  # stopped before its wait: queued, as before
    run = await settle_all(env, run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == "parent of late"
    assert run_id in sent.run_ids  # the child's ending woke the parent, as always


async def test_without_inline_children_a_child_takes_the_queue(env: Env) -> None:
    env.engine.options.inline_children = False
    sent = Enqueued(env)
    run_id = await env.start(sum_of_squares, 2)
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    run = await settle_all(env, run_id)
    assert run.status is RunStatus.COMPLETED and f"{run_id}.c1" in sent.run_ids
    assert await get_workflow_result(run_id, storage=env.storage) == 1


async def test_the_inline_children_key_reaches_both_runtimes_and_their_engines(
    tmp_path: Path,
) -> None:
    """``configure(inline_children=False)`` (or ``inline_children: false`` in YAML) turns the
    inline child off for the configured local runtime, and for the Celery runtime's engines."""
    from pyworkflow.api import get_runtime
    from pyworkflow.celery import CeleryRuntime, CelerySettings
    from pyworkflow.storage import InMemoryStorageBackend

    storage = InMemoryStorageBackend()
    config = tmp_path / "pyworkflow.config.yaml"
    config.write_text("inline_children: false\n")
    configure_from_yaml(config)
    runtime = get_runtime("local")
    try:
        engine = runtime.engine_for(storage)
        assert engine.options.inline_children is False
        sent = Enqueued(engine)
        run_id = await start(sum_of_squares, 2, runtime=runtime, storage=storage)
        await runtime.drain(storage)  # type: ignore[attr-defined]
        assert f"{run_id}.c1" in sent.run_ids  # the child took the queue
        assert await get_workflow_result(run_id, storage=storage) == 1
    finally:
        await runtime.shutdown()
    settings = CelerySettings.from_config()
    assert settings.inline_children is False
    celery = CeleryRuntime(settings=settings, serve=False)
    assert celery.engine_for(storage).options.inline_children is False
    assert CelerySettings().inline_children is True  # (the default)


async def test_a_joined_write_that_fails_leaves_nothing_and_the_run_goes_on(env: Env) -> None:
    """The parent's write creating the child fails once (another writer got in first): the
    child's first write, joined to it, is not written either; the parent's activation starts
    again from storage and creates the child once, whose step runs once."""
    storage = env.storage
    failed: list[str] = []
    commit, commit_many = storage.commit, storage.commit_many

    def refuse(commits: list[Commit]) -> None:
        if not failed and any(c.runs_created for c in commits):
            failed.append(commits[0].run_id)
            raise SequenceConflictError("another writer got in first")

    async def refusing_commit(one: Commit) -> int:
        refuse([one])
        return await commit(one)

    async def refusing_commit_many(many: list[Commit]) -> list[int]:
        refuse(many)
        return await commit_many(many)

    storage.commit = refusing_commit
    storage.commit_many = refusing_commit_many
    run_id = await env.start(parent_of_doubled, 3)
    await env.settle()
    assert failed == [run_id]
    assert await get_workflow_result(run_id, storage=storage) == 7
    assert ran == [3]
    assert [c.run_id for c in await children_of(env, run_id)] == [f"{run_id}.c1"]


async def test_on_sqlite_each_child_costs_one_transaction(env: Env) -> None:
    if not isinstance(env.storage, SQLiteStorageBackend):
        pytest.skip("counts SQLite transactions")
    await env.start(sum_of_squares, 1)  # (opens the connection)
    conn: Any = env.storage._conn
    assert isinstance(conn, sqlite3.Connection)
    begun: list[str] = []
    conn.set_trace_callback(lambda sql: begun.append(sql) if sql.startswith("BEGIN") else None)
    try:
        await env.start(sum_of_squares, 5)
    finally:
        conn.set_trace_callback(None)
    # The run's creation, one per child (created, run and ended), the run's ending.
    assert len(begun) == 1 + 5 + 1


async def root_of(env: Env, workflow_name: str) -> str:
    runs, _ = await env.storage.list_runs(workflow_name=workflow_name, limit=100)
    [root] = [r.run_id for r in runs if r.parent_run_id is None]
    return root


gate: dict[str, asyncio.Event] = {}


@step(name="here_long")
async def long_step() -> str:
    gate["started"].set()
    await gate["release"].wait()
    return "done"


@workflow(name="here_long_child")
async def long_child() -> str:
    return await long_step()


@workflow(name="here_long_parent")
async def long_parent() -> str:
    return await start_child_workflow(long_child)


async def test_cancelling_a_parent_is_not_held_up_by_its_child_s_step(env: Env) -> None:
    gate["started"], gate["release"] = asyncio.Event(), asyncio.Event()
    started = asyncio.ensure_future(env.start(long_parent))
    try:
        await asyncio.wait_for(gate["started"].wait(), timeout=10)
        root = await root_of(env, "here_long_parent")
        # While the child's step still runs, the parent is cancelled, and its child with it.
        assert await cancel_workflow(root, wait=True, timeout=10, storage=env.storage)
        assert (await env.storage.get_run(root)).status is RunStatus.CANCELLED
    finally:
        gate["release"].set()
        await started
    await env.settle()
    child = await env.storage.get_run(f"{root}.c1")
    assert child.status is RunStatus.CANCELLED
