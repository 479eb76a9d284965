"""``hook`` and ``define_hook``: wait inside a workflow for a payload from the outside world.

``await hook("approval")`` suspends the run until ``resume_hook(token, payload)`` delivers a
payload (validated against ``payload_schema`` before anything is recorded), or until ``timeout``
passes, which raises ``HookExpiredError`` at the ``await``. ``on_created(token)`` is called once
the hook is durably recorded, to hand the token to whoever will answer: at least once (again
after a crash before the call was recorded), always with the same token, so make it idempotent.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from pyworkflow.context import current_workflow
from pyworkflow.model.names import checked_name

M = TypeVar("M", bound=BaseModel)


async def hook(
    name: str,
    *,
    timeout: Any = None,
    on_created: Callable[[str], Any] | None = None,
    payload_schema: type[BaseModel] | None = None,
    on_received: Callable[[Any], Any] | None = None,
) -> Any:
    """Wait for the payload of the hook ``name``; returns it (a model when a schema is given)."""
    checked_name("a hook name", name)
    if payload_schema is not None and not (
        isinstance(payload_schema, type) and issubclass(payload_schema, BaseModel)
    ):
        raise TypeError("payload_schema must be a pydantic model class")
    ctx = current_workflow()
    if ctx is None:
        raise RuntimeError("hook() can only be awaited inside a workflow")
    payload = await ctx.hook(
        name,
        timeout=timeout,
        on_created=on_created,
        payload_schema=payload_schema,
        on_received=on_received,
    )
    if on_received is not None:
        maybe = on_received(payload)
        if inspect.isawaitable(maybe):
            await maybe
    return payload


class TypedHook(Generic[M]):
    """A named hook whose payload is always an instance of ``schema``."""

    def __init__(self, name: str, schema: type[M]) -> None:
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise TypeError("define_hook needs a pydantic model class as its schema")
        self.name = name
        self.schema = schema

    def __call__(
        self,
        timeout: Any = None,
        on_created: Callable[[str], Any] | None = None,
        on_received: Callable[[M], Any] | None = None,
    ) -> Awaitable[M]:
        return hook(
            self.name,
            timeout=timeout,
            on_created=on_created,
            payload_schema=self.schema,
            on_received=on_received,
        )

    def __repr__(self) -> str:
        return f"TypedHook({self.name!r}, {self.schema.__name__})"


def define_hook(name: str, schema: type[M]) -> TypedHook[M]:
    """A reusable typed hook: ``approval = define_hook("approval", Approval)``."""
    return TypedHook(name, schema)


__all__ = ["TypedHook", "define_hook", "hook"]
