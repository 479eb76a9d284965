"""``resume()`` of a run other processes keep advancing returns, never an internal conflict.

Two processes resuming one long run on PostgreSQL: every activation of one of them lost its
commit race to the other, and its caller got ``SequenceConflictError: 20 activations in a row
lost the race``. The run was fine; ``resume`` now waits for the other writer like for a lease
holder and returns the run's state.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyworkflow import api, sleep, step, workflow
from pyworkflow.engine.activation import Engine
from pyworkflow.model.exceptions import SequenceConflictError
from pyworkflow.model.schemas import RunStatus
from tests.conftest import Env


@step(name="race_note")
async def note(value: str) -> str:
    return value


@workflow(name="race_long")
async def long_run() -> str:
    await sleep("1h")
    return await note("done")


async def test_resume_waits_out_other_writers_instead_of_raising(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await env.start(long_run)
    advance = Engine.advance
    lost = {"count": 0}

    async def losing_twice(self: Engine, run: str, **kwargs: Any) -> Any:
        if lost["count"] < 2:
            lost["count"] += 1
            raise SequenceConflictError(f"run {run}: 20 activations in a row lost the race")
        return await advance(self, run, **kwargs)

    monkeypatch.setattr(Engine, "advance", losing_twice)
    assert await api.resume(run_id, storage=env.storage) is None  # still sleeping: no error
    assert lost["count"] == 2
    env.clock.advance(3600)
    assert await api.resume(run_id, storage=env.storage) == "done"
    run = await env.storage.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
