"""Step attempts: run a step body once and turn what happened into its outcome event.

``run_attempt`` is shared by inline steps (an activation runs the body) and dispatched ones
(``execute_step``, a worker's task, which records the outcome itself and wakes the run). The
outcome is ``step.completed``, ``step.retrying`` (the retry policy wants another attempt, at
``resume_at``) or ``step.failed``. A step body may run more than once (at-least-once execution);
an outcome is recorded at most once (storage refuses a second completion). An inline attempt an
activation ran, or is running, when it lost a commit race is carried to its next try
(``carry_inline_work``), never run again. This module never decides what the workflow does
next: that is the activation's business.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

from loguru import logger

from pyworkflow.context import StepInfo, step_scope
from pyworkflow.core.registry import StepDefinition, get_step
from pyworkflow.engine.options import EngineOptions
from pyworkflow.engine.ports import Clock, TaskQueue
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    DuplicateCompletionError,
    FatalError,
    RunFinishedError,
    SerializationError,
    StepTimeoutError,
)
from pyworkflow.model.schemas import Commit
from pyworkflow.serialization import (
    deserialize_args,
    dumps,
    error_fields,
    error_type_name,
    loads,
)
from pyworkflow.storage.base import StorageBackend

if TYPE_CHECKING:
    from pyworkflow.engine.activation import _Activation


async def invoke_body(
    definition: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], info: StepInfo
) -> Any:
    """The default ``StepInvoker``: run the body (validated arguments, ``timeout`` enforced)."""
    del info
    if definition.timeout is None:
        return await definition.invoke(args, kwargs)
    return await _with_timeout(definition, args, kwargs)


async def _with_timeout(
    definition: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    assert definition.timeout is not None
    seconds = definition.timeout.total_seconds()
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await definition.invoke(args, kwargs)
    except TimeoutError:
        if scope.expired():
            raise StepTimeoutError(f"step {definition.name!r} timed out after {seconds}s") from None
        raise


class StepAttempts:
    """The step-attempt part of ``Engine`` (a mixin: the engine provides the attributes)."""

    storage: StorageBackend
    clock: Clock
    queue: TaskQueue
    options: EngineOptions
    executing: Counter[str]  # run id -> its step attempts running in this process
    step_children: dict[int, int]  # id of a StepInfo -> children its attempt started
    cancel_watch: dict[str, int]  # see cancellation.Cancellations

    async def run_attempt(
        self,
        run_id: str,
        command_id: str,
        definition: StepDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempt: int,
        step_context: Any,
        shielded: bool = False,
    ) -> Event:
        """Run one attempt of a step body; return its outcome event (completed/retrying/failed).
        ``shielded``: the workflow called it inside ``shield()``."""
        info = StepInfo(
            run_id, command_id, definition.name, attempt, step_context, self.storage, self, shielded
        )
        base = {"command_id": command_id, "step_name": definition.name, "attempt": attempt}
        invoke = self.options.invoke_step or invoke_body
        started_children = 0
        with step_scope(info):
            try:
                result = await invoke(definition, args, kwargs, info)
                result_json = dumps(result, what=f"the result of step {definition.name!r}")
            except Exception as exc:  # noqa: BLE001 - every step failure is recorded
                outcome = self._failure_event(run_id, definition, base, exc, attempt)
            else:
                base["result"] = result_json
                outcome = Event(
                    run_id=run_id,
                    type=EventType.STEP_COMPLETED,
                    data=base,
                    timestamp=self.clock.now(),
                )
            finally:
                if self.step_children:  # (an attempt cancelled midway is forgotten too)
                    started_children = self.step_children.pop(id(info), 0)
        if started_children:
            # Named in the outcome, the run's log knows them (lineage: they are not cancelled
            # with it, see ``children``).
            prefix = f"{run_id}.{command_id.replace(':', '-')}"
            outcome.data["children"] = [f"{prefix}.{n}" for n in range(1, started_children + 1)]
        return outcome

    def _failure_event(
        self,
        run_id: str,
        definition: StepDefinition,
        base: dict[str, Any],
        exc: Exception,
        attempt: int,
    ) -> Event:
        now = self.clock.now()
        delay = (
            None if isinstance(exc, SerializationError) else definition.retry.decide(exc, attempt)
        )
        message = str(exc) or type(exc).__name__
        if delay is not None:
            logger.bind(run_id=run_id, step_id=base["command_id"]).info(
                "step {} attempt {} failed ({}); retrying in {}s",
                definition.name,
                attempt,
                message,
                delay.total_seconds(),
            )
            return Event(
                run_id=run_id,
                type=EventType.STEP_RETRYING,
                data={
                    **base,
                    "error": message,
                    "error_type": error_type_name(exc),
                    "resume_at": (now + delay).isoformat(),
                },
                timestamp=now,
            )
        return Event(
            run_id=run_id,
            type=EventType.STEP_FAILED,
            data={**base, **error_fields(exc), "fatal": isinstance(exc, FatalError)},
            timestamp=now,
        )

    async def execute_step(self, run_id: str, step_id: str, attempt: int) -> None:
        """Run a dispatched step attempt (a worker's task) and record its outcome once."""
        self.executing[run_id] += 1
        try:
            await self._execute_step(run_id, step_id, attempt)
        finally:
            self.executing[run_id] -= 1
            if self.executing[run_id] <= 0:
                del self.executing[run_id]
                self.cancel_watch.pop(run_id, None)

    async def _execute_step(self, run_id: str, step_id: str, attempt: int) -> None:
        events = await self.storage.get_events(run_id, command_id=step_id)
        started = None
        for event in events:
            if event.type is EventType.STEP_STARTED and event.data.get("attempt") == attempt:
                started = event
            elif event.type in (EventType.STEP_COMPLETED, EventType.STEP_FAILED) or (
                event.type is EventType.STEP_RETRYING and event.data.get("attempt") == attempt
            ):
                return  # already recorded: a duplicate delivery
        if started is None:
            logger.warning(
                "step {} attempt {} of run {} was never started", step_id, attempt, run_id
            )
            return
        data = started.data
        # Until the attempt ends, lease renewals look for a cancellation request in the log.
        watched = self.cancel_watch.get(run_id)
        self.cancel_watch[run_id] = (
            started.sequence if watched is None else min(watched, started.sequence)
        )
        definition = get_step(data["step_name"])
        args, kwargs = deserialize_args(data["args"], data["kwargs"])
        context = loads(data["step_context"]) if "step_context" in data else None
        outcome = await self.run_attempt(
            run_id, step_id, definition, args, kwargs, attempt, context, bool(data.get("shielded"))
        )
        try:
            now = self.clock.now()
            # timer=now: should the enqueue below be lost, the timer service still wakes the run.
            # recovery_attempts=0: a recorded result is progress (see recovery.progress_made).
            await self.storage.commit(
                Commit(run_id=run_id, events=[outcome], now=now, timer=now, recovery_attempts=0)
            )
        except (DuplicateCompletionError, RunFinishedError):
            return  # recorded already, or the run ended without needing this result
        await self.queue.enqueue_activation(run_id)


def carry_inline_work(act: _Activation) -> None:
    """The activation lost a commit race: keep what its inline attempts did for the next try.

    The lease made it the only activation running the run's inline steps, so an attempt it ran
    (its outcome still in the uncommitted buffer) or is running must not run again: the next try
    records that outcome, or waits for that task, when its replay reaches the same attempt.
    """
    buffer = act.inst.buffer
    for started, outcome in zip(buffer, buffer[1:], strict=False):
        if started.type is not EventType.STEP_STARTED or started.data.get("dispatched"):
            continue
        key = (started.data["command_id"], started.data["attempt"])
        if (outcome.data.get("command_id"), outcome.data.get("attempt")) == key:
            act.carried[key] = [_unplaced(started), _unplaced(outcome)]
    for position, task in act.running.items():
        cmd = act.inst.commands[position - 1]
        act.carried[(cmd.command_id, act.attempts[position])] = task
    act.running = {}


def _unplaced(event: Event) -> Event:
    """A copy of ``event`` without the sequence a refused commit gave it."""
    return Event(event.run_id, event.type, event.data, timestamp=event.timestamp)


__all__ = ["StepAttempts", "carry_inline_work", "invoke_body"]
