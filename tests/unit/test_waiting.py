"""``pyworkflow.utils.waiting``: a cancellation is never lost while waiting (the cause of scripts
that never exited on Python 3.11, see ``tests/integration/test_exit.py``)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pyworkflow.utils.waiting import cancel_and_wait, wait_event


async def _loop_on(event: asyncio.Event) -> None:
    """What a service loop does: wait for a wake-up or a timeout, again and again."""
    while True:
        await wait_event(event, 10.0)
        event.clear()


async def test_a_cancel_that_arrives_with_the_wake_up_ends_the_loop() -> None:
    event = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_loop_on(event))
    await asyncio.sleep(0)  # the loop waits
    event.set()  # the wake-up and the cancellation in the same loop iteration
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert task in done and task.cancelled()


async def test_wait_event_reports_set_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.0) is False
    event.set()
    assert await wait_event(event, 0.0) is True


async def test_cancel_and_wait_passes_on_a_cancel_of_the_caller() -> None:
    stubborn_started = asyncio.Event()

    async def stubborn() -> None:
        stubborn_started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # takes a moment to wind down
            raise

    inner = asyncio.get_running_loop().create_task(stubborn())
    await stubborn_started.wait()

    async def stopper() -> str:
        await cancel_and_wait(inner)
        return "stopped"

    outer = asyncio.get_running_loop().create_task(stopper())
    await asyncio.sleep(0.01)  # outer waits for inner to wind down
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner.cancelled()
    assert await asyncio.get_running_loop().create_task(stopper()) == "stopped"


async def test_cancel_and_wait_after_an_earlier_cancel_the_caller_caught() -> None:
    """A caller that caught a cancellation long ago (its ``cancelling()`` stays above 0) is
    not cancelled now: stopping a task must not raise."""

    async def caller() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # caught, not uncancelled: common
            await asyncio.sleep(10)
        other = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        await cancel_and_wait(other)
        return "stopped"

    task = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "stopped"
