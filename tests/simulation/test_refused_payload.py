"""A payload the script sends after the hook's expiry is refused, and the script goes on.

``check()`` reruns the script (without faults, with the same seed). Where the script's payload
was refused and the script caught the error, the rerun's is refused too, though perhaps for
another reason: with faults the hook was still pending and had expired by the clock
(``HookExpiredError``); without them its expiry was recorded in time, so it is no longer pending
(``HookNotFoundError``). That used to end ``check()`` with the rerun's error, on about one seed in
five of this script.
"""

from __future__ import annotations

import collections
from datetime import timedelta

from pyworkflow import HookExpiredError, hook, workflow
from pyworkflow_testing import Faults, Simulation


@workflow(name="refused_late_answer")
async def late_answer() -> str:
    try:
        return await hook("answer", timeout="1m")
    except HookExpiredError:
        return "expired"


async def test_a_rerun_goes_on_where_the_script_caught_a_refused_payload() -> None:
    refused: collections.Counter[str] = collections.Counter()
    for seed in range(160, 200):
        async with Simulation(seed, Faults.all(), workers=2) as sim:
            run = await sim.start(late_answer)
            if not await sim.wait_for_hook(run, "answer"):
                continue
            await sim.run_for(timedelta(minutes=1))  # the hook's expiry is due now
            try:
                await sim.resume_hook(run, "answer", "too late")
            except Exception as exc:  # noqa: BLE001 - which refusal it was is the point
                refused[type(exc).__name__] += 1
            await sim.run_until_idle()
            assert await run.result() == "expired", seed
            sim.check()  # (raised the rerun's HookNotFoundError)
    assert refused["HookExpiredError"] > 0  # the case this test is about came up
