"""The ``@step`` decorator: a unit of work whose result is recorded once and retried on failure.

Inside a workflow, calling a step asks the current workflow context to issue a step command; the
engine decides whether the body runs inline or on a worker. Outside a workflow the call just runs
the function (arguments still validated). Never imports the engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pyworkflow.context import _current_workflow
from pyworkflow.core.registry import StepDefinition, register_step
from pyworkflow.core.retry import RetryPolicy
from pyworkflow.utils.duration import parse_duration

F = TypeVar("F", bound=Callable[..., Any])


@overload
def step(__func: F) -> F: ...


@overload
def step(
    name: str | None = None,
    max_retries: int = 3,
    retry_delay: Any = "exponential",
    timeout: Any = None,
    metadata: dict[str, Any] | None = None,
    force_local: bool = False,
) -> Callable[[F], F]: ...


def step(
    name: Any = None,
    max_retries: int = 3,
    retry_delay: Any = "exponential",
    timeout: Any = None,
    metadata: dict[str, Any] | None = None,
    force_local: bool = False,
) -> Any:
    """Declare a step. Works as ``@step`` and ``@step(...)``.

    ``max_retries`` retries follow the first attempt; ``retry_delay`` is ``"exponential"``
    (1s, 2s, 4s ... capped at 300s), ``"fixed"`` (60s), a duration or a list of durations;
    ``timeout`` bounds each attempt; ``force_local`` runs the body inline in the activation even
    on runtimes that dispatch steps to workers.
    """
    if callable(name) and not isinstance(name, str):
        return _make_step(name, None, max_retries, retry_delay, timeout, metadata, force_local)

    def decorate(func: F) -> F:
        wrapped: F = _make_step(
            func, name, max_retries, retry_delay, timeout, metadata, force_local
        )
        return wrapped

    return decorate


def _make_step(
    func: Any,
    name: str | None,
    max_retries: int,
    retry_delay: Any,
    timeout: Any,
    metadata: dict[str, Any] | None,
    force_local: bool,
) -> Any:
    if not callable(func):
        raise TypeError(f"@step decorates a function, got {type(func).__name__}")
    definition = StepDefinition(
        name=name or func.__name__,
        func=func,
        retry=RetryPolicy.from_options(max_retries, retry_delay),
        timeout=None if timeout is None else parse_duration(timeout),
        metadata=dict(metadata or {}),
        force_local=force_local,
    )
    register_step(definition)

    @functools.wraps(func)
    async def call_step(*args: Any, **kwargs: Any) -> Any:
        ctx = _current_workflow.get()
        if ctx is None:
            return await definition.invoke(args, kwargs)
        return await ctx.call_step(definition, args, kwargs)

    call_step.__pyworkflow_step__ = definition  # type: ignore[attr-defined]
    return call_step


__all__ = ["step"]
