"""The registry of workflow and step definitions, by name.

A process must know a workflow's code to run it; the registry maps the names recorded in logs
(``workflow.started.workflow_name``, ``step.started.step_name``) back to code. Registering a
different function under a taken name raises ``ValueError``; re-registering the same function
(a module imported twice, e.g. as ``__main__`` and by name) replaces it quietly.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ConfigDict, ValidationError, validate_call

from pyworkflow.core.retry import RetryPolicy
from pyworkflow.model.exceptions import StepValidationError, WorkflowNotFoundError
from pyworkflow.model.names import checked_name


@dataclass(slots=True)
class WorkflowDefinition:
    name: str
    func: Callable[..., Any]
    durable: bool | None = None
    max_duration: timedelta | None = None
    tags: tuple[str, ...] = ()
    recover_on_worker_loss: bool | None = None
    max_recovery_attempts: int | None = None
    # The StepContext subclass the workflow's steps get (``@workflow(context_class=...)``).
    context_class: type | None = None
    _signature: inspect.Signature | None = None

    @property
    def signature(self) -> inspect.Signature:
        """The workflow function's signature (computed once: ``start`` binds every call to it)."""
        if self._signature is None:
            self._signature = inspect.signature(self.func)
        return self._signature


@dataclass(slots=True)
class StepDefinition:
    name: str
    func: Callable[..., Any]
    retry: RetryPolicy
    timeout: timedelta | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    force_local: bool = False
    _validator: Callable[..., Any] | None = None
    _is_async: bool = True
    _exact: tuple[type | None, ...] | None = None

    def __post_init__(self) -> None:
        self._is_async = inspect.iscoroutinefunction(self.func)
        signature = inspect.signature(self.func)
        if any(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()):
            self._validator = _argument_validator(self.func, signature)
            self._exact = _exact_types(self.func, signature)

    @property
    def is_async(self) -> bool:
        """Whether the body is an ``async def`` (a plain ``def`` runs in a thread: ``invoke``)."""
        return self._is_async

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Check (and coerce) arguments against the type hints; ``StepValidationError`` if off."""
        if self._validator is None:
            return args, kwargs
        exact = self._exact
        if (
            exact is not None
            and not kwargs
            and len(args) == len(exact)
            and all(t is None or type(a) is t for a, t in zip(args, exact, strict=True))
        ):
            return args, kwargs  # already what pydantic would return: nothing to coerce
        try:
            validated: tuple[Any, Any] = self._validator(*args, **kwargs)
        except ValidationError as exc:
            raise StepValidationError(f"step {self.name!r}: invalid arguments: {exc}") from None
        except TypeError as exc:
            raise StepValidationError(f"step {self.name!r}: {exc}") from None
        return validated

    async def invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the step body once: validate the arguments, then call (sync bodies in a thread)."""
        args, kwargs = self.validate(args, kwargs)
        if not self._is_async:
            return await asyncio.to_thread(self.func, *args, **kwargs)
        try:
            coro = self.func(*args, **kwargs)
        except TypeError as exc:
            if _is_call_shape_error(exc):
                raise StepValidationError(f"step {self.name!r}: {exc}") from None
            raise
        return await coro


def _argument_validator(func: Callable[..., Any], signature: inspect.Signature) -> Any:
    """A pydantic-validated shim with ``func``'s signature that returns the bound arguments."""

    def shim(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs

    shim.__signature__ = signature  # type: ignore[attr-defined]
    shim.__module__ = func.__module__
    shim.__qualname__ = func.__qualname__
    shim.__name__ = func.__name__
    shim.__annotations__ = dict(getattr(func, "__annotations__", {}))
    return validate_call(config=ConfigDict(arbitrary_types_allowed=True))(shim)


_PLAIN_TYPES = (int, float, str, bool, bytes)


def _exact_types(
    func: Callable[..., Any], signature: inspect.Signature
) -> tuple[type | None, ...] | None:
    """Per positional parameter, the plain type its hint names (None: unannotated), when every
    hint is one of ``_PLAIN_TYPES``: arguments of exactly those types need no validation."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable hints: always validate
        return None
    exact: list[type | None] = []
    for parameter in signature.parameters.values():
        if parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            return None
        hint = hints.get(parameter.name)
        if hint is not None and hint not in _PLAIN_TYPES:
            return None
        exact.append(hint)
    return tuple(exact)


def _is_call_shape_error(exc: TypeError) -> bool:
    # A TypeError raised by the call itself (wrong number/names of arguments) has no deeper frame.
    tb = exc.__traceback__
    return tb is not None and tb.tb_next is None


_workflows: dict[str, WorkflowDefinition] = {}
_steps: dict[str, StepDefinition] = {}


def _same_code(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    if a is b:
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
        and code_a is not None
        and code_b is not None
        and code_a.co_filename == code_b.co_filename
    )


def register_workflow(definition: WorkflowDefinition) -> None:
    checked_name("a workflow name", definition.name)
    existing = _workflows.get(definition.name)
    if existing is not None and not _same_code(existing.func, definition.func):
        raise ValueError(
            f"a different function is already registered as workflow {definition.name!r}"
            f" ({existing.func.__module__}.{existing.func.__qualname__})"
        )
    _workflows[definition.name] = definition


def register_step(definition: StepDefinition) -> None:
    checked_name("a step name", definition.name)
    existing = _steps.get(definition.name)
    if existing is not None and not _same_code(existing.func, definition.func):
        raise ValueError(
            f"a different function is already registered as step {definition.name!r}"
            f" ({existing.func.__module__}.{existing.func.__qualname__})"
        )
    _steps[definition.name] = definition


def get_workflow(name: str) -> WorkflowDefinition:
    try:
        return _workflows[name]
    except KeyError:
        known = ", ".join(sorted(_workflows)) or "none"
        raise WorkflowNotFoundError(
            f"unknown workflow {name!r} (registered workflows: {known}); import the module"
            " that defines it before starting or resuming its runs"
        ) from None


def get_step(name: str) -> StepDefinition:
    try:
        return _steps[name]
    except KeyError:
        raise WorkflowNotFoundError(
            f"unknown step {name!r}; import the module that defines it in this worker"
        ) from None


def workflow_definition_of(func: Any) -> WorkflowDefinition:
    """The definition behind a decorated workflow function or a registered name."""
    if isinstance(func, str):
        return get_workflow(func)
    definition = getattr(func, "__pyworkflow_workflow__", None)
    if not isinstance(definition, WorkflowDefinition):
        name = getattr(func, "__name__", repr(func))
        raise WorkflowNotFoundError(
            f"{name} is not a workflow: decorate it with @workflow (unknown workflow {name!r})"
        )
    return definition


def list_workflows() -> dict[str, WorkflowDefinition]:
    return dict(_workflows)


def list_steps() -> dict[str, StepDefinition]:
    return dict(_steps)


def clear_registry() -> None:
    """Forget every definition (tests)."""
    _workflows.clear()
    _steps.clear()


@contextmanager
def registry_restored() -> Iterator[None]:
    """Whatever is registered inside the block is forgotten at its end (the registry is as it
    was): definitions a tool makes for its own use never show among the application's."""
    workflows, steps = dict(_workflows), dict(_steps)
    try:
        yield
    finally:
        _workflows.clear()
        _workflows.update(workflows)
        _steps.clear()
        _steps.update(steps)


__all__ = [
    "StepDefinition",
    "WorkflowDefinition",
    "clear_registry",
    "registry_restored",
    "get_step",
    "get_workflow",
    "list_steps",
    "list_workflows",
    "register_step",
    "register_workflow",
    "workflow_definition_of",
]
