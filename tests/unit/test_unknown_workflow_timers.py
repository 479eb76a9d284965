"""A process that does not know a run's workflow gives its due timer back at once.

A process registering only other workflows claimed the due timer of a run it could not run, and
the run waited out the claim (a lease's length) before a process that knows the workflow got
it, silently. The local runtime now hands the claim back at once, and says so once.
"""

from __future__ import annotations

import pytest

from pyworkflow import sleep, step, workflow
from pyworkflow.core import registry
from pyworkflow.model.schemas import RunStatus
from tests.conftest import Env


@step(name="stranger_note")
async def note() -> str:
    return "done"


@workflow(name="stranger_sleeper")
async def sleeper() -> str:
    await sleep("1h")
    return await note()


async def test_a_timer_of_an_unknown_workflow_is_handed_back_at_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await env.start(sleeper)
    env.engine.evict()
    env.clock.advance(3600)
    with monkeypatch.context() as patch:  # this process, for a moment, does not know it
        patch.delitem(registry._workflows, "stranger_sleeper")
        assert await env.engine.fire_due_timers() == [run_id]
        await env.settle()
    run = await env.storage.get_run(run_id)
    assert run is not None and run.status is not RunStatus.COMPLETED
    # A process that knows the workflow claims the timer now, not a claim's length later.
    assert await env.engine.fire_due_timers() == [run_id]
    await env.settle()
    run = await env.storage.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
