"""Child workflows and continue-as-new on the local runtime (every test storage backend).

A child is a run of its own created with its parent's record of it; its ending reaches the
parent's log once; children run in parallel; a parent's end cancels its unfinished children;
nesting stops at 3 levels. ``continue_as_new`` ends a run and starts the next of its chain in one
write; ``get_workflow_result`` and ``get_workflow_chain`` follow the chain.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyworkflow import (
    CancellationError,
    ChildWorkflowError,
    ChildWorkflowFailedError,
    ChildWorkflowHandle,
    MaxNestingDepthError,
    RunStatus,
    cancel_workflow,
    continue_as_new,
    get_workflow_chain,
    get_workflow_events,
    get_workflow_result,
    hook,
    resume_hook,
    shield,
    sleep,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow.api import start
from pyworkflow.engine.replay import replay_history
from pyworkflow.runtime.local import LocalRuntime
from tests.conftest import Env

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@step()
async def note_child(what: str) -> str:
    ran.append(what)
    return what


@workflow()
async def square(x: int) -> int:
    await note_child(f"square {x}")
    return x * x


@workflow()
async def slow_square(x: int) -> int:
    await sleep("1h")
    return x * x


@workflow()
async def fails(x: int) -> int:
    raise ValueError(f"no good: {x}")


@workflow()
async def sums_squares(n: int) -> int:
    results = await asyncio.gather(*(start_child_workflow(square, i) for i in range(n)))
    return sum(results)


@workflow()
async def same_child_twice() -> list[int]:
    return [await start_child_workflow(square, 3), await start_child_workflow(square, 3)]


@workflow()
async def catches_a_failed_child() -> list[Any]:
    try:
        await start_child_workflow(fails, 7)
    except ChildWorkflowFailedError as exc:
        return [str(exc), exc.error_type, exc.child_workflow_name, exc.child_run_id]
    return []


@workflow()
async def with_a_handle() -> list[Any]:
    handle = await start_child_workflow(slow_square, 4, wait_for_completion=False)
    seen = [handle.child_workflow_name, await handle.get_status(), await handle.is_running()]
    seen.append(await handle.result())
    seen += [await handle.get_status(), await handle.is_terminal()]
    return seen


@workflow()
async def leaves_a_child_running() -> str:
    await start_child_workflow(slow_square, 2, wait_for_completion=False)
    return "parent done"


@workflow()
async def cancels_its_child() -> list[Any]:
    handle = await start_child_workflow(slow_square, 5, wait_for_completion=False)
    asked = await handle.cancel(reason="changed my mind")
    try:
        await handle.result()
    except ChildWorkflowFailedError as exc:
        return [asked, exc.error_type]
    return [asked]


@workflow()
async def nests(depth: int) -> int:
    if depth == 0:
        return 0
    return 1 + await start_child_workflow(nests, depth - 1)


@workflow()
async def sleeps_with_children(n: int) -> str:
    for i in range(n):
        await start_child_workflow(slow_square, i, wait_for_completion=False)
    await sleep("7d")
    return "woke"


@step()
async def starts_from_a_step(x: int) -> str:
    handle = await start_child_workflow(square, x, wait_for_completion=False)
    return handle.child_run_id


@workflow()
async def child_from_a_step() -> str:
    return await starts_from_a_step(6)


@step()
async def waits_in_a_step() -> int:
    return await start_child_workflow(square, 1)  # type: ignore[no-any-return]


@workflow()
async def waits_for_ever() -> object:
    return await hook("nobody answers")


@step()
async def starts_a_waiting_child() -> str:
    handle = await start_child_workflow(waits_for_ever, wait_for_completion=False)
    return handle.child_run_id


@workflow()
async def leaves_a_step_child() -> str:
    return await starts_a_waiting_child()


@workflow()
async def step_waits_for_a_child() -> int:
    return await waits_in_a_step()


@workflow()
async def counts_down(n: int, total: int = 0) -> int:
    if n == 0:
        return total
    await note_child(f"gen {n}")
    await continue_as_new(n - 1, total=total + n)
    raise AssertionError("continue_as_new returned")


@workflow()
async def parent_of_a_chain() -> int:
    return await start_child_workflow(counts_down, 3)


async def settle_all(env: Env, run_id: str, max_jumps: int = 200) -> Any:
    """Run everything due, jumping the clock to the earliest timer of any run, until ``run_id``
    has ended."""
    for _ in range(max_jumps):
        await env.settle()
        run = await env.storage.get_run(run_id)
        if run.status.is_terminal:
            return run
        runs, _ = await env.storage.list_runs(limit=1000)
        timers = [t for r in runs if (t := await env.storage.get_timer(r.run_id)) is not None]
        if not timers:
            raise AssertionError(f"run {run_id} is {run.status} and nothing is due")
        env.clock.current = max(env.clock.now(), min(t.fire_at for t in timers))
        await env.engine.fire_due_timers()
    raise AssertionError(f"run {run_id} did not end")


async def children_of(env: Env, parent_id: str) -> list[Any]:
    runs, _ = await env.storage.list_runs(limit=1000)
    return [r for r in runs if r.parent_run_id == parent_id]


async def types(env: Env, run_id: str) -> list[str]:
    return [e.type.value for e in await get_workflow_events(run_id, storage=env.storage)]


async def test_children_run_in_parallel_and_their_results_come_back(env: Env) -> None:
    run_id = await env.start(sums_squares, 4)
    run = await settle_all(env, run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == 0 + 1 + 4 + 9
    children = await children_of(env, run_id)
    assert sorted(c.run_id for c in children) == [f"{run_id}.c{i}" for i in range(1, 5)]
    assert {c.nesting_depth for c in children} == {1}
    assert all(c.status is RunStatus.COMPLETED for c in children)
    events = await types(env, run_id)
    assert events.count("child_workflow.started") == 4
    assert events.count("child_workflow.completed") == 4
    assert sorted(ran) == [f"square {i}" for i in range(4)]
    # The log replays from scratch to the same result.
    history = await get_workflow_events(run_id, storage=env.storage)
    assert await replay_history(sums_squares, history) == 14


async def test_the_same_child_twice_is_two_children(env: Env) -> None:
    run_id = await env.start(same_child_twice)
    await settle_all(env, run_id)
    assert await get_workflow_result(run_id, storage=env.storage) == [9, 9]
    assert len(await children_of(env, run_id)) == 2
    assert ran == ["square 3", "square 3"]


async def test_a_failed_child_raises_in_the_parent_with_its_error_type(env: Env) -> None:
    run_id = await env.start(catches_a_failed_child)
    await settle_all(env, run_id)
    message, error_type, name, child_id = await get_workflow_result(run_id, storage=env.storage)
    assert "no good: 7" in message and error_type == "builtins:ValueError"
    assert (name, child_id) == ("fails", f"{run_id}.c1")
    assert issubclass(ChildWorkflowFailedError, ChildWorkflowError)


async def test_a_handle_is_returned_at_once_and_waits_durably(env: Env) -> None:
    run_id = await env.start(with_a_handle)
    await settle_all(env, run_id)
    assert await get_workflow_result(run_id, storage=env.storage) == [
        "slow_square",
        "running",
        True,
        16,
        "completed",
        True,
    ]
    env.engine.evict()  # replay from storage answers the same
    history = await get_workflow_events(run_id, storage=env.storage)
    assert (await replay_history(with_a_handle, history))[3] == 16


async def test_a_parent_that_ends_cancels_its_unfinished_children(env: Env) -> None:
    run_id = await env.start(leaves_a_child_running)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.COMPLETED
    (child,) = await children_of(env, run_id)
    child = await settle_all(env, child.run_id)
    assert child.status is RunStatus.CANCELLED
    assert "cancellation.requested" in await types(env, child.run_id)
    # The parent has ended: the child's ending is not appended to its log.
    assert "child_workflow.cancelled" not in await types(env, run_id)


async def test_cancelling_a_parent_mid_sleep_cancels_its_tree(env: Env) -> None:
    run_id = await env.start(sleeps_with_children, 3)
    await env.settle()
    assert await cancel_workflow(run_id, reason="stop", storage=env.storage)
    await env.settle()
    assert (await env.storage.get_run(run_id)).status is RunStatus.CANCELLED
    children = await children_of(env, run_id)
    assert len(children) == 3
    assert {c.status for c in children} == {RunStatus.CANCELLED}
    with pytest.raises(CancellationError):
        await get_workflow_result(children[0].run_id, storage=env.storage)


async def test_handle_cancel_in_the_parent_cancels_the_child(env: Env) -> None:
    run_id = await env.start(cancels_its_child)
    await settle_all(env, run_id)
    asked, error_type = await get_workflow_result(run_id, storage=env.storage)
    assert asked is True and error_type.endswith(":CancellationError")
    assert "child_workflow.cancel_requested" in await types(env, run_id)
    assert "child_workflow.cancelled" in await types(env, run_id)


async def failed_root(storage: Any, workflow_name: str) -> str:
    """The one failed run of ``workflow_name`` with no parent (a start that raised)."""
    runs, _ = await storage.list_runs(workflow_name=workflow_name, limit=1000)
    [root] = [r.run_id for r in runs if r.parent_run_id is None and r.status is RunStatus.FAILED]
    return root


async def test_nesting_stops_at_three_levels(env: Env) -> None:
    run_id = await env.start(nests, 3)
    await settle_all(env, run_id)
    assert await get_workflow_result(run_id, storage=env.storage) == 3
    deep = await env.start(nests, 4)
    run = await settle_all(env, deep)
    assert run.status is RunStatus.FAILED
    with pytest.raises(ChildWorkflowFailedError, match="MaxNestingDepthError|nest at most 3"):
        await get_workflow_result(deep, storage=env.storage)
    leaf = await env.storage.get_run(f"{deep}.c1.c1.c1")
    assert leaf.nesting_depth == 3 and leaf.status is RunStatus.FAILED
    with pytest.raises(MaxNestingDepthError, match="at most 3 levels"):
        await get_workflow_result(leaf.run_id, storage=env.storage)


async def test_a_step_starts_a_child_and_gets_a_handle(env: Env) -> None:
    run_id = await env.start(child_from_a_step)
    await settle_all(env, run_id)
    child_id = await get_workflow_result(run_id, storage=env.storage)
    child = await env.storage.get_run(child_id)
    assert child.parent_run_id == run_id and child.nesting_depth == 1
    await settle_all(env, child_id)
    handle = ChildWorkflowHandle(child_id, "square", run_id, access=env.engine)
    assert await handle.get_status() == "completed"


async def test_children_a_step_started_outlive_their_parent(env: Env) -> None:
    """The parent's code never awaits them (it cannot): they run on their own, named in the
    step's outcome."""
    run_id = await env.start(leaves_a_step_child)
    await settle_all(env, run_id)
    child_id = await get_workflow_result(run_id, storage=env.storage)
    await env.settle()
    child = await env.storage.get_run(child_id)
    assert child.status is RunStatus.SUSPENDED and child.parent_run_id == run_id
    completed = await get_workflow_events(run_id, storage=env.storage)
    assert [e.data.get("children") for e in completed if e.type.value == "step.completed"] == [
        [child_id]
    ]


async def test_waiting_for_a_child_in_a_step_is_a_clear_error(env: Env) -> None:
    run_id = await env.start(step_waits_for_a_child)
    await settle_all(env, run_id)
    with pytest.raises(ChildWorkflowError, match="cannot wait for a child"):
        await get_workflow_result(run_id, storage=env.storage)


async def test_start_child_workflow_outside_a_workflow_is_a_clear_error() -> None:
    with pytest.raises(ChildWorkflowError, match="inside a workflow or a step"):
        await start_child_workflow(square, 1)


async def test_continue_as_new_starts_the_next_run_with_an_empty_history(env: Env) -> None:
    first = await env.start(counts_down, 3)
    await settle_all(env, first)
    assert await get_workflow_result(first, storage=env.storage) == 6  # follows the chain
    chain = await get_workflow_chain(first, storage=env.storage)
    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 3 + [RunStatus.COMPLETED]
    for older, newer in zip(chain, chain[1:], strict=False):
        assert older.continued_to_run_id == newer.run_id
        assert newer.continued_from_run_id == older.run_id
    assert [r.run_id for r in await get_workflow_chain(chain[2].run_id, storage=env.storage)] == [
        r.run_id for r in chain
    ]
    for run in chain[1:]:  # each generation's log is its own
        assert (await types(env, run.run_id))[0] == "workflow.started"
        assert len(await types(env, run.run_id)) <= 4
    assert ran == ["gen 3", "gen 2", "gen 1"]
    ended = (await get_workflow_events(first, storage=env.storage))[-1]
    assert ended.type.value == "workflow.continued_as_new"
    assert ended.data["continued_to_run_id"] == chain[1].run_id


async def test_a_child_that_continues_as_new_answers_for_its_chain(env: Env) -> None:
    run_id = await env.start(parent_of_a_chain)
    await settle_all(env, run_id)
    assert await get_workflow_result(run_id, storage=env.storage) == 6
    events = await types(env, run_id)
    assert events.count("child_workflow.completed") == 1


async def test_the_nesting_limit_is_configurable(env: Env) -> None:
    runtime = LocalRuntime(poll_interval=3600, max_nesting_depth=1)
    try:
        run_id = await start(nests, 1, runtime=runtime, storage=env.storage)
        await runtime.drain(env.storage)
        assert await get_workflow_result(run_id, storage=env.storage) == 1
        with pytest.raises(ChildWorkflowFailedError, match="at most 1 level deep"):
            await start(nests, 2, runtime=runtime, storage=env.storage)
        deeper = await failed_root(env.storage, "nests")
        await runtime.drain(env.storage)
        with pytest.raises(ChildWorkflowFailedError, match="at most 1 level deep"):
            await get_workflow_result(deeper, storage=env.storage)
        # Replay knows the limit the run had: the child refused at depth 1 replays as refused.
        refused = await get_workflow_events(f"{deeper}.c1", storage=env.storage)
        assert refused[0].data["max_nesting_depth"] == 1
        with pytest.raises(MaxNestingDepthError):
            await replay_history(nests, refused)
    finally:
        await runtime.shutdown()


@workflow()
async def generation_child(gen: int) -> str:
    await sleep(f"{gen + 1}h")
    return f"child of gen {gen}"


@workflow()
async def continues_with_open_children(gen: int) -> Any:
    handle = await start_child_workflow(generation_child, gen, wait_for_completion=False)
    if gen < 2:
        await continue_as_new(gen + 1)
    return await handle.result()


async def test_a_child_ending_goes_to_the_generation_that_started_it(env: Env) -> None:
    """A generation that continues cancels its open child; that child's ending does not reach
    the next generation (which has a child of its own at the same position)."""
    first = await env.start(continues_with_open_children, 0)
    for _ in range(20):
        chain = await get_workflow_chain(first, storage=env.storage)
        if chain[-1].status.is_terminal:
            break
        await settle_all(env, chain[-1].run_id)
    chain = await get_workflow_chain(first, storage=env.storage)
    assert len(chain) == 3
    assert await get_workflow_result(first, storage=env.storage) == "child of gen 2"
    statuses = [(await env.storage.get_run(f"{r.run_id}.c1")).status for r in chain]
    assert statuses == [RunStatus.CANCELLED, RunStatus.CANCELLED, RunStatus.COMPLETED]
    for run in chain[1:]:  # no generation heard of another generation's child
        ended = [
            e.data["child_run_id"]
            for e in await get_workflow_events(run.run_id, storage=env.storage)
            if e.type.value.startswith("child_workflow.") and "result" in e.data
        ]
        assert all(child.startswith(run.run_id) for child in ended)


hook_tokens: list[str] = []


@workflow()
async def waits_then_continues(n: int) -> None:
    await hook("next", on_created=hook_tokens.append)
    await continue_as_new(n + 1)


async def test_a_cancellation_that_arrives_with_the_last_event_is_not_lost(env: Env) -> None:
    """A payload and a cancellation arrive before the run wakes: it sees the payload, calls
    continue_as_new, then the request: the run ends cancelled, no next run starts."""
    first = await env.start(waits_then_continues, 0)
    await resume_hook(hook_tokens[-1], "go", storage=env.storage)
    assert await cancel_workflow(first, reason="stop", storage=env.storage)
    await env.settle()
    chain = await get_workflow_chain(first, storage=env.storage)
    assert [r.status for r in chain] == [RunStatus.CANCELLED]


@workflow()
async def compensates_with_a_child() -> Any:
    try:
        await sleep("1h")
    except CancellationError:
        try:
            await start_child_workflow(square, 3, wait_for_completion=False)
        except CancellationError:
            return "refused at the call"
        return "started"
    return "slept"


async def test_a_child_started_after_cancellation_is_refused_at_the_call(env: Env) -> None:
    run_id = await env.start(compensates_with_a_child)
    await cancel_workflow(run_id, storage=env.storage)
    run = await settle_all(env, run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == "refused at the call"
    assert await children_of(env, run_id) == []


@workflow()
async def continues_in_a_shield(n: int) -> str:
    if n > 0:
        await sleep("1h")  # the next generation: the carried request arrives here
        return "not cancelled"
    try:
        await sleep("1h")
    except CancellationError:
        async with shield():
            await continue_as_new(n + 1)
    return "slept"


async def test_a_request_pending_at_a_shielded_continue_as_new_goes_on_with_the_chain(
    env: Env,
) -> None:
    first = await env.start(continues_in_a_shield, 0)
    assert await cancel_workflow(first, reason="stop", storage=env.storage)
    await env.settle()
    chain = await get_workflow_chain(first, storage=env.storage)
    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW, RunStatus.CANCELLED]
    with pytest.raises(CancellationError, match="stop"):
        await get_workflow_result(first, storage=env.storage)
