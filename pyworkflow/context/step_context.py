"""Step context: read-only data a workflow hands to its steps, and the running attempt's identity.

``StepContext`` is a pydantic model users subclass for data every step of a run needs (a tenant,
a trace id). The workflow sets it with ``set_step_context``; steps read it with
``get_step_context``. Inside a step, ``get_step_info()`` names the attempt and gives a stable
``idempotency_key`` for side effects that may run more than once. Checkpoints let a long step
resume part-way after a crash. Must never import anything above the data model.
"""

from __future__ import annotations

from collections.abc import Generator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, Self

from pydantic import BaseModel, ConfigDict

from pyworkflow.model.exceptions import CancellationError
from pyworkflow.serialization import dumps, loads


class StepContext(BaseModel):
    """Base class for user step contexts. Immutable once set: steps only read it."""

    model_config = ConfigDict(frozen=True)

    def with_updates(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated as the class validates its fields (the
        context itself never changes: set the copy with ``set_step_context``)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The context as plain JSON-ready values."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """A context from ``to_dict``'s output (validated)."""
        return cls.model_validate(data)

    def check_cancellation(self) -> None:
        """Inside a step: raise ``CancellationError`` when the step's run was asked to stop
        (``cancel_workflow``), so a long step can end early. See ``StepInfo.check_cancellation``."""
        info = _current_step.get()
        if info is not None:
            info.check_cancellation()


class CheckpointStore(Protocol):
    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None: ...

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None: ...

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class StepInfo:
    """The step attempt running now. ``idempotency_key`` is the same for every attempt."""

    run_id: str
    step_id: str
    step_name: str
    attempt: int
    context: StepContext | None
    checkpoints: CheckpointStore | None
    # Other runs, as this attempt's engine sees them (``pyworkflow.context.runs.RunAccess``):
    # children started from the step, and their handles.
    runs: Any = None
    # Called inside ``shield()`` (clean-up): a cancellation request does not stop it.
    shielded: bool = False

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_id}"

    def check_cancellation(self) -> None:
        """Raise ``CancellationError`` when this step's run was asked to stop.

        Synchronous and cheap: it asks what the engine running the step knows. A request made
        in this process is known at once; one made elsewhere is seen by the worker's lease
        renewal (every ``lease_ttl / 3``) while the step runs. The step's outcome, if it returns
        anyway, is still recorded; raising here fails the attempt like any error (no retry:
        ``CancellationError`` is not retried) and the workflow gets ``CancellationError``. A step
        called inside ``shield()`` (clean-up) is never stopped this way."""
        runs = self.runs
        if runs is not None and not self.shielded and runs.cancel_requested(self.run_id):
            raise CancellationError(
                f"workflow run {self.run_id} was cancelled (step {self.step_name!r} stopped early)"
            )


_current_step: ContextVar[StepInfo | None] = ContextVar("pyworkflow_step", default=None)


class step_scope:  # noqa: N801 - used like the function it was
    """Make ``info`` the current step for the code run inside the ``with`` block.

    A class rather than a ``@contextmanager`` generator: it runs once per step attempt.
    """

    __slots__ = ("_info", "_token")

    def __init__(self, info: StepInfo) -> None:
        self._info = info

    def __enter__(self) -> StepInfo:
        self._token = _current_step.set(self._info)
        return self._info

    def __exit__(self, *exc: object) -> None:
        _current_step.reset(self._token)


def current_step_info() -> StepInfo | None:
    return _current_step.get()


def get_step_info() -> StepInfo:
    """The running step attempt; raises ``RuntimeError`` outside a step."""
    info = _current_step.get()
    if info is None:
        raise RuntimeError("get_step_info() can only be called inside a step")
    return info


def _workflow_step_context() -> tuple[bool, StepContext | None]:
    # Imported here: the workflow context module imports this one.
    from pyworkflow.context import current_workflow

    ctx = current_workflow()
    if ctx is None:
        return False, None
    return True, ctx.get_step_context()


def get_step_context() -> StepContext:
    """The step context set by the workflow. Raises ``RuntimeError`` when none was set."""
    info = _current_step.get()
    if info is not None:
        if info.context is None:
            raise RuntimeError("no step context was set by the workflow (set_step_context)")
        return info.context
    in_wf, value = _workflow_step_context()
    if not in_wf:
        raise RuntimeError("get_step_context() can only be called inside a workflow or a step")
    if value is None:
        raise RuntimeError("no step context was set (call set_step_context first)")
    return value


def has_step_context() -> bool:
    info = _current_step.get()
    if info is not None:
        return info.context is not None
    return _workflow_step_context()[1] is not None


class _Applied:
    """What ``set_step_context`` returns: the context is already set, and awaiting this (as
    code written for pyworkflow-engine 0.4, where the function was a coroutine, does) is a
    no-op."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


def set_step_context(ctx: StepContext | None) -> _Applied:
    """Set the step context for the steps the workflow calls from now on (workflow code only).

    Takes effect at once; ``await set_step_context(ctx)`` works too."""
    if _current_step.get() is not None:
        raise RuntimeError("the step context is read-only inside a step")
    if ctx is not None and not isinstance(ctx, StepContext):
        raise TypeError(f"set_step_context expects a StepContext, got {type(ctx).__name__}")
    from pyworkflow.context import current_workflow

    wf = current_workflow()
    if wf is None:
        raise RuntimeError("set_step_context() can only be called inside a workflow")
    wf.set_step_context(ctx)
    return _Applied()


def _checkpoint_target() -> tuple[StepInfo, CheckpointStore]:
    info = get_step_info()
    if info.checkpoints is None:
        raise RuntimeError("this step runs without durable storage: checkpoints are unavailable")
    return info, info.checkpoints


async def save_step_checkpoint(data: Any) -> None:
    """Durably save progress of the running step; a retry or a recovery can load it."""
    info, store = _checkpoint_target()
    await store.put_checkpoint(info.run_id, info.step_id, dumps(data, what="step checkpoint"))


async def load_step_checkpoint() -> Any:
    """The last checkpoint the running step saved (in any attempt), or None."""
    info, store = _checkpoint_target()
    raw = await store.get_checkpoint(info.run_id, info.step_id)
    return None if raw is None else loads(raw)


async def delete_step_checkpoint() -> None:
    info, store = _checkpoint_target()
    await store.delete_checkpoint(info.run_id, info.step_id)


__all__ = [
    "CheckpointStore",
    "StepContext",
    "StepInfo",
    "current_step_info",
    "delete_step_checkpoint",
    "get_step_context",
    "get_step_info",
    "has_step_context",
    "load_step_checkpoint",
    "save_step_checkpoint",
    "set_step_context",
    "step_scope",
]
