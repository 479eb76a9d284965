"""Non-determinism: replaying a history with code that issues other commands fails clearly."""

from __future__ import annotations

import random as stdlib_random

import pytest

from pyworkflow import (
    NonDeterminismError,
    RunStatus,
    WorkflowError,
    get_workflow_events,
    resume,
    sleep,
    step,
    workflow,
)
from pyworkflow.engine.replay import replay_history
from pyworkflow.model.events import Event, EventType
from pyworkflow.serialization import error_fields
from tests.conftest import Env

version = {"v": 1}


@step()
async def charge() -> str:
    return "charged"


@step()
async def ship() -> str:
    return "shipped"


@step()
async def notify() -> str:
    return "notified"


@workflow()
async def evolving() -> list[str]:
    if version["v"] == 1:
        out = [await charge(), await ship()]
    elif version["v"] == 2:  # reordered
        out = [await ship(), await charge()]
    else:  # removed a step
        out = [await charge()]
    await sleep("1d")
    return [*out, await notify()]


@workflow()
async def coin_flip() -> str:
    if stdlib_random.random() < 0.5:  # the bug: workflow code must use pyworkflow.random()
        await charge()
    else:
        await ship()
    await sleep(10)
    return "done"


@pytest.fixture(autouse=True)
def _v1() -> None:
    version["v"] = 1


async def suspended_run(env: Env) -> str:
    run_id = await env.start(evolving)
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    env.engine.evict()
    return run_id


async def test_reordered_steps_raise_with_position_expected_actual_and_line(env: Env) -> None:
    run_id = await suspended_run(env)
    version["v"] = 2
    env.clock.advance(86400)
    with pytest.raises(NonDeterminismError) as info:
        await resume(run_id, storage=env.storage)
    err = info.value
    assert err.position == 1
    assert err.expected == "step 'charge' (step:charge:1)"
    assert err.actual == "step 'ship' (step:ship:1)"
    assert err.location is not None and "test_nondeterminism.py" in err.location
    assert "expected: step 'charge'" in str(err) and "actual:   step 'ship'" in str(err)
    # nothing was recorded and the run can continue once the code is fixed
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    version["v"] = 1
    assert await resume(run_id, storage=env.storage) == ["charged", "shipped", "notified"]


async def test_removed_step_raises(env: Env) -> None:
    run_id = await suspended_run(env)
    version["v"] = 3
    with pytest.raises(NonDeterminismError) as info:
        await resume(run_id, storage=env.storage)
    assert info.value.position == 2
    assert "step 'ship'" in (info.value.expected or "")
    assert "sleep" in (info.value.actual or "")


async def test_random_branch_in_workflow_code_is_caught_on_replay(env: Env) -> None:
    stdlib_random.seed(1)
    first = stdlib_random.random() < 0.5
    stdlib_random.seed(1)
    run_id = await env.start(coin_flip)
    env.clock.advance(10)
    events = await get_workflow_events(run_id, storage=env.storage)
    # on replay the process's random number generator takes the other branch
    seed = next(s for s in range(100) if (stdlib_random.Random(s).random() < 0.5) != first)
    stdlib_random.seed(seed)
    with pytest.raises(NonDeterminismError, match="command 1 differs"):
        await replay_history(coin_flip, events)


async def test_replay_of_the_same_code_passes(env: Env) -> None:
    run_id = await env.start(evolving)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.COMPLETED
    events = await get_workflow_events(run_id, storage=env.storage)
    assert await replay_history(evolving, events) == ["charged", "shipped", "notified"]


async def test_replay_detects_a_different_ending(env: Env) -> None:
    run_id = await env.start(evolving)
    await env.run_until_done(run_id)
    events = await get_workflow_events(run_id, storage=env.storage)
    tampered = list(events)
    last = tampered[-1]
    last.data = {**last.data, "result": '["something else"]'}
    with pytest.raises(NonDeterminismError, match="ending differs"):
        await replay_history(evolving, tampered)


@workflow(name="nd_returns_at_once")
async def returns_at_once() -> int:
    return 11


async def test_an_imposed_ending_replays_even_where_the_code_would_have_returned(
    env: Env,
) -> None:
    """A run lost before its first activation, again and again, ends failed by its recovery
    budget without its code ever running; replayed, the code returns at once. That is not a
    divergence: the recorded, imposed failure stands."""
    run_id = await env.start(returns_at_once)
    events = await get_workflow_events(run_id, storage=env.storage)
    started = events[0]
    error = WorkflowError(f"run {run_id} lost its worker 4 times (max_recovery_attempts=3)")
    failed = Event(
        run_id,
        EventType.WORKFLOW_FAILED,
        {**error_fields(error), "imposed": True},
        timestamp=started.timestamp,
    )
    failed.place(2, started.timestamp)
    with pytest.raises(WorkflowError, match="lost its worker 4 times"):
        await replay_history(returns_at_once, [started, failed])
    not_imposed = Event(run_id, EventType.WORKFLOW_FAILED, error_fields(error))
    not_imposed.place(2, started.timestamp)
    with pytest.raises(NonDeterminismError, match="its ending differs"):
        await replay_history(returns_at_once, [started, not_imposed])
