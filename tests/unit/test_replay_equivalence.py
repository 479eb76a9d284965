"""Replay equivalence: a cold replay at every activation issues exactly what the live run did.

The activation resolves a replayed command at once when the log says it is resolved next (no
trip through the event loop); these workflows interleave tasks, steps, sleeps and timers so that
both the fast path and the loop path are taken, and check that nothing diverges.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyworkflow import RunStatus, get_workflow_events, get_workflow_result, sleep, step, workflow
from pyworkflow.engine.replay import replay_history
from tests.conftest import Env, ManualClock


@step()
async def work(tag: str, n: int) -> str:
    return f"{tag}{n}"


async def lane(tag: str, plan: list[int]) -> list[str]:
    out = []
    for i, kind in enumerate(plan):
        if kind == 0:
            out.append(await work(tag, i))
        elif kind == 1:
            await sleep(i + 1)
        elif kind == 2:
            out.append(str(await asyncio.gather(work(tag, i), work(tag, -i))))
        else:
            try:
                await asyncio.wait_for(sleep(100), timeout=i + 0.5)
            except TimeoutError:
                out.append(f"{tag}timeout{i}")
    return out


@workflow()
async def lanes(plans: list[list[int]]) -> list[list[str]]:
    tasks = [asyncio.create_task(lane(chr(97 + i), plan)) for i, plan in enumerate(plans)]
    first = await work("main", 0)
    results = await asyncio.gather(*tasks)
    return [[first], *results]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plans=st.lists(st.lists(st.integers(0, 3), max_size=5), min_size=1, max_size=3))
async def test_cold_replay_at_every_activation_matches_the_live_run(plans: list[list[int]]) -> None:
    from pyworkflow import api
    from pyworkflow.runtime.local import LocalRuntime
    from pyworkflow.storage.memory import InMemoryStorageBackend

    runtime = LocalRuntime(clock=ManualClock(), poll_interval=3600)
    api.set_runtime("local", runtime)  # one clock for everything that touches this storage
    env = Env(runtime, InMemoryStorageBackend(), runtime.clock)  # type: ignore[arg-type]
    try:
        run_id = await env.start(lanes, plans)
        for _ in range(200):
            env.engine.evict()  # every activation replays from storage
            run = await env.jump_once(run_id)
            if run.status.is_terminal:
                break
        else:
            raise AssertionError("the run did not finish")
        assert run.status is RunStatus.COMPLETED, run.error
        result = await get_workflow_result(run_id, storage=env.storage)
        events = await get_workflow_events(run_id, storage=env.storage)
        assert await replay_history(lanes, events) == result
        # a second live run of the same plan, never evicted, records the same commands
        other = await env.start(lanes, plans)
        await env.run_until_done(other)
        other_events = await get_workflow_events(other, storage=env.storage)

        def commands(evs: list) -> list[tuple[str, str | None]]:
            return [(e.type.value, e.data.get("command_id")) for e in evs]

        assert commands(other_events) == commands(events)
    finally:
        await runtime.shutdown()
