"""``hook`` and ``define_hook``: wait inside a workflow for a payload from the outside world.

``await hook("approval")`` suspends the run until ``resume_hook(token, payload)`` delivers a
payload (validated against ``payload_schema`` before anything is recorded), or until ``timeout``
passes, which raises ``HookExpiredError`` at the ``await``. ``on_created(token)`` is called once
the hook is durably recorded, to hand the token to whoever will answer: at least once (again
after a crash before the call was recorded), always with the same token, so make it idempotent.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from pyworkflow.context import current_workflow
from pyworkflow.model.names import checked_name

M = TypeVar("M", bound=BaseModel)

# Tokens ``on_created`` callbacks held on to in this process (``call_on_created``). A token is
# made from the run id and a secret, so it differs from run to run: the simulator's sweeps ask
# whether a run's code kept one (``kept_tokens``) before taking one run's ending for another's.
_kept_tokens = 0


def kept_tokens() -> int:
    """How many hook tokens ``on_created`` callbacks have kept (still referenced once the call
    returned) in this process."""
    return _kept_tokens


async def call_on_created(on_created: Callable[[str], Any], token: str) -> None:
    """Call ``on_created(token)`` (awaiting what it returns); raises what it raises.

    Counts the call in ``kept_tokens`` when the token is referenced more afterwards than before
    (the callback stored it: in a list, a dict, an attribute, a closure), or when the callback
    raised (its traceback refers to the token: counted, to be safe). A callback that only uses
    the token (sends, logs or prints it) is not counted; one that keeps a value made from it (a
    link with the token in it, an upper-cased copy) is not seen.
    """
    global _kept_tokens
    refs = getattr(sys, "getrefcount", None)  # (CPython's: elsewhere every token counts)
    before = refs(token) if refs is not None else 0
    kept = True
    try:
        maybe = on_created(token)
        if inspect.isawaitable(maybe):
            await maybe
        maybe = None
        kept = refs is None or refs(token) > before
    finally:
        if kept:
            _kept_tokens += 1


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


__all__ = ["TypedHook", "call_on_created", "define_hook", "hook", "kept_tokens"]
