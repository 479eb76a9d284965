"""Schedules on Celery workers: the counterpart of ``examples/local/schedules.py``.

The workflows are the local example's; here every worker serves the schedules from its engine
service (no beat process: each slot is claimed through storage, so any number of workers fire
it once). Start Redis, then a worker and the example, with the same settings::

    export PYWORKFLOW_CELERY_BROKER=redis://127.0.0.1:6379/0
    export PYWORKFLOW_STORAGE_TYPE=sqlite PYWORKFLOW_STORAGE_PATH=/tmp/pyworkflow.db
    pyworkflow --module examples.celery.schedules worker run &
    python examples/celery/schedules.py
"""

from __future__ import annotations

import asyncio

from examples.local.schedules import collect_metrics, heartbeat, metrics_report, slow_sync
from examples.local.schedules import main as run_example
from pyworkflow import configure


async def main() -> None:
    configure(default_runtime="celery")  # runs go to the workers, which serve the schedules
    await run_example(serve=False)


__all__ = ["collect_metrics", "heartbeat", "metrics_report", "slow_sync"]

if __name__ == "__main__":
    asyncio.run(main())
