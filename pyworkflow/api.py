"""The public functions that start, advance and inspect runs.

They resolve *where* (storage: the argument, else the configured one; non-durable runs use a
process-local in-memory store) and *who* (the runtime: the argument, else the configured one),
then talk only to the ``Runtime`` port and the ``StorageBackend`` port.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyworkflow.config import get_config, get_storage, runtime_name
from pyworkflow.context.runs import register_run_access
from pyworkflow.core.lifecycle import register_cancel
from pyworkflow.core.registry import list_workflows, workflow_definition_of
from pyworkflow.engine.attempts import final_outcome
from pyworkflow.engine.blocking import blocked_error
from pyworkflow.engine.outcome import Outcome, outcome_of
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    ChildWorkflowError,
    HookNotFoundError,
    InvalidTokenError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from pyworkflow.model.schemas import BlockedKind, Hook, RunStatus, WorkflowRun
from pyworkflow.runtime.base import Runtime
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.runtime.registry import runtime_factory
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend

_runtimes: dict[str, Runtime] = {}
_transient: InMemoryStorageBackend | None = None


@dataclass(frozen=True, slots=True)
class ResumeResult:
    run_id: str
    hook_id: str
    status: str


# Non-durable runs live in this process's memory; the most recently ended of them are kept (for
# get_workflow_result and friends), older ones forgotten, so memory does not only grow.
TRANSIENT_KEEP_FINISHED = 1_000


def _transient_storage() -> InMemoryStorageBackend:
    global _transient
    if _transient is None:
        _transient = InMemoryStorageBackend(keep_finished=TRANSIENT_KEEP_FINISHED)
    return _transient


def get_runtime(runtime: str | Runtime | None = None) -> Runtime:
    """The runtime named (``"local"``, ``"celery"``), given, or configured."""
    if isinstance(runtime, Runtime):
        return runtime
    name = runtime or runtime_name()
    existing = _runtimes.get(name)
    if existing is not None:
        return existing
    config = get_config()
    if name == "local":
        made: Runtime = LocalRuntime(
            dispatch_steps=config.dispatch_steps,
            poll_interval=config.timer_poll_interval,
            lease_ttl=config.lease_ttl,
            event_limit=config.event_limit,
            max_nesting_depth=config.max_nesting_depth,
            logical_order=config.logical_order,
            inline_children=config.inline_children,
        )
    else:
        made = runtime_factory(name)()  # registered by its package (runtime/registry.py)
    _runtimes[name] = made
    return made


def set_runtime(name: str, runtime: Runtime | None) -> None:
    """Install (or with None, forget) the runtime used for ``name`` (tests, embedding)."""
    if runtime is None:
        _runtimes.pop(name, None)
    else:
        _runtimes[name] = runtime


def _storage_for(storage: StorageBackend | None) -> StorageBackend:
    return storage if storage is not None else get_storage()


async def _find_run(run_id: str, storage: StorageBackend | None) -> tuple[WorkflowRun, Any]:
    store = _storage_for(storage)
    run = await store.get_run(run_id)
    if run is None and storage is None and _transient is not None:
        run = await _transient.get_run(run_id)
        store = _transient
    if run is None:
        raise WorkflowNotFoundError(f"no workflow run with id {run_id!r}")
    return run, store


async def start(
    workflow_func: Any,
    *args: Any,
    runtime: str | Runtime | None = None,
    durable: bool | None = None,
    storage: StorageBackend | None = None,
    idempotency_key: str | None = None,
    **kwargs: Any,
) -> str:
    """Start a run of ``workflow_func``; returns its run id.

    On the local runtime the workflow runs in this process until it finishes or blocks; if it
    raises, ``start`` re-raises after the run is recorded as failed (the error names the run:
    its ``run_id`` attribute, and a note). The same ``idempotency_key`` always gives the same
    run id.
    """
    definition = workflow_definition_of(workflow_func)
    if durable is None:
        durable = definition.durable if definition.durable is not None else None
    if durable is None:
        durable = get_config().default_durable
    store = storage if storage is not None else (get_storage() if durable else None)
    if store is None:
        store = _transient_storage()
    chosen = get_runtime(runtime)
    run_id, outcome = await chosen.start(
        definition, args, kwargs, storage=store, idempotency_key=idempotency_key
    )
    if not durable and outcome is not None:
        outcome = await _retry_inline(run_id, store, chosen, outcome)
    if outcome is not None and outcome.status is RunStatus.FAILED:
        try:
            outcome.value()  # raises the run's error
        except Exception as exc:
            _name_the_run(exc, run_id)
            raise
    return run_id


def _name_the_run(exc: Exception, run_id: str) -> None:
    """Say which run the error ``start`` re-raises ended: a note in its traceback, and its
    ``run_id`` attribute unless it has one of its own (one an inner ``start`` set, whose note
    names it, is replaced). An error that takes neither (``__slots__``, a frozen dataclass)
    is raised as it is."""
    previous = getattr(exc, "run_id", None)
    notes = getattr(exc, "__notes__", None) or []
    ours = previous is not None and any(
        isinstance(note, str) and note.startswith(f"(pyworkflow run {previous} ") for note in notes
    )
    with contextlib.suppress(AttributeError, TypeError):
        exc.add_note(f"(pyworkflow run {run_id} failed with this error; it is recorded as failed)")
    if previous is None or ours:
        with contextlib.suppress(AttributeError, TypeError):
            exc.run_id = run_id  # type: ignore[attr-defined]


async def _retry_inline(
    run_id: str, store: StorageBackend, runtime: Runtime, outcome: Outcome
) -> Outcome:
    """A transient run (``durable=False``) runs its step retries inside ``start``, as 0.4 did:
    while it waits for nothing but a retry, wait for it here and advance the run again."""
    head = -1
    while not outcome.status.is_terminal:
        events = await store.get_events(run_id)
        due = _next_retry(events)
        if due is None or (events and events[-1].sequence == head):
            # It waits on something else (a sleep, a hook), or the retry it left pending is no
            # longer awaited (a wait_for gave up on the step): the last resume changed nothing.
            return outcome
        head = events[-1].sequence if events else 0
        delay = (due - runtime.engine_for(store).clock.now()).total_seconds()
        await asyncio.sleep(max(delay, 0.0))  # (always yields: other tasks go on meanwhile)
        outcome = await runtime.resume(run_id, storage=store)
    return outcome


def _next_retry(events: list[Event]) -> datetime | None:
    """When the earliest step retry the log leaves pending is due (None: no retry pending)."""
    pending: dict[str, datetime] = {}
    for event in events:
        kind = event.type
        if kind is EventType.STEP_RETRYING:
            pending[event.data["command_id"]] = datetime.fromisoformat(event.data["resume_at"])
        elif kind is EventType.STEP_STARTED or final_outcome(event):
            pending.pop(event.data.get("command_id", ""), None)
    return min(pending.values(), default=None)


async def resume(
    run_id: str, runtime: str | Runtime | None = None, storage: StorageBackend | None = None
) -> Any:
    """Advance ``run_id`` now. Returns its result if it finished; re-raises if it failed.

    Idempotent: completed steps are never run again, and a finished run is only reported.
    """
    _, store = await _find_run(run_id, storage)
    return (await get_runtime(runtime).resume(run_id, storage=store)).value()


async def get_workflow_run(
    run_id: str, storage: StorageBackend | None = None
) -> WorkflowRun | None:
    store = _storage_for(storage)
    run = await store.get_run(run_id)
    if run is None and storage is None and _transient is not None:
        run = await _transient.get_run(run_id)
    return run


async def get_workflow_run_by_idempotency_key(
    key: str, storage: StorageBackend | None = None
) -> WorkflowRun | None:
    return await _storage_for(storage).get_run_by_idempotency_key(key)


async def get_workflow_events(run_id: str, storage: StorageBackend | None = None) -> list[Event]:
    _, store = await _find_run(run_id, storage)
    events: list[Event] = await store.get_events(run_id)
    return events


async def get_workflow_chain(
    run_id: str, storage: StorageBackend | None = None
) -> list[WorkflowRun]:
    """The run and the runs it continued from / into (``continue_as_new``), oldest first."""
    run, store = await _find_run(run_id, storage)
    chain = [run]
    while chain[0].continued_from_run_id:
        previous = await store.get_run(chain[0].continued_from_run_id)
        if previous is None:
            break
        chain.insert(0, previous)
    while chain[-1].continued_to_run_id:
        following = await store.get_run(chain[-1].continued_to_run_id)
        if following is None:
            break
        chain.append(following)
    return chain


async def get_workflow_result(
    run_id: str, timeout: float | None = None, storage: StorageBackend | None = None
) -> Any:
    """Wait for ``run_id`` to finish; return its result or raise the workflow's error.

    A run that continued as new (``continue_as_new``) answers for its chain: the result is the
    last run's. Raises ``WorkflowTimeoutError`` when ``timeout`` seconds pass first. While
    waiting, this process serves the run's timers (on the local runtime), so sleeping runs
    progress.
    """
    run, store = await _find_run(run_id, storage)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        left = None if deadline is None else max(deadline - loop.time(), 0.0)
        run = await _until_finished(run, store, left)
        if run.status is not RunStatus.CONTINUED_AS_NEW or run.continued_to_run_id is None:
            return await _result_of(run, store)
        # The run continued as new: its result is its chain's (what Temporal users expect).
        following = await store.get_run(run.continued_to_run_id)
        if following is None:
            raise WorkflowNotFoundError(
                f"run {run.run_id} continued as {run.continued_to_run_id!r}, which is not stored"
            )
        run = following


async def _until_finished(
    run: WorkflowRun, store: StorageBackend, timeout: float | None, runtime: Runtime | None = None
) -> WorkflowRun:
    """Wait for ``run`` to reach a terminal status (``WorkflowTimeoutError`` after ``timeout``)."""
    run_id = run.run_id
    runtime = runtime or get_runtime()
    await runtime.ensure_running(store)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    poll = 0.02
    engine = runtime.engine_for(store)
    # Woken at once when this process finishes the run; polled for when another one does.
    waiter = engine.finished_waiter(run_id)
    try:
        while not run.status.is_terminal:
            _raise_if_blocked(run, runtime)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise WorkflowTimeoutError(
                    f"run {run_id} did not finish within {timeout}s (status: {run.status.value})"
                )
            wait = poll if remaining is None else min(poll, remaining)
            await asyncio.wait({waiter}, timeout=wait)
            poll = min(poll * 2, 0.5)
            fresh = await store.get_run(run_id)
            assert fresh is not None
            run = fresh
    finally:
        engine.forget_waiter(run_id, waiter)
    return run


def _raise_if_blocked(run: WorkflowRun, runtime: Runtime) -> None:
    """A blocked run (``engine.blocking``) will not finish until its code is fixed: its error,
    now, rather than a timeout later. (A run of a workflow another local process lacked is not
    blocked for this one, which has it: its timer brings the run here.)"""
    blocked = run.blocked
    if blocked is None:
        return
    if (
        blocked.kind is BlockedKind.WORKFLOW_NOT_FOUND
        and isinstance(runtime, LocalRuntime)
        and run.workflow_name in list_workflows()
    ):
        return
    raise blocked_error(run.run_id, blocked)


async def cancel_workflow(
    run_id: str,
    reason: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    storage: StorageBackend | None = None,
    runtime: str | Runtime | None = None,
) -> bool:
    """Ask ``run_id`` to stop: a durable ``cancellation.requested`` in its log, then a wake-up.

    True when the request was recorded, False when the run had already finished (a second
    request is harmless). The workflow gets ``CancellationError`` at the durable call it waits
    on (a step already running finishes first); ``shield()`` defers it. With ``wait``, returns
    once the run is terminal (``WorkflowTimeoutError`` after ``timeout`` seconds). Unknown run:
    ``WorkflowNotFoundError``.
    """
    run, store = await _find_run(run_id, storage)
    chosen = get_runtime(runtime)
    await chosen.ensure_running(store)
    recorded = await chosen.engine_for(store).request_cancellation(run.run_id, reason)
    if wait:
        await _until_finished(run, store, timeout, chosen)
    return recorded


async def _result_of(run: WorkflowRun, store: StorageBackend) -> Any:
    return (await outcome_of(store, run)).value()


async def resume_hook(
    token: str, payload: Any, *, storage: StorageBackend | None = None
) -> ResumeResult:
    """Deliver ``payload`` to the hook named by ``token`` and wake its run.

    The payload is validated against the hook's schema before anything is recorded. Raises
    ``InvalidTokenError``, ``HookNotFoundError``, ``HookExpiredError``,
    ``HookAlreadyReceivedError`` (also when two arrive at once) or ``HookPayloadError``.
    """
    store = _storage_for(storage)
    runtime = get_runtime()
    await runtime.ensure_running(store)
    run_id, hook_id = await runtime.engine_for(store).receive_hook(token, payload)
    return ResumeResult(run_id=run_id, hook_id=hook_id, status="received")


async def get_hook_token(
    run_id: str, hook_id: str, *, storage: StorageBackend | None = None
) -> str:
    """The token that answers hook ``hook_id`` of run ``run_id``, for whoever holds storage and
    the deployment's hook key (operators, tools). Storage keeps only the token's digest; the
    token is derived again from the key. Raises ``HookNotFoundError``, or ``InvalidTokenError``
    when this process's hook key is not the one that created the hook."""
    store = _storage_for(storage)
    hook = await store.get_hook(run_id, hook_id)
    if hook is None:
        raise HookNotFoundError(f"no hook {hook_id!r} in run {run_id!r}")
    await reveal_tokens([hook], store)
    if hook.token is None:
        raise InvalidTokenError(
            f"the hook key of this process did not create hook {hook_id!r} of run {run_id!r}:"
            " configure the deployment's hook_key (PYWORKFLOW_HOOK_KEY)"
        )
    return hook.token


async def reveal_tokens(hooks: list[Hook], storage: StorageBackend) -> list[Hook]:
    """Fill in ``token`` of each of ``hooks`` (read from ``storage``) this process can derive;
    the others keep ``token=None``."""
    if hooks:
        engine = get_runtime().engine_for(storage)
        for hook in hooks:
            hook.token = await engine.token_of(hook)
    return hooks


class _DefaultRuns:
    """``RunAccess`` over the configured storage: what a ``ChildWorkflowHandle`` used in
    application code (not in its parent workflow, not in a step) reads and cancels through."""

    async def start_child(
        self, parent: Any, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, str]:
        del parent, args, kwargs
        raise ChildWorkflowError(
            f"start_child_workflow({definition.name!r}) outside a workflow or a step"
        )

    async def run_status(self, run_id: str) -> str:
        chain = await get_workflow_chain(run_id)
        return chain[-1].status.value

    async def run_result(self, run_id: str, timeout: float | None) -> Any:
        return await get_workflow_result(run_id, timeout=timeout)

    async def cancel_run(self, run_id: str, reason: str | None) -> bool:
        chain = await get_workflow_chain(run_id)
        return await cancel_workflow(chain[-1].run_id, reason)

    def cancel_requested(self, run_id: str) -> bool:
        del run_id
        return False  # only an engine running a step knows (StepInfo.runs)


register_cancel(cancel_workflow)  # pyworkflow.core.cancel_workflow (the 0.4 path)
register_run_access(_DefaultRuns())  # ChildWorkflowHandle outside its parent and steps

__all__ = [
    "ResumeResult",
    "get_hook_token",
    "get_runtime",
    "cancel_workflow",
    "get_workflow_chain",
    "get_workflow_events",
    "get_workflow_result",
    "get_workflow_run",
    "get_workflow_run_by_idempotency_key",
    "reveal_tokens",
    "resume",
    "resume_hook",
    "set_runtime",
    "start",
]
