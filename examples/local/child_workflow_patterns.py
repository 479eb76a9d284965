"""Child workflow patterns: fan-out/fan-in, fire-and-forget handles, cancelling a child, and the
nesting limit.

Run it: ``python examples/local/child_workflow_patterns.py`` (runs in ``./pyworkflow_data``).

- Fan-out: ``asyncio.gather`` over ``start_child_workflow`` runs children in parallel.
- ``wait_for_completion=False`` returns a ``ChildWorkflowHandle`` at once: ``await
  handle.result()``, ``get_status()``, ``is_running()``, ``is_terminal()``, ``cancel()``. Inside
  the parent each call is durable and replay-safe.
- A parent that ends cancels the children it leaves running; children nest at most 3 deep
  (``MaxNestingDepthError``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyworkflow import (
    ChildWorkflowFailedError,
    MaxNestingDepthError,
    get_workflow_result,
    sleep,
    start,
    start_child_workflow,
    step,
    workflow,
)


@step()
async def resize(image: str, width: int) -> str:
    return f"{image}@{width}px"


@workflow()
async def thumbnail(image: str, width: int) -> str:
    return await resize(image, width)


@workflow()
async def slow_report(name: str) -> str:
    await sleep("1d")
    return f"report {name}"


@workflow()
async def gallery(images: list[str]) -> dict[str, Any]:
    # Fan-out / fan-in: one child per image, all at once.
    thumbs = await asyncio.gather(*(start_child_workflow(thumbnail, i, 128) for i in images))
    # Fire and forget, then come back for the result.
    banner = await start_child_workflow(thumbnail, "banner.png", 1200, wait_for_completion=False)
    report = await start_child_workflow(slow_report, "weekly", wait_for_completion=False)
    first_status = await report.get_status()
    cancelled = await report.cancel(reason="not needed any more")
    try:
        await report.result()
        report_outcome = "finished"
    except ChildWorkflowFailedError as exc:
        report_outcome = f"ended with {exc.error_type}"
    return {
        "thumbnails": list(thumbs),
        "banner": await banner.result(),
        "report": [first_status, cancelled, report_outcome],
    }


@workflow()
async def nested(depth: int) -> int:
    if depth == 0:
        return 0
    return 1 + await start_child_workflow(nested, depth - 1)


@workflow()
async def too_deep() -> str:
    try:
        await start_child_workflow(nested, 4)
    except ChildWorkflowFailedError as exc:
        # The run at depth 3 could not start a fourth level: MaxNestingDepthError there, and
        # each parent above it heard that its child failed.
        limit = "nest at most 3 levels deep" in str(exc)
        return f"refused by {MaxNestingDepthError.__name__}: {limit}"
    return "nested 4 deep"


async def main() -> None:
    run_id = await start(gallery, ["cat.png", "dog.png", "owl.png"])
    print(f"gallery: {await get_workflow_result(run_id, timeout=30)}")
    print(f"three levels: {await get_workflow_result(await start(nested, 3), timeout=30)}")
    print(f"four levels: {await get_workflow_result(await start(too_deep), timeout=30)}")


if __name__ == "__main__":
    asyncio.run(main())
