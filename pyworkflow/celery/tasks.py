"""The Celery tasks of the celery runtime: activate a run, run a step attempt, fire timers, sweep.

Each task body runs one coroutine on the worker process's persistent event loop
(``WorkerProcess.run``) and is safe to run twice — that is what redelivery means:

- ``pyworkflow.activate(run_id)`` — ``Engine.advance``: replay, continue, commit conditionally.
  A duplicate activation finds nothing new to do.
- ``pyworkflow.execute_step(run_id, step_id, attempt)`` — ``Engine.execute_step``: run the attempt
  unless its outcome is already recorded; at most one outcome per attempt is ever recorded. The
  run's lease is renewed while the attempt runs, and the worker then continues the run itself
  (see ``queue.py``).
- ``pyworkflow.fire_timers()`` / ``pyworkflow.sweep()`` — what every worker's
  ``EngineService`` (``pyworkflow.runtime.service``) does anyway, for deployments that also
  drive them from ``celery beat``.

A task that fails is logged and acknowledged, never retried through a broker countdown: the run
it was for is woken by its timer row or recovered by the sweeper when its lease runs out. A task
refused or cancelled because the worker is shutting down raises ``Reject(requeue=True)``: its
message goes back to the broker at once.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import Reject
from loguru import logger

from pyworkflow.celery.app import (
    ACTIVATE_TASK,
    FIRE_TIMERS_TASK,
    STEP_TASK,
    SWEEP_TASK,
    celery_app,
)
from pyworkflow.celery.process import HandedBack, Work, WorkerProcess
from pyworkflow.engine.blocking import blocked_kind
from pyworkflow.model.exceptions import WorkflowNotFoundError
from pyworkflow.model.schemas import BlockedKind

_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}


def run_work(work: Work[Any], what: str, run_id: str | None = None) -> Any:
    """Run ``work`` on this process's loop; requeue on shutdown, log (and ack) on failure."""
    try:
        return WorkerProcess.current().run(work)
    except HandedBack:
        raise Reject(f"{what}: handed back, the worker is shutting down", requeue=True) from None
    except WorkflowNotFoundError as exc:
        logger.bind(run_id=run_id).error("{} skipped: {}", what, exc)
    except Exception as exc:  # noqa: BLE001 - the timer row or the sweeper brings the run back
        if blocked_kind(exc) not in (None, BlockedKind.ENGINE_ERROR):
            # An activation's failure is recorded on the run (``runs status`` shows it); a step
            # task's is not, and its run is blocked by the activation the sweeper gives it once
            # the step's lease runs out. The message says it all: no traceback every retry.
            logger.bind(run_id=run_id).error("{} failed: {}: {}", what, type(exc).__name__, exc)
            return None
        logger.bind(run_id=run_id).opt(exception=exc).error(
            "{} failed ({}: {}); the run is resumed by its timer or the sweeper",
            what,
            type(exc).__name__,
            exc,
        )
    return None


async def _activate(process: WorkerProcess, run_id: str) -> None:
    await process.engine.advance(run_id)


async def _execute_step(process: WorkerProcess, run_id: str, step_id: str, attempt: int) -> None:
    engine = process.engine  # counts the attempt in ``engine.executing``: the lease is renewed
    with process.runtime.queue.continuation(run_id) as then:
        await engine.execute_step(run_id, step_id, attempt)
    if then.requested:
        await engine.advance(run_id)


async def _fire_timers(process: WorkerProcess) -> int:
    service = process.service
    if service is not None:
        return await service.fire_due()
    fired = 0
    while batch := await process.engine.fire_due_timers():
        fired += len(batch)
    return fired


async def _sweep(process: WorkerProcess) -> list[str]:
    return await process.engine.recover_expired(until_done=True)


@celery_app.task(name=ACTIVATE_TASK, **_TASK_OPTIONS)
def activate(run_id: str) -> None:
    """Advance ``run_id`` once (an activation)."""
    run_work(lambda process: _activate(process, run_id), f"activation of {run_id}", run_id)


@celery_app.task(name=STEP_TASK, **_TASK_OPTIONS)
def execute_step(run_id: str, step_id: str, attempt: int) -> None:
    """Run attempt ``attempt`` of step command ``step_id`` of ``run_id`` and record its outcome."""
    run_work(
        lambda process: _execute_step(process, run_id, step_id, int(attempt)),
        f"step {step_id} attempt {attempt} of {run_id}",
        run_id,
    )


@celery_app.task(name=FIRE_TIMERS_TASK, **_TASK_OPTIONS)
def fire_timers() -> None:
    """Claim due timers and enqueue their activations."""
    run_work(_fire_timers, "firing due timers")


@celery_app.task(name=SWEEP_TASK, **_TASK_OPTIONS)
def sweep() -> None:
    """Recover runs whose lease expired."""
    run_work(_sweep, "sweeping expired leases")


__all__ = ["activate", "execute_step", "fire_timers", "run_work", "sweep"]
