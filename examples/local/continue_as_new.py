"""Continue-as-new: a long-lived loop that keeps its history small.

Run it: ``python examples/local/continue_as_new.py`` (stores runs in ``./pyworkflow_data``).

A workflow that polls, counts or processes batches for ever would grow its log without end.
``await continue_as_new(*args)`` ends the run (status ``continued_as_new``) and starts a new run
of the same workflow with those arguments and an empty history, in one atomic write. The runs
form a chain: ``get_workflow_chain`` lists it from any member, and ``get_workflow_result`` of
any member waits for the end of the chain and returns its result.
"""

from __future__ import annotations

import asyncio

from pyworkflow import (
    continue_as_new,
    get_workflow_chain,
    get_workflow_events,
    get_workflow_result,
    sleep,
    start,
    step,
    workflow,
)

BATCH = 10


@step()
async def process_batch(start_at: int) -> int:
    return sum(range(start_at, start_at + BATCH))  # stands in for real work


@workflow()
async def batch_processor(start_at: int, total: int = 0, stop_at: int = 50) -> int:
    """One batch per run; continues as new with the next offset until ``stop_at``."""
    if start_at >= stop_at:
        return total
    done = await process_batch(start_at)
    await sleep(0.1)  # a pause between batches (durable: no worker held)
    await continue_as_new(start_at + BATCH, total=total + done, stop_at=stop_at)
    raise AssertionError("continue_as_new never returns")


async def main() -> None:
    first = await start(batch_processor, 0)
    total = await get_workflow_result(first, timeout=60)  # follows the chain to its end
    print(f"total: {total} (expected {sum(range(50))})")
    chain = await get_workflow_chain(first)
    print(f"chain of {len(chain)} runs: {' -> '.join(run.status.value for run in chain)}")
    longest = max([len(await get_workflow_events(run.run_id)) for run in chain])
    print(f"longest log in the chain: {longest} events")
    middle = await get_workflow_chain(chain[2].run_id)
    assert [run.run_id for run in middle] == [run.run_id for run in chain]


if __name__ == "__main__":
    asyncio.run(main())
