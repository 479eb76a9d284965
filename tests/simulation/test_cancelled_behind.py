"""A cancellation that catches a run behind (``pyworkflow_testing/behind.py``).

The script cancels one second after a sleep ends. Without faults the code is past the sleep and
the step after it by then; with faults it may still be in the sleep (its timer's activation came
late) or at the step (the step's outcome was lost with its worker). Those endings are what an
earlier cancellation gives, not a difference the faults should make: ``check()`` passes them by
comparing with a run cancelled where the faulty one was (at the same progress). A request the
engine loses, or applies differently once late, is still reported.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pyworkflow import sleep, step, workflow
from pyworkflow.engine.instance import WorkflowInstance
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import CancellationError
from pyworkflow_testing import Simulation, SimulationFailure
from pyworkflow_testing.behind import CancelAtProgress, progress_at_request, resolutions

SEEDS = range(40)


@step(name="behind_step")
async def behind_step() -> str:
    return "stepped"


@workflow(name="behind_wf")
async def behind_wf() -> str:
    try:
        await sleep(60)
    except CancellationError:
        return "cancelled in sleep"
    try:
        await behind_step()
    except CancellationError:
        return "cancelled at step"
    await sleep(60)
    return "done"


async def _cancelled_after_the_sleep(seed: int) -> tuple[Simulation, str]:
    sim = Simulation(seed, "all", workers=2)
    run = await sim.start(behind_wf)
    await sim.run_for(61)
    await sim.cancel(run, "stop")
    await sim.run_until_idle()
    try:
        ending = str(await run.result())
    except CancellationError:
        ending = "cancelled"
    return sim, ending


async def test_a_cancellation_that_catches_a_run_behind_passes_the_check() -> None:
    endings: Counter[str] = Counter()
    for seed in SEEDS:
        sim, ending = await _cancelled_after_the_sleep(seed)
        try:
            sim.check()
        finally:
            sim.close()
        endings[ending] += 1
    # Without faults: cancelled in the second sleep. Behind: in the first sleep, or at the step
    # (cancelled right after the write that ends the sleep, the step's attempt under way).
    assert endings["cancelled"] > 0, endings
    assert endings["cancelled in sleep"] > 0, endings
    assert endings["cancelled at step"] > 0, endings


async def test_a_request_lost_by_a_run_behind_is_still_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug: after a lost worker, the run no longer hears cancellation requests (the same in
    replay, so only the comparison without faults can see it)."""
    apply = WorkflowInstance.apply

    def forgets(self: WorkflowInstance, event: Event) -> None:
        if event.type is EventType.CANCELLATION_REQUESTED and self.losses_counted:
            return
        apply(self, event)

    monkeypatch.setattr(WorkflowInstance, "apply", forgets)
    lost, reported = [], []
    for seed in range(60):
        sim, ending = await _cancelled_after_the_sleep(seed)
        try:
            if ending != "done":
                continue  # (the request was heard: no lost worker before it, say)
            lost.append(seed)
            with pytest.raises(SimulationFailure) as failure:
                sim.check()
            if "with faults it ended ('completed', '\"done\"')" in str(failure.value):
                reported.append(seed)  # (else another oracle saw it first)
        finally:
            sim.close()
    # Each lost request is reported (pytest.raises above), also where the run was behind at a
    # point the run without faults passed in no virtual time.
    assert lost and reported, (lost, reported)


async def test_a_run_behind_must_end_as_a_run_cancelled_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug: a request that finds a sleep already due lets the sleep end normally first (the
    same in replay). Behind in the sleep, the run then ends at the step; cancelled mid-sleep
    without faults, it ends in the sleep: reported."""
    apply = WorkflowInstance.apply

    def sleep_first(self: WorkflowInstance, event: Event) -> None:
        if event.type is EventType.CANCELLATION_REQUESTED and event.timestamp is not None:
            for cmd in list(self.open.values()):
                due = cmd.kind == "sleep" and cmd.wake_at is not None
                if due and cmd.wake_at <= event.timestamp and cmd.future is not None:
                    cmd.done = True
                    self.open.pop(cmd.position, None)
                    cmd.future.set_result(None)
        apply(self, event)

    monkeypatch.setattr(WorkflowInstance, "apply", sleep_first)
    reported = 0
    for seed in SEEDS:
        sim, ending = await _cancelled_after_the_sleep(seed)
        try:
            sim.check()
        except SimulationFailure as failure:
            assert "without faults" in str(failure) or "replay" in str(failure), str(failure)
            reported += 1
        finally:
            sim.close()
    assert reported > 0


# -- the pieces ---------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _event(kind: EventType, seconds: float, command: str | None = None, **data: Any) -> Event:
    if command is not None:
        data["command_id"] = command
    return Event(run_id="r", type=kind, data=data, timestamp=_at(seconds))


LOG = [
    _event(EventType.WORKFLOW_STARTED, 0),
    _event(EventType.SLEEP_STARTED, 0, "c:1"),
    _event(EventType.SLEEP_COMPLETED, 60, "c:1"),
    _event(EventType.STEP_STARTED, 60, "c:2"),
    _event(EventType.STEP_FAILED, 60, "c:2", retrying=True, attempt=1),
    _event(EventType.STEP_COMPLETED, 70, "c:2"),
    _event(EventType.CANCELLATION_REQUESTED, 75),
    _event(EventType.HOOK_EXPIRED, 90, "c:3"),
]


def test_progress_counts_what_was_resolved_before_the_request() -> None:
    assert resolutions(LOG) == [("c:1", _at(60)), ("c:2", _at(70)), ("c:3", _at(90))]
    assert progress_at_request(LOG) == (frozenset({"c:1", "c:2"}), _at(75))
    assert progress_at_request(LOG[:6]) is None  # (no request)


async def test_the_request_is_made_the_moment_the_log_holds_exactly_that_progress() -> None:
    made: list[int] = []

    async def request() -> None:
        made.append(len(made))

    watch = CancelAtProgress("r", frozenset({"c:1", "c:2"}), request)
    await watch.after("other", LOG[2:3] + LOG[5:6])  # (another run's writes)
    await watch.after("r", LOG[:3])  # c:1
    await watch.before("r", LOG[3:5])  # (a retried attempt's failure resolves nothing)
    await watch.after("r", LOG[3:5])
    assert made == [] and not watch.fired
    await watch.before("r", LOG[5:6])  # (c:2 is part of the progress: not past it)
    assert made == []
    await watch.after("r", LOG[5:6])  # c:2: now
    assert made == [0] and watch.fired
    await watch.after("r", LOG[6:])
    assert made == [0]  # (once)
    at_start = CancelAtProgress("r", frozenset(), request)
    await at_start.after("r", LOG[:2])  # (the run's creation: nothing resolved yet)
    assert made == [0, 1]


async def test_if_never_exactly_there_the_request_comes_before_the_write_that_goes_past() -> None:
    made: list[str] = []

    async def request() -> None:
        made.append("request")

    # Steps run in parallel: with faults 1, 2 and 4 had ended; without, 3 ends before 4.
    parallel = CancelAtProgress("r", frozenset({"c:1", "c:2", "c:4"}), request)
    for n in (1, 2):
        done = [_event(EventType.STEP_COMPLETED, 10 * n, f"c:{n}")]
        await parallel.before("r", done)
        await parallel.after("r", done)
    assert made == []
    await parallel.before("r", [_event(EventType.STEP_COMPLETED, 30, "c:3")])
    assert made == ["request"] and parallel.fired
    # A run that would end (continue as new, say) while holding part of the progress.
    ending = CancelAtProgress("r", frozenset({"c:1", "c:2"}), request)
    await ending.after("r", LOG[:3])
    await ending.before("r", [_event(EventType.WORKFLOW_CONTINUED_AS_NEW, 70)])
    assert made == ["request", "request"]
    # Past it without ever being part of it (c:1 is not in {c:2}): never.
    apart = CancelAtProgress("r", frozenset({"c:2"}), request)
    await apart.after("r", LOG[:3])
    await apart.before("r", LOG[5:])
    await apart.after("r", LOG[5:])
    assert not apart.fired and len(made) == 2
