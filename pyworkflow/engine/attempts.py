"""Step attempts: run a step body once and turn what happened into its outcome event.

``run_attempt`` is shared by inline steps (an activation runs the body) and dispatched ones
(``execute_step``, a worker's task, which records the outcome itself and wakes the run). The
outcome is ``step.completed``; ``step.failed`` (``retrying: true``) then ``step.retrying`` when
the retry policy wants another attempt (at ``resume_at``); or ``step.failed`` alone, the step's
final failure. Every ``step.failed`` carries ``error``, ``error_type``, ``is_retryable`` and
``attempt``, as pyworkflow-engine 0.4 wrote them. A step body may run more than once
(at-least-once execution); an outcome is recorded at most once (storage refuses a second
completion). An inline attempt an activation ran, or is running, when it lost a commit race is
carried to its next try (``carry_inline_work``), never run again. This module never decides
what the workflow does next: that is the activation's business.
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
from pyworkflow.model.events import Event, EventType, mentions
from pyworkflow.model.exceptions import (
    CancellationError,
    CorruptHistoryError,
    DuplicateCompletionError,
    FatalError,
    RunFinishedError,
    SerializationError,
    StepTimeoutError,
)
from pyworkflow.model.schemas import Commit
from pyworkflow.observability.logging import lifecycle
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


def step_inputs(started: Event, events: list[Event]) -> tuple[str, str]:
    """The arguments (JSON) of the attempt ``started`` records, among its command's ``events``:
    its own, or the first attempt's, which holds them for every later one (stored once) and
    must match what this attempt mentions (its digest)."""
    data = started.data
    if "args" in data:
        return data["args"], data["kwargs"]
    for event in events:
        if event.type is EventType.STEP_STARTED and "args" in event.data:
            args, kwargs = event.data["args"], event.data["kwargs"]
            if False in (mentions(data, "args", args), mentions(data, "kwargs", kwargs)):
                why = "the first attempt's arguments are not the ones this attempt mentions"
                break
            return args, kwargs
    else:
        why = "no attempt has them"
    raise CorruptHistoryError(started.run_id, started.sequence, started.type.value, "args", why)


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
    ) -> list[Event]:
        """Run one attempt of a step body; return its outcome events (completed, failed then
        retrying, or failed). ``shielded``: the workflow called it inside ``shield()``."""
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
                outcomes = self._failure_events(run_id, definition, base, exc, attempt)
            else:
                base["result"] = result_json
                completed = Event(
                    run_id=run_id,
                    type=EventType.STEP_COMPLETED,
                    data=base,
                    timestamp=self.clock.now(),
                )
                outcomes = [completed]
            finally:
                if self.step_children:  # (an attempt cancelled midway is forgotten too)
                    started_children = self.step_children.pop(id(info), 0)
        if started_children:
            # Named in the outcome, the run's log knows them (lineage: they are not cancelled
            # with it, see ``children``).
            prefix = f"{run_id}.{command_id.replace(':', '-')}"
            outcomes[-1].data["children"] = [
                f"{prefix}.{n}" for n in range(1, started_children + 1)
            ]
        return outcomes

    def _failure_events(
        self,
        run_id: str,
        definition: StepDefinition,
        base: dict[str, Any],
        exc: Exception,
        attempt: int,
    ) -> list[Event]:
        now = self.clock.now()
        retryable = not isinstance(exc, FatalError | SerializationError | CancellationError)
        delay = definition.retry.decide(exc, attempt) if retryable else None
        message = str(exc) or type(exc).__name__
        step_id = base["command_id"]
        if delay is not None:
            lifecycle(
                "step {} attempt {} failed ({}); retrying in {}s",
                definition.name,
                attempt,
                message,
                delay.total_seconds(),
                run_id=run_id,
                step_id=step_id,
            )
            error_type = error_type_name(exc)
            failed = {
                **base,
                "error": message,
                "error_type": error_type,
                "is_retryable": True,
                "retrying": True,
            }
            retrying = {**base, "error": message, "error_type": error_type}
            retrying["resume_at"] = (now + delay).isoformat()
            return [
                Event(run_id=run_id, type=EventType.STEP_FAILED, data=failed, timestamp=now),
                Event(run_id=run_id, type=EventType.STEP_RETRYING, data=retrying, timestamp=now),
            ]
        lifecycle(
            "step {} attempt {} failed ({}); no retry left",
            definition.name,
            attempt,
            message,
            run_id=run_id,
            step_id=step_id,
        )
        data = {
            **base,
            **error_fields(exc),
            "fatal": isinstance(exc, FatalError),
            "is_retryable": retryable,
        }
        return [Event(run_id=run_id, type=EventType.STEP_FAILED, data=data, timestamp=now)]

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
            elif event.type in _OUTCOMES and (
                event.data.get("attempt") == attempt or final_outcome(event)
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
        args, kwargs = deserialize_args(*step_inputs(started, events))
        context = loads(data["step_context"]) if "step_context" in data else None
        outcomes = await self.run_attempt(
            run_id, step_id, definition, args, kwargs, attempt, context, bool(data.get("shielded"))
        )
        try:
            now = self.clock.now()
            # timer=now: should the enqueue below be lost, the timer service still wakes the run.
            # recovery_attempts=0: a recorded result is progress (see recovery.progress_made).
            await self.storage.commit(
                Commit(run_id=run_id, events=outcomes, now=now, timer=now, recovery_attempts=0)
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
    for index, started in enumerate(buffer):
        if started.type is not EventType.STEP_STARTED or started.data.get("dispatched"):
            continue
        key = (started.data["command_id"], started.data["attempt"])
        # An attempt's outcomes follow its start at once, or later in the buffer when its start
        # was recorded up front (``Engine._pin_carried``): found by command and attempt.
        outcomes = [
            _unplaced(outcome)
            for outcome in buffer[index + 1 :]
            if outcome.type in _OUTCOMES
            and (outcome.data.get("command_id"), outcome.data.get("attempt")) == key
        ]
        if outcomes:
            act.carried[key] = [_unplaced(started), *outcomes]
    for position, task in act.running.items():
        cmd = act.inst.commands[position - 1]
        act.carried[(cmd.command_id, act.attempts[position])] = task
    act.running = {}


_OUTCOMES = frozenset({EventType.STEP_COMPLETED, EventType.STEP_FAILED, EventType.STEP_RETRYING})


def final_outcome(event: Event) -> bool:
    """Whether ``event`` ends its step (completed, or failed with no retry to follow)."""
    return event.type is EventType.STEP_COMPLETED or (
        event.type is EventType.STEP_FAILED and not event.data.get("retrying")
    )


def _unplaced(event: Event) -> Event:
    """A copy of ``event`` without the sequence a refused commit gave it."""
    return Event(event.run_id, event.type, event.data, timestamp=event.timestamp)


__all__ = ["StepAttempts", "carry_inline_work", "final_outcome", "invoke_body"]
