"""Child workflows on Celery workers: the counterpart of ``examples/local/child_workflows.py``.

The workflows and steps are the local example's; here they run on Celery workers, with storage
every process shares. Start Redis, then a worker and the example, with the same settings::

    export PYWORKFLOW_CELERY_BROKER=redis://127.0.0.1:6379/0
    export PYWORKFLOW_STORAGE_TYPE=sqlite PYWORKFLOW_STORAGE_PATH=/tmp/pyworkflow.db
    pyworkflow --module examples.celery.child_workflows worker run &
    python examples/celery/child_workflows.py
"""

from __future__ import annotations

import asyncio

from examples.local.child_workflows import (
    book_courier,
    charge_card,
    order,
    payment,
    shipping,
)
from examples.local.child_workflows import (
    main as run_example,
)
from pyworkflow import configure


async def main() -> None:
    configure(default_runtime="celery")  # start() hands runs to the workers
    await run_example()


__all__ = ["book_courier", "charge_card", "order", "payment", "shipping"]

if __name__ == "__main__":
    asyncio.run(main())
