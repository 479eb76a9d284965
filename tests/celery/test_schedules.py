"""Schedules on real Celery workers: served by the workers' engine service (no beat process), a
slot fires once however many workers serve it, and a worker SIGKILLed mid-schedule loses no slot
beyond the stated policy (slots missed while nobody could serve them are counted as skipped)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from pyworkflow import ScheduleSpec
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.scheduling import create_schedule, get_schedule, pause_schedule
from pyworkflow_testing.schedule_oracles import schedule_problems
from tests.celery import workflows as wf
from tests.celery.conftest import Client

MINUTE = 60.0
KILL_AT = 20.0


async def _runs_of(client: Client, schedule_id: str) -> list[WorkflowRun]:
    found: list[WorkflowRun] = []
    cursor = None
    while True:
        page, cursor = await client.storage.list_runs(limit=500, cursor=cursor)
        found += [run for run in page if run.context.get("schedule_id") == schedule_id]
        if cursor is None:
            return found


async def test_an_every_second_schedule_survives_a_sigkilled_worker(client: Client) -> None:
    cluster = client.cluster
    await cluster.wait_ready(client.app)
    spec = ScheduleSpec(interval="1s")
    schedule = await create_schedule(
        wf.scheduled, spec, str(cluster.ledger), schedule_id=f"every-second-{time.time_ns()}"
    )
    sid = schedule.schedule_id
    assert schedule.created_at is not None
    began = time.monotonic()
    await asyncio.sleep(KILL_AT)  # the schedule runs; nothing to poll for
    cluster.kill("a")  # the prefork worker and its children, mid-schedule
    killed_at = datetime.now(UTC)
    await asyncio.sleep(MINUTE - (time.monotonic() - began))
    paused = await pause_schedule(sid)
    paused_at = paused.updated_at
    assert paused_at is not None

    runs = await _runs_of(client, sid)
    await client.finished([run.run_id for run in runs], deadline=60.0)
    runs = await _runs_of(client, sid)
    final = await get_schedule(sid)
    assert final is not None
    history = [(schedule.created_at, "create", spec, "skip"), (paused_at, "pause", None, None)]
    problems = schedule_problems(final, runs, history, None)
    assert not problems, f"{problems}\n{cluster.logs()}"
    # Worker b served the schedule on its own once a was gone, and every run completed.
    after_kill = [run for run in runs if run.created_at is not None and run.created_at > killed_at]
    assert len(after_kill) >= 20, f"{len(after_kill)} runs after the kill"
    assert all(run.status is RunStatus.COMPLETED for run in runs)
    assert final.successful_runs == len(runs) == final.total_runs
    # Nothing fired twice, nothing lost beyond the policy: each second fired or was skipped.
    assert final.total_runs + final.skipped_runs >= 55
    lateness = sorted(
        (run.created_at - datetime.fromisoformat(run.context["scheduled_time"])).total_seconds()
        for run in runs
        if run.created_at is not None
    )
    print(
        f"{len(runs)} runs, {final.skipped_runs} skipped; slot lateness p50"
        f" {lateness[len(lateness) // 2] * 1000:.1f} ms, max {lateness[-1] * 1000:.1f} ms"
    )
