"""A child workflow started from inside a step.

Run it: ``python examples/local/child_from_step.py`` (stores runs in ``./pyworkflow_data``).

A step cannot suspend, so from a step only ``start_child_workflow(...,
wait_for_completion=False)`` works: it starts the child and returns a ``ChildWorkflowHandle``. The
child's id is stable across the step's retries, so a retried attempt finds the child the first
attempt started instead of starting another. Outside its parent's code the handle reads storage
(``result``, ``get_status``, ``cancel``). The parent's code cannot await such a child, so it runs
on its own: it is not cancelled when the parent ends. ``wait_for_completion=True`` in a step
raises a clear ``ChildWorkflowError``.
"""

from __future__ import annotations

import asyncio

from pyworkflow import (
    ChildWorkflowError,
    ChildWorkflowHandle,
    get_step_info,
    get_workflow_result,
    get_workflow_run,
    start,
    start_child_workflow,
    step,
    workflow,
)


@step()
async def write_audit_entry(entry: str) -> str:
    return f"audited: {entry}"


@workflow()
async def audit(entry: str) -> str:
    return await write_audit_entry(entry)


@step(max_retries=2, retry_delay=0.01)
async def import_file(name: str) -> str:
    handle = await start_child_workflow(audit, f"imported {name}", wait_for_completion=False)
    if get_step_info().attempt == 1:
        raise ConnectionError("the file server blinked")  # retried: the same child, not two
    return handle.child_run_id


@step()
async def waits_in_a_step() -> str:
    try:
        return str(await start_child_workflow(audit, "never"))
    except ChildWorkflowError as exc:
        return f"refused: {exc}"


@workflow()
async def importer(name: str) -> dict[str, str]:
    return {"audit_run": await import_file(name), "waiting": await waits_in_a_step()}


async def main() -> None:
    run_id = await start(importer, "report.csv")
    result = await get_workflow_result(run_id, timeout=30)
    child_id = result["audit_run"]
    handle = ChildWorkflowHandle(child_id, "audit", run_id)
    print(f"the step started {child_id}")
    print(f"child result: {await handle.result(timeout=30)}")
    child = await get_workflow_run(child_id)
    assert child is not None
    print(f"child's parent: {child.parent_run_id == run_id}, depth {child.nesting_depth}")
    print(f"waiting in a step: {result['waiting'][:60]}...")


if __name__ == "__main__":
    asyncio.run(main())
