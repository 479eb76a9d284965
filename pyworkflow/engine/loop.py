"""The workflow event loop: a private, deterministic asyncio loop for one workflow run.

Workflow code runs on this loop so that ``asyncio.gather``, ``create_task``, ``wait`` and
``wait_for`` work and stay deterministic: the ready queue is FIFO, there is no I/O, and ``time()``
is the run's logical time (the timestamp of the last event it processed), never the wall clock.
``call_at``/``call_later`` become durable timers through the owner the loop was built with.

The activation steps the loop synchronously from the real (outer) loop with ``run_ready()``,
making it the running loop only while its callbacks run. "Blocked" is simply "the ready queue is
empty". This loop must never touch storage, sockets, threads or the wall clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from asyncio import events as _events
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol


class TimerOwner(Protocol):
    """Turns a loop timer into a durable timer command."""

    def loop_timer(
        self,
        when: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> asyncio.TimerHandle: ...


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """A FIFO, I/O-free event loop whose clock is the run's logical time."""

    def __init__(self, owner: TimerOwner, time: float) -> None:
        self._owner = owner
        self._time = time  # logical time, seconds since the epoch; moves only forward
        self._ready: deque[asyncio.Handle] = deque()
        self._closed = False
        self._running = False
        self.errors: list[dict[str, Any]] = []
        # This loop's tasks (asyncio.all_tasks would walk every task of the process).
        self.tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    # -- driving ------------------------------------------------------------------------------

    def run_ready(self) -> None:
        """Run callbacks until the ready queue is empty (the workflow is blocked or done)."""
        outer = _events._get_running_loop()
        _events._set_running_loop(self)
        self._running = True
        ready = self._ready
        try:
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            self._running = False
            _events._set_running_loop(outer)

    def advance_time(self, when: float) -> None:
        if when > self._time:
            self._time = when

    @property
    def has_ready(self) -> bool:
        return bool(self._ready)

    # -- the asyncio.AbstractEventLoop surface workflow code uses ------------------------------

    def time(self) -> float:
        return self._time

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        del callback, args, context
        raise RuntimeError("workflow code cannot use threads; call a step instead")

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self._owner.loop_timer(when, callback, args, context)

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self._time + delay, callback, *args, context=context)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=self, name=name, context=context)
        self.tasks.add(task)
        return task

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def get_exception_handler(self) -> None:
        return None

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Unretrieved task exceptions of torn-down instances land here; keep them for debugging.
        if len(self.errors) < 100:
            self.errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def _not_in_workflows(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError(
            "workflow code cannot do I/O, run executors or start servers; call a step instead"
        )

    run_in_executor = _not_in_workflows  # type: ignore[assignment]
    getaddrinfo = _not_in_workflows
    create_connection = _not_in_workflows
    run_until_complete = _not_in_workflows
    run_forever = _not_in_workflows


__all__ = ["TimerOwner", "WorkflowEventLoop"]
