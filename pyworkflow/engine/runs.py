"""A run's beginning and end as the outside world sees them: ``start_run`` records a new run,
and callers wait on a run's ``Outcome`` (``finished_waiter``).

``start_run`` writes the run and its ``workflow.started`` in one call and runs nothing. The
waiters are resolved by the activation that finishes a run in this process; a run that finishes
elsewhere is the caller's to poll (``pyworkflow.api.get_workflow_result`` does both).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from pyworkflow.core.registry import WorkflowDefinition
from pyworkflow.engine.instance import LOGICAL_ORDER, MAX_NESTING_DEPTH, WorkflowInstance
from pyworkflow.engine.leases import STARTING
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.outcome import Outcome, outcome_of
from pyworkflow.engine.ports import Clock, IdSource
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.names import checked_name
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.observability.logging import lifecycle
from pyworkflow.serialization import serialize_args
from pyworkflow.storage.base import RESERVED_RUN_PREFIX, StorageBackend


def build_run(
    definition: WorkflowDefinition,
    run_id: str,
    args_json: str,
    kwargs_json: str,
    now: datetime,
    options: EngineOptions,
    *,
    lease_owner: str = STARTING,
    **links: Any,
) -> tuple[WorkflowRun, Event]:
    """A new run's record and its ``workflow.started``: for ``start_run``, for a child, for the
    next run of a chain (``links``: ``parent_run_id``, ``nesting_depth``, ``context``,
    ``continued_from_run_id``, ``idempotency_key``). Leased to ``lease_owner`` for ``lease_ttl``:
    the ``STARTING`` reservation lets any worker's activation take it, and the sweeper recovers
    it should nobody come."""
    run = WorkflowRun(
        run_id=run_id,
        workflow_name=definition.name,
        status=RunStatus.RUNNING,
        created_at=now,
        updated_at=now,
        started_at=now,
        input_args=args_json,
        input_kwargs=kwargs_json,
        max_duration=(
            None
            if definition.max_duration is None
            else f"{definition.max_duration.total_seconds()}s"
        ),
        recover_on_worker_loss=definition.recover_on_worker_loss is not False,
        max_recovery_attempts=(
            options.default_max_recovery_attempts
            if definition.max_recovery_attempts is None
            else definition.max_recovery_attempts
        ),
        lease_owner=lease_owner,
        lease_expires_at=now + options.lease_ttl,
        **links,
    )
    data: dict[str, Any] = {
        "workflow_name": definition.name,
        "args": args_json,
        "kwargs": kwargs_json,
    }
    if options.logical_order:
        data[LOGICAL_ORDER] = True  # (its resolutions apply in logical time: ``fires_first``)
    # What the code may do depends on these (how deep it is, how deep children may go): replay
    # must know them too.
    if run.nesting_depth:
        data["nesting_depth"] = run.nesting_depth
    if options.max_nesting_depth != MAX_NESTING_DEPTH:
        data["max_nesting_depth"] = options.max_nesting_depth
    started = Event(run_id=run_id, type=EventType.WORKFLOW_STARTED, data=data, timestamp=now)
    return run, started


class RunLifecycle:
    """The start-and-finish part of ``Engine`` (a mixin: the engine provides the attributes)."""

    storage: StorageBackend
    clock: Clock
    ids: IdSource
    options: EngineOptions
    _finished: dict[str, list[asyncio.Future[Outcome]]]

    async def start_run(
        self,
        definition: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        run_id: str | None = None,
        activate_here: bool = False,
        context: dict[str, Any] | None = None,
    ) -> tuple[WorkflowRun, bool]:
        """Record a new run and its ``workflow.started`` atomically; nothing runs yet.

        Returns the run and whether it was created (False: ``idempotency_key`` named one).
        ``activate_here``: this engine runs the first activation at once (``advance`` with
        ``new_run``), so the run starts leased to it; otherwise the lease is a reservation any
        worker's activation takes over (and the sweeper recovers, should nobody come).
        ``context``: the run's ``context`` (a scheduled run's schedule and slot).
        """
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"workflow {definition.name!r}: {exc}") from None
        if idempotency_key is not None:
            checked_name("an idempotency key", idempotency_key, control=True)
        if run_id is not None:
            checked_name("a run id", run_id)
            if run_id.startswith(RESERVED_RUN_PREFIX):
                raise ValueError(
                    f"run id {run_id!r}: ids starting with {RESERVED_RUN_PREFIX!r} are reserved"
                )
        args_json, kwargs_json = serialize_args(args, kwargs)
        now = self.clock.now()
        run_id = run_id or self.ids.new_run_id()
        run, started = build_run(
            definition,
            run_id,
            args_json,
            kwargs_json,
            now,
            self.options,
            lease_owner=self.options.owner if activate_here else STARTING,
            idempotency_key=idempotency_key,
            context=dict(context or {}),
        )
        stored, created = await self.storage.create_run(run, [started])
        if created:
            lifecycle("run {} started", run_id, run_id=run_id, workflow=definition.name)
        return stored, created

    async def _outcome_of(self, run: WorkflowRun) -> Outcome:
        return await outcome_of(self.storage, run)

    async def _outcome_of_finished(self, inst: WorkflowInstance) -> Outcome:
        """Another activation finished the run while this one caught up: report its ending."""
        run = await self.storage.get_run(inst.run_id)
        assert run is not None
        return await outcome_of(self.storage, run)

    def _notify_finished(self, outcome: Outcome) -> None:
        for waiter in self._finished.pop(outcome.run_id, []):
            if not waiter.done():
                waiter.set_result(outcome)

    def finished_waiter(self, run_id: str) -> asyncio.Future[Outcome]:
        """A future resolved when an activation in this engine finishes ``run_id``.

        The run may finish elsewhere (another process): give the future back with
        ``forget_waiter`` when done waiting, or the engine keeps it.
        """
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._finished.setdefault(run_id, []).append(future)
        return future

    def forget_waiter(self, run_id: str, future: asyncio.Future[Outcome]) -> None:
        waiters = self._finished.get(run_id)
        if waiters is None:
            return
        with contextlib.suppress(ValueError):
            waiters.remove(future)
        if not waiters:
            del self._finished[run_id]


__all__ = ["RunLifecycle", "build_run"]
