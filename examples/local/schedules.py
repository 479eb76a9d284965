"""Schedules: cron, interval and calendar schedules fired exactly once, with overlap policies.

Run it: ``python examples/local/schedules.py`` (stores runs and schedules in ``./pyworkflow_data``).

A schedule is a durable record: ``create_schedule`` stores it, a ``LocalScheduler`` (here, in
this process; on Celery, every worker) claims each due slot through storage and starts one run
for it. ``@scheduled_workflow`` declares a workflow's schedule in code; it is created when a
scheduler starts. Pause, resume, trigger and backfill work on the stored schedule.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pyworkflow import (
    CalendarSpec,
    LocalScheduler,
    OverlapPolicy,
    ScheduleSpec,
    backfill_schedule,
    create_schedule,
    delete_schedule,
    get_schedule,
    get_workflow_result,
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


@step()
async def collect_metrics(source: str) -> int:
    return len(source) * 7  # stands in for real work


@workflow()
async def metrics_report(source: str) -> str:
    value = await collect_metrics(source)
    return f"{source}: {value}"


@workflow()
async def slow_sync(batch: str) -> str:
    await sleep(1.5)  # longer than the schedule's period: the overlap policy decides
    return batch


@scheduled_workflow(interval="1s", overlap_policy=OverlapPolicy.SKIP)
async def heartbeat() -> str:
    return "alive"


async def main(serve: bool = True) -> None:
    """``serve``: run a ``LocalScheduler`` here (on Celery the workers serve schedules)."""
    if await get_schedule("metrics") is not None:
        print("the schedules of an earlier run are stored: remove ./pyworkflow_data to start over")
        return
    every_second = await create_schedule(
        metrics_report, ScheduleSpec(interval=timedelta(seconds=1)), "api", schedule_id="metrics"
    )
    print(f"created {every_second.schedule_id}: next run at {every_second.next_run_time}")
    nightly = await create_schedule(
        "metrics_report",
        ScheduleSpec(cron="0 9 * * *", timezone="Europe/Prague"),
        "db",
        schedule_id="nightly",
    )
    local = nightly.next_run_time.astimezone(nightly.spec.zone) if nightly.next_run_time else None
    print(f"nightly runs at 09:00 Prague time: {local is not None and local.hour == 9}")
    await create_schedule(
        slow_sync,
        ScheduleSpec(interval="1s"),
        "orders",
        overlap_policy=OverlapPolicy.BUFFER_ONE,
        schedule_id="sync",
    )
    await create_schedule(
        metrics_report,
        ScheduleSpec(calendar=CalendarSpec(hour=[6, 18], minute=30), timezone="UTC"),
        "calendar",
        schedule_id="twice-a-day",
    )

    if serve:
        await LocalScheduler(poll_interval=0.5).run(duration=3.5)
    else:
        await asyncio.sleep(3.5)  # the workers serve the schedules meanwhile

    metrics = await get_schedule("metrics")
    assert metrics is not None
    print(f"metrics fired {metrics.total_runs} times, skipped {metrics.skipped_runs}")
    result = await get_workflow_result(metrics.last_run_id or "", timeout=10)
    print(f"last metrics run: {result}")
    beat = await get_schedule("heartbeat")
    print(f"heartbeat declared in code: {beat is not None and beat.total_runs > 0}")
    sync = await get_schedule("sync")
    assert sync is not None
    print(f"sync (buffer_one) ran {sync.total_runs}, buffered {sync.buffered_count}")

    paused = await pause_schedule("metrics")
    print(f"paused: {paused.status}")
    run_id = await trigger_schedule("metrics")
    print(f"triggered while paused: {await get_workflow_result(run_id, timeout=10)}")
    since = metrics.created_at or datetime.now(UTC)
    first = await backfill_schedule("metrics", since, since + timedelta(seconds=2))
    again = await backfill_schedule("metrics", since, since + timedelta(seconds=2))
    print(f"backfill twice, same runs: {first == again}")
    resumed = await resume_schedule("metrics")
    print(f"resumed: {resumed.status}")
    await update_schedule("metrics", spec=ScheduleSpec(cron="*/5 * * * *"))
    await delete_schedule("twice-a-day")
    names = sorted((s.schedule_id, s.status.value) for s in await list_schedules())
    print(f"schedules: {names}")


if __name__ == "__main__":
    asyncio.run(main())
