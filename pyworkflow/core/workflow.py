"""The ``@workflow`` decorator: registers an ``async`` function as a durable workflow.

The decorated function stays a plain ``async`` function (calling it directly just runs it, steps
included, with no durability); ``start()`` runs it durably. Never imports the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pyworkflow.context.step_context import StepContext
from pyworkflow.core.registry import WorkflowDefinition, register_workflow
from pyworkflow.utils.duration import parse_duration

F = TypeVar("F", bound=Callable[..., Any])

MAX_TAGS = 3


@overload
def workflow(__func: F) -> F: ...


@overload
def workflow(
    name: str | None = None,
    durable: bool | None = None,
    max_duration: Any = None,
    tags: list[str] | None = None,
    recover_on_worker_loss: bool | None = None,
    max_recovery_attempts: int | None = None,
    context_class: type | None = None,
) -> Callable[[F], F]: ...


def workflow(
    name: Any = None,
    durable: bool | None = None,
    max_duration: Any = None,
    tags: list[str] | None = None,
    recover_on_worker_loss: bool | None = None,
    max_recovery_attempts: int | None = None,
    context_class: type | None = None,
) -> Any:
    """Declare a workflow. Works as ``@workflow`` and ``@workflow(...)``.

    ``max_duration`` (a duration) is enforced: a run still going after it fails with
    ``WorkflowTimeoutError``. At most three ``tags``. ``context_class``: the ``StepContext``
    subclass the workflow sets for its steps (``set_step_context`` refuses another).
    """
    if callable(name) and not isinstance(name, str):
        return _make_workflow(name, None, durable, max_duration, tags, None, None)

    def decorate(func: F) -> F:
        return _make_workflow(
            func,
            name,
            durable,
            max_duration,
            tags,
            recover_on_worker_loss,
            max_recovery_attempts,
            context_class,
        )

    return decorate


def _make_workflow(
    func: F,
    name: str | None,
    durable: bool | None,
    max_duration: Any,
    tags: list[str] | None,
    recover_on_worker_loss: bool | None,
    max_recovery_attempts: int | None,
    context_class: type | None = None,
) -> F:
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@workflow decorates an async function; {func!r} is not one")
    tag_list = tuple(tags or ())
    if len(tag_list) > MAX_TAGS:
        raise ValueError(f"a workflow takes at most {MAX_TAGS} tags, got {len(tag_list)}")
    if max_recovery_attempts is not None and max_recovery_attempts < 0:
        raise ValueError("max_recovery_attempts must be >= 0")
    if context_class is not None and not (
        isinstance(context_class, type) and issubclass(context_class, StepContext)
    ):
        raise TypeError(f"context_class must be a StepContext subclass, got {context_class!r}")
    definition = WorkflowDefinition(
        name=name or func.__name__,
        func=func,
        durable=durable,
        max_duration=None if max_duration is None else parse_duration(max_duration),
        tags=tag_list,
        recover_on_worker_loss=recover_on_worker_loss,
        max_recovery_attempts=max_recovery_attempts,
        context_class=context_class,
    )
    register_workflow(definition)
    marked: Any = func  # the function itself, marked: the registry finds it by these
    marked.__pyworkflow_workflow__ = definition
    marked.workflow_name = definition.name
    return func


__all__ = ["workflow"]
