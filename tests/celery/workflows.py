"""Workflows the Celery integration tests run on real worker processes.

The workers import this module (``pyworkflow --module tests.celery.workflows worker run``); so do
the tests, to start runs. Every step body appends one JSON line to the ledger file named in the
run's arguments *when it starts*, so the ledger counts executions (including ones a killed or
stopped worker never finished) and says where they ran (pid, event loop, thread).

``parked`` waits until its "go" file exists: a test that sees its ledger line knows a worker is
inside that step, and can stop that worker at exactly that point.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from pyworkflow import (
    RetryableError,
    StepTimeoutError,
    get_step_info,
    hook,
    sleep,
    start_child_workflow,
    step,
    workflow,
)

PARK_LIMIT_SECONDS = 30.0


def note(ledger: str, **extra: Any) -> dict[str, Any]:
    info = get_step_info()
    line = {
        "run_id": info.run_id,
        "step_id": info.step_id,
        "step": info.step_name,
        "attempt": info.attempt,
        "pid": os.getpid(),
        "loop": id(asyncio.get_running_loop()),
        "thread": threading.current_thread().name,
        "at": time.time(),
        **extra,
    }
    with open(ledger, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
    return line


@step(name="celery_work")
async def work(ledger: str, tag: str, seconds: float = 0.0) -> str:
    note(ledger)
    if seconds:
        await asyncio.sleep(seconds)
    return tag


@step(name="celery_local_work", force_local=True)
async def local_work(ledger: str, tag: str) -> str:
    note(ledger)
    return f"{tag}@local"


@step(name="celery_flaky", max_retries=2, retry_delay="30s")
async def flaky(ledger: str, tag: str) -> str:
    """Fails its first attempt asking for a retry in 0.4 s (not the 30 s of ``retry_delay``)."""
    if note(ledger)["attempt"] == 1:
        raise RetryableError("not yet", retry_after=0.4)
    return tag


@step(name="celery_shaky", max_retries=1, retry_delay=0.3)
async def shaky(ledger: str, tag: str) -> str:
    """Fails its first attempt with a plain error: retried after ``retry_delay``."""
    if note(ledger)["attempt"] == 1:
        raise ConnectionError("the network blinked")
    return tag


@step(name="celery_too_slow", timeout=0.3, max_retries=0)
async def too_slow(ledger: str) -> str:
    note(ledger)
    await asyncio.sleep(10)
    return "finished anyway"


@step(name="celery_where")
async def where(ledger: str, seconds: float) -> dict[str, Any]:
    line = note(ledger)
    await asyncio.sleep(seconds)
    return {"pid": line["pid"], "loop": line["loop"], "thread": line["thread"]}


@step(name="celery_parked")
async def parked(ledger: str, go: str) -> str:
    note(ledger)
    deadline = time.monotonic() + PARK_LIMIT_SECONDS
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never appeared")
        await asyncio.sleep(0.02)
    return "released"


@workflow(name="celery_order", max_recovery_attempts=100)
async def order(ledger: str, n: int) -> str:
    """Steps, a sleep, a hook, parallel steps, an inline step and two retried steps."""
    reserved = await work(ledger, f"reserve-{n}")
    await sleep(0.5)
    approval = await hook("approval", timeout="2m")
    charged, packed = await asyncio.gather(work(ledger, f"charge-{n}"), work(ledger, f"pack-{n}"))
    label = await local_work(ledger, f"label-{n}")
    shipped = await flaky(ledger, f"ship-{n}")
    mailed = await shaky(ledger, f"mail-{n}")
    parts = [reserved, str(approval["ok"]), charged, packed, label, shipped, mailed]
    return "; ".join(parts)


def order_result(n: int) -> str:
    return f"reserve-{n}; True; charge-{n}; pack-{n}; label-{n}@local; ship-{n}; mail-{n}"


@workflow(name="celery_pipeline", max_recovery_attempts=100)
async def pipeline(ledger: str, n: int) -> str:
    """What the kill test runs: steps, sleeps, parallel steps and an inline step; no hooks."""
    first = await work(ledger, f"a{n}", 0.05)
    await sleep(0.3)
    second, third = await asyncio.gather(work(ledger, f"b{n}", 0.05), work(ledger, f"c{n}", 0.05))
    fourth = await local_work(ledger, f"d{n}")
    await sleep(0.2)
    fifth = await work(ledger, f"e{n}", 0.05)
    return "|".join([first, second, third, fourth, fifth])


def pipeline_result(n: int) -> str:
    return f"a{n}|b{n}|c{n}|d{n}@local|e{n}"


@workflow(name="celery_long_sleep")
async def long_sleep(ledger: str, seconds: float) -> str:
    await sleep(seconds)
    return await work(ledger, "after-sleep")


@workflow(name="celery_replayable")
async def replayable(ledger: str) -> str:
    """A sequential mix whose log shape does not depend on timing (simulator vs real workers)."""
    first = await work(ledger, "one")
    await sleep(0.3)
    second = await local_work(ledger, "two")
    third = await flaky(ledger, "three")
    answer = await hook("approval", timeout="1h")
    fourth = await work(ledger, f"four-{answer['ok']}")
    return "; ".join([first, second, third, fourth])


@workflow(name="celery_timeouts")
async def timeouts(ledger: str) -> str:
    try:
        return await too_slow(ledger)
    except StepTimeoutError as exc:
        return f"timed out: {exc}"


@workflow(name="celery_spread")
async def spread(ledger: str, count: int, seconds: float) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(where(ledger, seconds) for _ in range(count))))


@workflow(name="celery_parked_run")
async def parked_run(ledger: str, go: str) -> str:
    return await parked(ledger, go)


@workflow(name="celery_two_steps")
async def two_steps(ledger: str) -> str:
    return await work(ledger, "x") + await work(ledger, "y")


@workflow(name="celery_long_step")
async def long_step(ledger: str, seconds: float) -> str:
    return await work(ledger, "long", seconds)


@workflow(name="celery_child", max_recovery_attempts=100)
async def child(ledger: str, n: int) -> int:
    await work(ledger, f"child-{n}", 0.1)
    return n * n


@workflow(name="celery_parent", max_recovery_attempts=100)
async def parent(ledger: str, count: int) -> int:
    """``count`` children at once, each a run of its own on whichever worker takes it."""
    results = await asyncio.gather(*(start_child_workflow(child, ledger, n) for n in range(count)))
    return sum(results)


@workflow(name="celery_sleepy_child")
async def sleepy_child(ledger: str, n: int) -> str:
    await sleep(3600)
    return await work(ledger, f"sleepy-{n}")


@workflow(name="celery_sleepy_parent")
async def sleepy_parent(ledger: str, count: int) -> str:
    """Children sleeping an hour under a parent sleeping an hour: cancelled as a tree."""
    for n in range(count):
        await start_child_workflow(sleepy_child, ledger, n, wait_for_completion=False)
    await sleep(3600)
    return await work(ledger, "parent-after-sleep")


@step(name="celery_long_chore")
async def long_chore(ledger: str, rounds: int) -> int:
    """Checks for cancellation between rounds: stops early once its run is cancelled."""
    note(ledger, phase="began")
    for done in range(rounds):
        try:
            get_step_info().check_cancellation()
        except Exception:
            note(ledger, phase="stopped", after=done)
            raise
        await asyncio.sleep(0.01)
    return rounds


@workflow(name="celery_chore")
async def chore(ledger: str, rounds: int) -> int:
    return await long_chore(ledger, rounds)


@workflow(name="celery_scheduled", max_recovery_attempts=100)
async def scheduled(ledger: str) -> str:
    """What the schedule test starts every second: one dispatched step."""
    return await work(ledger, "tick")
