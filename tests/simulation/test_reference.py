"""The reference model: workflow functions run as plain asyncio code, checked against the engine."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import pyworkflow
from pyworkflow import (
    FatalError,
    HookExpiredError,
    RetryableError,
    StepInfo,
    get_step_info,
    hook,
    sleep,
    step,
    workflow,
)
from pyworkflow.core.registry import StepDefinition
from pyworkflow.model.events import Event, EventType
from pyworkflow.serialization import deserialize_exception, serialize_exception
from pyworkflow_testing import Simulation
from pyworkflow_testing.reference import ReferenceOutcome, StepStart, as_delivered, run_reference

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def invoke(
    definition: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], info: StepInfo
) -> Any:
    del info
    return await definition.invoke(args, kwargs)


def nobody_answers(position: int, name: str) -> None:
    del position, name


async def reference(
    func: Any,
    *args: Any,
    run_id: str = "run_ref",
    started_at: datetime = T0,
    answer: Any = nobody_answers,
    **kwargs: Any,
) -> ReferenceOutcome:
    return await run_reference(
        func,
        args,
        kwargs,
        run_id=run_id,
        started_at=started_at,
        invoke_step=invoke,
        hook_answer=answer,
        max_time=timedelta(days=30),
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- steps ------------------------------------------------------------------------------------


@step(name="ref_busy", max_retries=4, retry_delay=["5s", "20s"])
async def busy(item: str) -> tuple[str, int]:
    await asyncio.sleep(1)  # every attempt takes a second of virtual time
    attempt = get_step_info().attempt
    if attempt < 4:
        raise RetryableError(f"busy (attempt {attempt})")
    return item, attempt


@workflow(name="ref_sequential")
async def sequential(item: str) -> list[Any]:
    first = await busy(item)
    return [first, pyworkflow.now().isoformat()]


async def test_retried_step_starts_after_each_delay_with_increasing_attempts() -> None:
    outcome = await reference(sequential, "book")
    assert outcome.status == "completed"
    assert outcome.result == [("book", 4), at(49).isoformat()]
    assert outcome.step_starts == [
        StepStart(1, "ref_busy", 1, at(0)),
        StepStart(1, "ref_busy", 2, at(1 + 5)),  # failed at 1s, then the first delay
        StepStart(1, "ref_busy", 3, at(7 + 20)),  # the last delay of the list repeats
        StepStart(1, "ref_busy", 4, at(28 + 20)),
    ]
    assert outcome.ended_at == at(49)


@step(name="ref_declined", max_retries=5)
async def declined(item: str) -> str:
    raise FatalError(f"card declined for {item}")


@workflow(name="ref_checkout")
async def checkout(item: str) -> str:
    return await declined(item)


async def test_fatal_step_error_fails_the_workflow_without_retries() -> None:
    outcome = await reference(checkout, "book")
    assert outcome.status == "failed"
    assert outcome.error_type == "pyworkflow.core.exceptions:FatalError"
    assert outcome.error_message == "card declined for book"
    assert outcome.step_starts == [StepStart(1, "ref_declined", 1, T0)]


@step(name="ref_slow", max_retries=0, timeout="2s")
async def slow() -> str:
    await asyncio.sleep(60)
    return "never"


@workflow(name="ref_slow_caller")
async def slow_caller() -> str:
    try:
        return await slow()
    except pyworkflow.StepTimeoutError as exc:
        return f"{type(exc).__name__}: {exc}"


async def test_step_timeout_raises_step_timeout_error() -> None:
    outcome = await reference(slow_caller)
    assert outcome.result == "StepTimeoutError: step 'ref_slow' timed out after 2.0s"
    assert outcome.ended_at == at(2)


@step(name="ref_price", max_retries=2, retry_delay="3s")
async def price(index: int) -> int:
    await asyncio.sleep(index)
    if index == 2 and get_step_info().attempt == 1:
        raise RetryableError("flaky price")
    return 10 * index


@workflow(name="ref_fanout")
async def fanout() -> list[int]:
    prices = await asyncio.gather(price(1), price(2), price(3))
    total = await price(0)
    return [*prices, total]


async def test_parallel_steps_take_positions_in_call_order_and_start_together() -> None:
    outcome = await reference(fanout)
    assert outcome.result == [10, 20, 30, 0]
    assert outcome.step_starts == [
        StepStart(1, "ref_price", 1, at(0)),
        StepStart(2, "ref_price", 1, at(0)),
        StepStart(3, "ref_price", 1, at(0)),
        StepStart(2, "ref_price", 2, at(2 + 3)),
        StepStart(4, "ref_price", 1, at(5 + 2)),  # after the slowest of the three
    ]


# -- sleeps and timers ------------------------------------------------------------------------


@workflow(name="ref_sleepy")
async def sleepy() -> list[str]:
    await sleep("1h")
    await asyncio.sleep(30)  # workflow code's loop timer: a durable "timer" command
    await asyncio.sleep(0)  # no timer: asyncio yields without one
    await sleep(timedelta(minutes=2))
    return [pyworkflow.now().isoformat()]


async def test_durable_sleep_and_asyncio_sleep_are_timers_on_virtual_time() -> None:
    outcome = await reference(sleepy)
    assert outcome.status == "completed"
    assert outcome.sleeps == [
        (1, at(0), at(3600)),
        (2, at(3600), at(3630)),
        (3, at(3630), at(3750)),
    ]
    assert outcome.result == [at(3750).isoformat()]
    assert outcome.ended_at == at(3750)


# -- hooks ------------------------------------------------------------------------------------


class Approval(BaseModel):
    approved: bool
    by: str


created_tokens: list[str] = []


@workflow(name="ref_approval")
async def approval(item: str) -> str:
    answer = await hook(
        "ref_review", timeout="1h", payload_schema=Approval, on_created=created_tokens.append
    )
    return f"{item}: {answer.approved} by {answer.by} at {pyworkflow.now().isoformat()}"


async def test_hook_answered_before_its_timeout_delivers_the_validated_payload() -> None:
    asked: list[tuple[int, str]] = []

    def answer(position: int, name: str) -> tuple[datetime, Any]:
        asked.append((position, name))
        return at(600), {"approved": True, "by": "ann"}

    created_tokens.clear()
    outcome = await reference(approval, "book", run_id="run_hooked", answer=answer)
    assert outcome.result == f"book: True by ann at {at(600).isoformat()}"
    assert asked == [(1, "ref_review")]
    assert created_tokens == ["run_hooked:hook-1:reference"]
    assert outcome.ended_at == at(600)


async def test_hook_answered_at_its_expiry_or_with_an_invalid_payload_expires() -> None:
    valid = {"approved": True, "by": "ann"}
    outcome = await reference(approval, "book", answer=lambda p, n: (at(3600), valid))
    assert outcome.status == "failed"
    assert outcome.error_type == "pyworkflow.core.exceptions:HookExpiredError"
    assert outcome.ended_at == at(3600)
    # A payload the schema refuses is refused at receipt: nothing arrives.
    outcome = await reference(approval, "book", answer=lambda p, n: (at(60), {"by": "ann"}))
    assert outcome.status == "failed"
    assert outcome.error_type == "pyworkflow.core.exceptions:HookExpiredError"
    assert outcome.ended_at == at(3600)


async def approval_after_a_night(item: str) -> str:
    await sleep("8h")
    return await approval(item)


async def test_a_hook_answer_given_as_a_delay_arrives_that_long_after_the_hook_is_made() -> None:
    # The simulator answers this way: a run whose clock a late timer moved on made its hook
    # later than the model does, and the sender answered that hook, so long after it appeared.
    valid = {"approved": True, "by": "ann"}
    answer = lambda p, n: (timedelta(minutes=10), valid)  # noqa: E731
    outcome = await reference(approval_after_a_night, "book", answer=answer)
    made = 8 * 3600
    assert outcome.result == f"book: True by ann at {at(made + 600).isoformat()}"
    late = lambda p, n: (timedelta(hours=1), valid)  # noqa: E731 - at its expiry: refused
    outcome = await reference(approval_after_a_night, "book", answer=late)
    assert outcome.error_type == "pyworkflow.core.exceptions:HookExpiredError"
    assert outcome.ended_at == at(made + 3600)


@workflow(name="ref_expiring")
async def expiring() -> str:
    try:
        await hook("ref_nobody", timeout="30m")
    except HookExpiredError as exc:
        return f"expired at {pyworkflow.now().isoformat()}: {exc}"
    return "answered"


async def test_hook_that_expires_raises_hook_expired_error_in_the_workflow() -> None:
    outcome = await reference(expiring)
    assert outcome.status == "completed"
    assert outcome.result == (
        f"expired at {at(1800).isoformat()}: hook 'ref_nobody' expired before a payload arrived"
    )


@workflow(name="ref_forever")
async def forever() -> str:
    first = await busy("x")
    await hook("ref_unanswered")
    return f"{first}"


async def test_hook_nobody_answers_leaves_the_run_blocked() -> None:
    outcome = await reference(forever)
    assert outcome.status == "blocked"
    assert outcome.ended_at is None and outcome.result is None
    assert [start.attempt for start in outcome.step_starts] == [1, 2, 3, 4]


@step(name="ref_stuck", max_retries=0)
async def stuck() -> None:
    await asyncio.sleep(10**9)


@workflow(name="ref_stuck_caller")
async def stuck_caller() -> None:
    await stuck()


async def test_a_step_that_never_ends_is_cut_off_at_max_time() -> None:
    outcome = await reference(stuck_caller)
    assert outcome.status == "blocked"
    assert outcome.error_message == "the run went on past max_time"


@step(name="ref_spinner", max_retries=0)
async def spinner() -> None:
    while True:
        await asyncio.sleep(0)  # never lets virtual time move


@workflow(name="ref_spinner_caller")
async def spinner_caller() -> None:
    await spinner()


async def test_a_step_that_spins_is_cut_off_by_the_iteration_budget() -> None:
    outcome = await run_reference(
        spinner_caller,
        (),
        {},
        run_id="run_spin",
        started_at=T0,
        invoke_step=invoke,
        hook_answer=nobody_answers,
        max_iterations=5_000,
    )
    assert outcome.status == "blocked"
    assert outcome.error_message is not None and "iterations" in outcome.error_message
    assert outcome.step_starts == [StepStart(1, "ref_spinner", 1, T0)]


# -- against the engine -----------------------------------------------------------------------


@workflow(name="ref_dice")
async def dice() -> list[Any]:
    await sleep("1s")
    return [pyworkflow.random(), str(pyworkflow.uuid4()), pyworkflow.random()]


async def test_random_and_uuid4_draw_as_the_engine_does() -> None:
    sim = Simulation(seed=4, faults="none")
    try:
        run = await sim.start(dice)
        await sim.run_until_idle()
        expected = await run.result()
    finally:
        sim.close()
    outcome = await reference(dice, run_id=run.run_id)
    assert outcome.result == expected
    other = await reference(dice, run_id=run.run_id + "x")
    assert other.result != expected


@step(name="ref_reserve", max_retries=3, retry_delay="5s")
async def reserve(item: str) -> str:
    await asyncio.sleep(1)
    attempt = get_step_info().attempt
    if attempt <= 2:
        raise RetryableError(f"inventory busy (attempt {attempt})", retry_after="7s")
    return f"reserved {item} on attempt {attempt}"


@step(name="ref_ship")
async def ship(item: str, how: str) -> str:
    await asyncio.sleep(2)
    return f"shipped {item} {how}"


@workflow(name="ref_order")
async def order(item: str) -> dict[str, Any]:
    reserved = await reserve(item)
    await sleep("10m")
    decision = await hook("ref_ship_how", timeout="1d")
    shipped = await ship(item, decision["how"])
    await asyncio.sleep(5)
    return {"reserved": reserved, "shipped": shipped, "at": pyworkflow.now().isoformat()}


def stamp(event: Event) -> datetime:
    assert event.timestamp is not None
    return event.timestamp


def step_starts_of(events: list[Event]) -> list[tuple[str, int, datetime]]:
    return [
        (e.data["command_id"], e.data["attempt"], stamp(e))
        for e in events
        if e.type is EventType.STEP_STARTED
    ]


@pytest.mark.parametrize("dispatch_steps", [False, True])
async def test_reference_agrees_with_the_engine_on_retries_sleep_and_hook(
    dispatch_steps: bool,
) -> None:
    sim = Simulation(seed=2, faults="none", workers=2, dispatch_steps=dispatch_steps)
    try:
        run = await sim.start(order, "book")
        assert await sim.wait_for_hook(run, "ref_ship_how")
        await sim.run_for(timedelta(minutes=3))
        await sim.resume_hook(run, "ref_ship_how", {"how": "by sea"})
        await sim.run_until_idle()
        expected = await run.result()
        events = await run.events()
    finally:
        sim.close()
    received = next(e for e in events if e.type is EventType.HOOK_RECEIVED)
    payload = {"how": "by sea"}

    def answer(position: int, name: str) -> tuple[datetime, Any]:
        assert (position, name) == (3, "ref_ship_how")
        return stamp(received), payload

    outcome = await reference(
        order, "book", run_id=run.run_id, started_at=stamp(events[0]), answer=answer
    )
    assert outcome.status == "completed"
    assert outcome.result == expected
    assert [
        (f"step:{s.step_name}:{s.position}", s.attempt, s.at) for s in outcome.step_starts
    ] == step_starts_of(events)
    timers = [
        (int(e.data["command_id"].rpartition(":")[2]), e.timestamp, e.data["resume_at"])
        for e in events
        if e.type is EventType.SLEEP_STARTED
    ]
    assert [(p, s, d.isoformat()) for p, s, d in outcome.sleeps] == timers
    assert outcome.ended_at == events[-1].timestamp


@step(name="ref_long", max_retries=0)
async def long_step() -> str:
    await asyncio.sleep(10)
    return "finished"


@workflow(name="ref_deadline")
async def deadline() -> str:
    try:
        return await asyncio.wait_for(long_step(), timeout=5)
    except TimeoutError:
        return "timed out"


@pytest.mark.parametrize("dispatch_steps", [False, True])
async def test_a_timeout_around_a_long_step_fires_in_the_engine_as_in_the_reference(
    dispatch_steps: bool,
) -> None:
    outcome = await reference(deadline)
    assert outcome.result == "timed out"
    assert outcome.sleeps == [(1, at(0), at(5))]
    assert outcome.step_starts == [StepStart(2, "ref_long", 1, at(0))]
    sim = Simulation(seed=0, faults="none", workers=2, dispatch_steps=dispatch_steps)
    try:
        run = await sim.start(deadline)
        await sim.run_until_idle()
        assert await run.result() == outcome.result
    finally:
        sim.close()


async def test_runs_inside_a_simulation_without_moving_its_virtual_time() -> None:
    sim = Simulation(seed=1, faults="none")
    try:
        before = sim.elapsed
        outcome = sim.run_sync(reference(sleepy))
        assert outcome.ended_at == at(3750)
        assert sim.elapsed == before
    finally:
        sim.close()


@workflow(name="ref_too_long", max_duration="1h")
async def too_long() -> str:
    await sleep("30m")
    await hook("ref_never", timeout="2h")
    return "done"


async def test_max_duration_fails_the_run_as_the_engine_does() -> None:
    outcome = await reference(too_long)
    assert outcome.status == "failed"
    assert outcome.error_type == "pyworkflow.core.exceptions:WorkflowTimeoutError"
    assert outcome.ended_at == at(3600)
    sim = Simulation(seed=0, faults="none")
    try:
        run = await sim.start(too_long)
        await sim.run_until_idle()
        record = await run.record()
        failed = (await run.events())[-1]
    finally:
        sim.close()
    assert record.error == outcome.error_message
    assert failed.data["error_type"] == outcome.error_type
    assert failed.timestamp == outcome.ended_at


class _TwoArgs(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code


class _KeywordOnly(Exception):
    def __init__(self, *, reason: str) -> None:
        super().__init__(reason)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _local_error() -> Exception:
    class Local(Exception):
        pass

    return Local("made in a function")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        FatalError("card declined"),
        RetryableError("busy", retry_after="5s"),
        _TwoArgs(7, "seven"),
        _KeywordOnly(reason="only by keyword"),
        _Unprintable(),
        _local_error(),
        KeyError(("a", 1)),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_the_model_delivers_step_errors_as_the_codec_does(exc: Exception) -> None:
    """``as_delivered`` is the contract written apart from the codec: on the real codec both
    agree on the type and the message (so the reference oracle raises no false alarm)."""
    model = as_delivered(exc)
    codec = deserialize_exception(serialize_exception(exc))
    assert type(model) is type(codec)
    assert isinstance(exc, _Unprintable) or str(model) == str(codec)
    assert model.args == codec.args


@step(name="ref_resumable", max_retries=2, retry_delay="1s")
async def resumable() -> str:
    done = await pyworkflow.load_step_checkpoint()
    if done is None:
        await pyworkflow.save_step_checkpoint({"page": 3})
        raise RetryableError("the connection dropped")
    return f"resumed at page {done['page']}"


@workflow(name="ref_checkpointed")
async def checkpointed() -> str:
    return await resumable()


@pytest.mark.parametrize("faults", ["none", "all"])
async def test_step_checkpoints_are_kept_for_the_models_run_as_storage_keeps_them(
    faults: str,
) -> None:
    """A step's checkpoint outlives its attempt in the model as in storage: a model that gave
    steps none failed every workflow that saves one (found by a review)."""
    outcome = await reference(checkpointed)
    assert (outcome.status, outcome.result) == ("completed", "resumed at page 3")
    for seed in range(6):
        sim = Simulation(seed=seed, faults=faults, workers=2)
        try:
            run = await sim.start(checkpointed)
            await sim.run_until_idle()
            assert await run.result() == "resumed at page 3"
            sim.check()  # (the reference model among the oracles)
        finally:
            sim.close()
