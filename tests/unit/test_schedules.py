"""Schedules on the local runtime, on a hand-moved clock: each slot fires once, the overlap
policies, missed slots, pause and resume, trigger and backfill, time zones, and a scheduler that
dies between deciding a run and creating it. Runs on every backend (``PYWORKFLOW_TEST_STORAGE``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pyworkflow import (
    CalendarSpec,
    LocalScheduler,
    OverlapPolicy,
    Schedule,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    ScheduleSpec,
    ScheduleStatus,
    backfill_schedule,
    continue_as_new,
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
    scheduled_workflow,
    sleep,
    step,
    trigger_schedule,
    update_schedule,
    workflow,
)
from pyworkflow.config import configure
from pyworkflow.core.schedules import clear_declared_schedules
from pyworkflow.engine.activation import Engine
from pyworkflow.engine.schedules import START_RETRY
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from tests.conftest import Env

HOUR = 3600.0


@step(name="sched_note")
async def note(label: str) -> str:
    return label


@workflow(name="sched_quick")
async def quick(label: str = "q") -> str:
    return await note(label)


@workflow(name="sched_slow")
async def slow(label: str = "s") -> str:
    await sleep("90m")
    return await note(label)


@pytest.fixture(autouse=True)
def _schedules_env(env: Env) -> Iterator[None]:
    """The public functions use the test's storage (and, through ``env``, its runtime and
    clock); no ``@scheduled_workflow`` of another test is declared."""
    configure(storage=env.storage)
    clear_declared_schedules()
    yield
    clear_declared_schedules()


async def runs_of(env: Env, schedule_id: str) -> list[WorkflowRun]:
    found: list[WorkflowRun] = []
    cursor = None
    while True:
        page, cursor = await env.storage.list_runs(limit=500, cursor=cursor)
        found += [
            run
            for run in page
            if run.context.get("schedule_id") == schedule_id and not run.continued_from_run_id
        ]
        if cursor is None:
            return sorted(found, key=lambda run: run.context["scheduled_time"])


async def serve(env: Env, engine: Engine | None = None) -> list[str]:
    created = await (engine or env.engine).fire_due_schedules()
    await env.settle()
    return created


async def advance(env: Env, seconds: float, step_seconds: float = 60.0) -> None:
    """Move the clock in steps, serving schedules and firing timers at each, as a scheduler
    and the timer service would."""
    while seconds > 0:
        env.clock.advance(min(step_seconds, seconds))
        seconds -= step_seconds
        await serve(env)
        while await env.engine.fire_due_timers():
            await env.settle()
        await env.settle()


def slots_of(runs: list[WorkflowRun]) -> list[datetime]:
    return [datetime.fromisoformat(run.context["scheduled_time"]) for run in runs]


async def test_an_interval_schedule_fires_each_slot_once(env: Env) -> None:
    created_at = env.clock.now()
    schedule = await create_schedule(
        quick, ScheduleSpec(interval="10m"), "a", schedule_id="every-10", storage=env.storage
    )
    assert schedule.next_run_time == created_at + timedelta(minutes=10)
    assert schedule.status is ScheduleStatus.ACTIVE and schedule.revision == 1
    assert await serve(env) == []  # nothing due yet
    env.clock.advance(600)
    first = await serve(env)
    assert len(first) == 1
    assert await serve(env) == []  # served: a second tick at the same time starts nothing
    await advance(env, 1800)
    runs = await runs_of(env, "every-10")
    assert slots_of(runs) == [created_at + timedelta(minutes=10 * n) for n in range(1, 5)]
    assert all(run.status is RunStatus.COMPLETED for run in runs)
    assert runs[0].created_at == created_at + timedelta(minutes=10)  # on time, not before
    found = await get_schedule("every-10", storage=env.storage)
    assert found is not None
    assert (found.total_runs, found.successful_runs, found.skipped_runs) == (4, 4, 0)
    assert found.last_run_id == runs[-1].run_id and found.running_run_ids == []


async def test_two_schedulers_at_once_start_each_slot_once(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="1m"), schedule_id="raced")
    other = Engine(env.storage, env.clock, env.engine.queue)
    for _ in range(5):
        env.clock.advance(60)
        await asyncio.gather(serve(env), serve(env, other), serve(env))
    runs = await runs_of(env, "raced")
    assert len(runs) == 5 == len(set(slots_of(runs)))
    found = await get_schedule("raced")
    assert found is not None and found.total_runs == 5


async def test_missed_slots_fire_the_latest_and_count_the_rest_skipped(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="1h"), schedule_id="hourly")
    env.clock.advance(24 * HOUR)  # nothing served the schedule for a day
    assert len(await serve(env)) == 1
    found = await get_schedule("hourly")
    assert found is not None
    assert (found.total_runs, found.skipped_runs) == (1, 23)
    assert slots_of(await runs_of(env, "hourly")) == [env.clock.now()]


async def test_a_catchup_window_fires_the_recent_missed_slots(env: Env) -> None:
    spec = ScheduleSpec(interval="1h", catchup_window="6h")
    await create_schedule(quick, spec, schedule_id="catchup", overlap_policy="allow_all")
    began = env.clock.now()
    env.clock.advance(24 * HOUR)
    assert len(await serve(env)) == 7  # the slots of the last six hours, both ends
    found = await get_schedule("catchup")
    assert found is not None and (found.total_runs, found.skipped_runs) == (7, 17)
    assert slots_of(await runs_of(env, "catchup")) == [
        began + timedelta(hours=h) for h in range(18, 25)
    ]


@pytest.mark.parametrize(
    ("policy", "runs", "skipped", "buffered"),
    [
        ("skip", 2, 2, 0),  # slots at 1h, 2h, 3h, 4h: 1h runs to 2h30, 3h to 4h30
        ("buffer_one", 2, 1, 1),  # 2h waits, starts at 2h30 (to 4h); 3h waits, 4h skipped
        ("buffer_all", 2, 0, 2),  # 2h starts at 2h30; 3h and 4h wait
        ("allow_all", 4, 0, 0),
        ("cancel_other", 4, 0, 0),
    ],
)
async def test_overlap_policies(
    env: Env, policy: str, runs: int, skipped: int, buffered: int
) -> None:
    await create_schedule(slow, ScheduleSpec(interval="1h"), schedule_id="o", overlap_policy=policy)
    await advance(env, 4 * HOUR + 1)
    found = await get_schedule("o")
    started = await runs_of(env, "o")
    assert found is not None
    assert (found.total_runs, found.skipped_runs, found.buffered_count) == (
        runs,
        skipped,
        buffered,
    ), found
    assert len(started) == runs
    if policy == "cancel_other":
        # Each new run asked the one before to stop: all but the last ended cancelled.
        assert [run.status for run in started[:-1]] == [RunStatus.CANCELLED] * 3
        assert found.failed_runs == 3
    if policy.startswith("buffer"):
        # A buffered start begins when the run before it ends, not at its slot.
        for before, after in zip(started, started[1:], strict=False):
            assert after.created_at is not None and before.updated_at is not None
            assert after.created_at >= before.updated_at


async def test_pause_stops_firing_and_resume_does_not_burst(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="10m"), schedule_id="p")
    await advance(env, 600)
    paused = await pause_schedule("p")
    assert paused.status is ScheduleStatus.PAUSED and paused.poll_at is None
    await advance(env, 3 * HOUR)
    assert len(await runs_of(env, "p")) == 1
    resumed = await resume_schedule("p")
    assert resumed.status is ScheduleStatus.ACTIVE
    assert resumed.next_run_time is not None and resumed.next_run_time > env.clock.now()
    assert await serve(env) == []  # no burst of the slots missed while paused
    await advance(env, 600)
    found = await get_schedule("p")
    assert found is not None and (found.total_runs, found.skipped_runs) == (2, 0)


async def test_delete_is_soft_and_final(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="10m"), schedule_id="d")
    deleted = await delete_schedule("d")
    assert deleted.status is ScheduleStatus.DELETED
    await advance(env, HOUR)
    assert await runs_of(env, "d") == []
    found = await get_schedule("d")
    assert found is not None and found.status is ScheduleStatus.DELETED
    for operation in (pause_schedule, resume_schedule, trigger_schedule):
        with pytest.raises(ScheduleNotFoundError, match="deleted"):
            await operation("d")
    with pytest.raises(ScheduleAlreadyExistsError):
        await create_schedule(quick, ScheduleSpec(interval="10m"), schedule_id="d")
    assert [s.schedule_id for s in await list_schedules(status="deleted")] == ["d"]


async def test_trigger_and_backfill(env: Env) -> None:
    created_at = env.clock.now()
    await create_schedule(quick, ScheduleSpec(interval="1h"), "x", schedule_id="t")
    run_id = await trigger_schedule("t")
    await env.settle()
    run = await env.storage.get_run(run_id)
    assert run is not None and run.context["triggered"] is True
    assert run.status is RunStatus.COMPLETED
    await pause_schedule("t")
    env.clock.advance(5 * HOUR)
    window = (created_at + timedelta(minutes=30), created_at + timedelta(hours=3))
    first = await backfill_schedule("t", *window)
    await env.settle()
    again = await backfill_schedule("t", *window)
    assert first == again and len(first) == 3
    runs = await runs_of(env, "t")
    backfilled = [r for r in runs if r.context.get("backfilled")]
    assert slots_of(backfilled) == [created_at + timedelta(hours=h) for h in (1, 2, 3)]
    found = await get_schedule("t")
    assert found is not None and (found.total_runs, found.successful_runs) == (4, 4)
    with pytest.raises(ValueError, match="timezone-aware"):
        await backfill_schedule("t", datetime(2026, 1, 1), datetime(2026, 1, 2))  # noqa: DTZ001


async def test_a_cron_schedule_keeps_local_time_across_daylight_saving(env: Env) -> None:
    env.clock.current = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # Prague changes on the 29th
    prague = ZoneInfo("Europe/Prague")
    await create_schedule(
        quick, ScheduleSpec(cron="0 9 * * *", timezone="Europe/Prague"), schedule_id="nine"
    )
    night = ScheduleSpec(calendar=CalendarSpec(hour=2, minute=30), timezone="Europe/Prague")
    await create_schedule(quick, night, schedule_id="night")
    await advance(env, 4 * 24 * HOUR, step_seconds=HOUR)
    nine = [slot.astimezone(prague) for slot in slots_of(await runs_of(env, "nine"))]
    assert [(s.day, s.hour, s.minute) for s in nine] == [(d, 9, 0) for d in (28, 29, 30, 31)]
    assert [s.utcoffset() for s in nine] == [timedelta(hours=h) for h in (1, 2, 2, 2)]
    nights = [slot.astimezone(prague) for slot in slots_of(await runs_of(env, "night"))]
    # 02:30 does not exist on the 29th: that night fires once, at 03:00.
    assert [(s.day, s.hour, s.minute) for s in nights] == [
        (28, 2, 30),
        (29, 3, 0),
        (30, 2, 30),
        (31, 2, 30),
    ]


async def test_a_scheduler_dying_between_decision_and_creation_loses_no_run(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_schedule(quick, ScheduleSpec(interval="1h"), schedule_id="crash")
    env.clock.advance(HOUR)

    class Died(BaseException):
        """The scheduler's process dies here (nothing of it runs on)."""

    async def die(self: Engine, schedule: Schedule) -> list[str]:
        raise Died

    monkeypatch.setattr(Engine, "_create_starting", die)
    with pytest.raises(Died):
        await env.engine.fire_due_schedules()
    monkeypatch.undo()
    decided = await env.storage.get_schedule("crash")
    assert decided is not None and len(decided.starting) == 1 and decided.total_runs == 1
    assert await runs_of(env, "crash") == []
    env.clock.advance(START_RETRY.total_seconds())  # the decision's retry poll
    assert len(await serve(env)) == 1
    found = await get_schedule("crash")
    assert found is not None and found.starting == {} and found.total_runs == 1
    assert [r.status for r in await runs_of(env, "crash")] == [RunStatus.COMPLETED]


async def test_update_changes_spec_and_policy(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="1h"), schedule_id="u")
    updated = await update_schedule(
        "u", spec=ScheduleSpec(interval="5m"), overlap_policy="allow_all"
    )
    assert updated.overlap_policy is OverlapPolicy.ALLOW_ALL
    assert updated.next_run_time == env.clock.now() + timedelta(minutes=5)
    await advance(env, 600)
    assert len(await runs_of(env, "u")) == 2


async def test_scheduled_workflow_is_created_when_a_scheduler_starts(env: Env) -> None:
    @scheduled_workflow(interval="15m", name="sched_declared", overlap_policy="buffer_one")
    async def declared() -> str:
        return await note("declared")

    scheduler = LocalScheduler(storage=env.storage)
    assert await scheduler.tick_once() == []
    schedule = await get_schedule("sched_declared")
    assert schedule is not None
    assert schedule.spec.interval == timedelta(minutes=15)
    assert schedule.overlap_policy is OverlapPolicy.BUFFER_ONE
    await pause_schedule("sched_declared")
    again = await env.engine.declare_schedules()  # a second start: the pause stays
    assert again == []
    found = await get_schedule("sched_declared")
    assert found is not None and found.status is ScheduleStatus.PAUSED
    await resume_schedule("sched_declared")
    env.clock.advance(15 * 60)
    assert len(await scheduler.tick_once()) == 1


async def test_bad_input_is_refused_clearly(env: Env) -> None:
    with pytest.raises(ValueError, match="invalid schedule id"):
        await create_schedule(quick, ScheduleSpec(interval="1h"), schedule_id="no spaces")
    with pytest.raises(TypeError, match="ScheduleSpec"):
        await create_schedule(quick, "0 9 * * *")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sched_quick"):
        await create_schedule(quick, ScheduleSpec(interval="1h"), 1, 2, 3)
    with pytest.raises(ValueError, match="cron"):
        ScheduleSpec(cron="61 * * * *")
    with pytest.raises(ValueError, match="interval"):
        ScheduleSpec(interval="soon")
    with pytest.raises(ValueError, match="overlap|skip"):
        await create_schedule(quick, ScheduleSpec(interval="1h"), overlap_policy="sometimes")
    for operation in (pause_schedule, resume_schedule, delete_schedule, trigger_schedule):
        with pytest.raises(ScheduleNotFoundError):
            await operation("nope")
    assert await get_schedule("nope") is None


async def test_list_filters_and_pages(env: Env) -> None:
    for n in range(5):
        await create_schedule(
            quick if n % 2 else slow, ScheduleSpec(interval="1h"), schedule_id=f"l{n}"
        )
        env.clock.advance(1)
    await pause_schedule("l3")
    everything = await list_schedules()
    assert [s.schedule_id for s in everything] == [f"l{n}" for n in range(5)]
    assert [s.schedule_id for s in await list_schedules(workflow_name="sched_quick")] == [
        "l1",
        "l3",
    ]
    assert [s.schedule_id for s in await list_schedules(status="paused")] == ["l3"]
    assert [s.schedule_id for s in await list_schedules(limit=2, offset=2)] == ["l2", "l3"]


async def test_scheduled_workflow_stacks_over_workflow(env: Env) -> None:
    @scheduled_workflow(cron="0 9 * * *", timezone="Europe/Prague")
    @workflow(name="sched_stacked")
    async def stacked() -> str:
        return "ok"

    assert await env.engine.declare_schedules() == ["sched_stacked"]
    schedule = await get_schedule("sched_stacked")
    assert schedule is not None and schedule.spec.cron == "0 9 * * *"
    assert schedule.workflow_name == "sched_stacked"


async def test_a_long_outage_is_counted_not_walked(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="1s"), schedule_id="second")
    await create_schedule(quick, ScheduleSpec(cron="* * * * *"), schedule_id="minute")
    env.clock.advance(3 * 24 * HOUR)  # everything down for three days
    assert len(await serve(env)) == 2
    second = await get_schedule("second")
    minute = await get_schedule("minute")
    assert second is not None and minute is not None
    assert (second.total_runs, second.skipped_runs) == (1, 3 * 24 * 3600 - 1)
    assert (minute.total_runs, minute.skipped_runs) == (1, 3 * 24 * 60 - 1)
    env.clock.advance(10 * 24 * HOUR)
    assert (await delete_schedule("second")).skipped_runs == 13 * 24 * 3600 - 1


async def test_a_schedule_that_cannot_run_does_not_stop_the_others(env: Env) -> None:
    bad = await create_schedule(quick, ScheduleSpec(interval="1m"), schedule_id="a-bad")
    await create_schedule(quick, ScheduleSpec(interval="1m"), schedule_id="b-good")
    bad.kwargs = '{"nonsense": 1}'  # the workflow's signature changed under it
    assert await env.storage.update_schedule(bad, bad.revision) is not None
    for _ in range(3):
        env.clock.advance(60)
        await serve(env)
    good = await get_schedule("b-good")
    broken = await get_schedule("a-bad")
    assert good is not None and broken is not None
    assert good.total_runs == 3
    assert broken.total_runs == 0 and broken.starting == {}  # nothing decided it cannot start
    assert "do not fit workflow 'sched_quick'" in broken.metadata["last_error"]


async def test_deleting_counts_the_buffered_slots_as_skipped(env: Env) -> None:
    await create_schedule(
        slow, ScheduleSpec(interval="1h"), schedule_id="b", overlap_policy="buffer_all"
    )
    await advance(env, 4 * HOUR + 1)
    before = await get_schedule("b")
    assert before is not None and before.buffered_count == 2
    deleted = await delete_schedule("b")
    assert deleted.buffered_count == 0
    assert deleted.skipped_runs == before.skipped_runs + 2


async def test_two_triggers_at_one_instant_start_two_runs(env: Env) -> None:
    await create_schedule(quick, ScheduleSpec(interval="1h"), schedule_id="tt")
    first = await trigger_schedule("tt")
    second = await trigger_schedule("tt")
    await env.settle()
    assert first != second
    found = await get_schedule("tt")
    assert found is not None and (found.total_runs, found.successful_runs) == (2, 2)


@workflow(name="sched_looping")
async def looping(round_: int = 0) -> str:
    await sleep("30m")
    if round_ < 5:
        await continue_as_new(round_ + 1)
    return "done"


async def test_cancel_other_stops_the_live_run_of_a_chain(env: Env) -> None:
    await create_schedule(
        looping, ScheduleSpec(interval="1h"), schedule_id="chained", overlap_policy="cancel_other"
    )
    await advance(env, 2 * HOUR + 1)
    runs = await runs_of(env, "chained")
    assert len(runs) == 2
    first = runs[0]
    assert first.status is RunStatus.CONTINUED_AS_NEW
    end = first
    while end.continued_to_run_id is not None:
        following = await env.storage.get_run(end.continued_to_run_id)
        assert following is not None
        end = following
    assert end.status is RunStatus.CANCELLED  # the chain's live run, not its finished first


async def test_an_interval_backfill_does_not_start_at_the_creation_instant(env: Env) -> None:
    created_at = env.clock.now()
    await create_schedule(quick, ScheduleSpec(interval="1h"), schedule_id="bf")
    await pause_schedule("bf")
    env.clock.advance(3 * HOUR)
    ran = await backfill_schedule("bf", created_at, created_at + timedelta(hours=2))
    await env.settle()
    assert slots_of(await runs_of(env, "bf")) == [created_at + timedelta(hours=h) for h in (1, 2)]
    assert len(ran) == 2
