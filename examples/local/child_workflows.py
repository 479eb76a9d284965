"""Child workflows: a parent order workflow runs payment and shipping as workflows of their own.

Run it: ``python examples/local/child_workflows.py`` (stores runs in ``./pyworkflow_data``).

``await start_child_workflow(payment, ...)`` starts a child run and waits for its result. The child
has its own log, retries and recovery; its creation is recorded exactly once in the parent, and
its ending reaches the parent exactly once. A child that fails raises
``ChildWorkflowFailedError`` in the parent, with the child's error type and message.
"""

from __future__ import annotations

import asyncio

from pyworkflow import (
    ChildWorkflowFailedError,
    FatalError,
    get_workflow_chain,
    get_workflow_events,
    get_workflow_result,
    get_workflow_run,
    start,
    start_child_workflow,
    step,
    workflow,
)


@step()
async def charge_card(order_id: str, amount: int) -> str:
    if amount > 1000:
        raise FatalError(f"card declined for {amount}")
    return f"payment-{order_id}"


@step()
async def book_courier(order_id: str) -> str:
    return f"tracking-{order_id}"


@workflow()
async def payment(order_id: str, amount: int) -> str:
    return await charge_card(order_id, amount)


@workflow()
async def shipping(order_id: str) -> str:
    return await book_courier(order_id)


@workflow()
async def order(order_id: str, amount: int) -> dict[str, str]:
    """Pays, then ships: each a child workflow. A failed payment cancels the order."""
    try:
        receipt = await start_child_workflow(payment, order_id, amount)
    except ChildWorkflowFailedError as exc:
        return {"order": order_id, "status": "payment failed", "why": exc.error_message or ""}
    tracking = await start_child_workflow(shipping, order_id)
    return {"order": order_id, "status": "shipped", "receipt": receipt, "tracking": tracking}


async def main() -> None:
    good = await start(order, "A-1", 120)
    print(f"order A-1: {await get_workflow_result(good, timeout=30)}")
    events = await get_workflow_events(good)
    children = [e.data["child_run_id"] for e in events if e.type.value == "child_workflow.started"]
    for child_id in children:
        child = await get_workflow_run(child_id)
        assert child is not None
        print(f"  child {child.workflow_name}: {child.status.value} (parent {child.parent_run_id})")
    bad = await start(order, "B-2", 5000)
    print(f"order B-2: {await get_workflow_result(bad, timeout=30)}")
    assert len(await get_workflow_chain(good)) == 1


if __name__ == "__main__":
    asyncio.run(main())
