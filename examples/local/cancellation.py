"""Cancellation: stop a run from outside, clean up under ``shield()``, stop a long step early.

Run it: ``python examples/local/cancellation.py`` (stores runs in ``./pyworkflow_data``).

``cancel_workflow`` records a durable request; the workflow sees ``CancellationError`` at the
durable call it waits on (here a one-hour sleep: it wakes now, not in an hour). Clean-up that
must happen goes under ``async with shield():`` so it is not cancelled itself, and it is recorded
like any step: a crash during it does not run a finished clean-up step again. A long step calls
``check_cancellation()`` to stop early.
"""

from __future__ import annotations

import asyncio

from pyworkflow import (
    CancellationError,
    cancel_workflow,
    get_step_info,
    get_workflow_events,
    get_workflow_result,
    get_workflow_run,
    get_workflow_run_by_idempotency_key,
    shield,
    sleep,
    start,
    step,
    workflow,
)


@step()
async def reserve_inventory(order_id: str) -> str:
    return f"reserved items for {order_id}"


@step()
async def release_inventory(order_id: str) -> str:
    return f"released items of {order_id}"


@step()
async def charge_payment(order_id: str) -> str:
    return f"charged {order_id}"


@workflow()
async def order_with_cleanup(order_id: str) -> str:
    """Reserves stock, waits an hour for the payment window, charges; cancelled meanwhile, it
    releases the stock (under a shield) and ends cancelled."""
    await reserve_inventory(order_id)
    try:
        await sleep("1h")
        return await charge_payment(order_id)
    except CancellationError:
        async with shield():
            await release_inventory(order_id)
        raise


@step()
async def export_rows(count: int) -> int:
    exported = 0
    for _ in range(count):
        get_step_info().check_cancellation()  # raises CancellationError once cancelled
        exported += 1
        await asyncio.sleep(0.001)
    return exported


@workflow()
async def big_export(count: int) -> int:
    return await export_rows(count)


async def main() -> None:
    run_id = await start(order_with_cleanup, "order-42")
    while await status_of(run_id) != "suspended":  # on Celery a worker is still at it
        await asyncio.sleep(0.05)
    print(f"started {run_id}: {await status_of(run_id)} (sleeping in its payment window)")
    recorded = await cancel_workflow(run_id, reason="customer changed their mind", wait=True)
    print(f"cancellation recorded: {recorded}")
    print(f"status: {await status_of(run_id)}")
    try:
        await get_workflow_result(run_id)
    except CancellationError as exc:
        print(f"get_workflow_result raised CancellationError: {exc}")
    events = await get_workflow_events(run_id)
    steps = [e.data["step_name"] for e in events if e.type.value == "step.completed"]
    print(f"steps recorded: {', '.join(steps)}")

    # A long step stops early: start the export, cancel it once it is under way.
    export = asyncio.ensure_future(start(big_export, 100_000, idempotency_key="export-1"))
    export_id = None
    while export_id is None:  # the run exists as soon as start() has recorded it
        await asyncio.sleep(0)
        found = await get_workflow_run_by_idempotency_key("export-1")
        export_id = found.run_id if found is not None else None
    await cancel_workflow(export_id, reason="taking too long", wait=True, timeout=30)
    await export
    print(f"export: {await status_of(export_id)} before the end of its step")


async def status_of(run_id: str) -> str:
    run = await get_workflow_run(run_id)
    assert run is not None
    return run.status.value


if __name__ == "__main__":
    asyncio.run(main())
