"""What an engine is told: its ``EngineOptions``, and how it invokes a step body.

Plain configuration, read by every part of the engine; nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyworkflow.context import StepInfo
from pyworkflow.core.registry import StepDefinition

StepInvoker = Callable[[StepDefinition, tuple[Any, ...], dict[str, Any], StepInfo], Awaitable[Any]]


@dataclass(slots=True)
class EngineOptions:
    """Knobs of an engine. ``owner`` names this process in leases."""

    owner: str = "local"
    dispatch_steps: bool = False
    lease_ttl: timedelta = timedelta(seconds=30)
    # How long a run blocked on dispatched steps stays leased to their executors before the
    # sweeper takes it back (None: lease_ttl). Until a worker takes the step's message nobody
    # renews that lease, so it must outlast the longest wait in the queue: a runtime with a
    # real broker sets it to the broker's redelivery time (Celery: the visibility timeout).
    dispatch_lease_ttl: timedelta | None = None
    event_limit: int = 50_000
    cache_size: int = 1_000
    # How a step body is invoked: ``(definition, args, kwargs, info) -> result``. Runtimes that
    # test the engine (the simulator) wrap it to mock steps and to inject faults around bodies.
    invoke_step: StepInvoker | None = None
    default_max_recovery_attempts: int = 3
    # How deep child workflows nest below a root run (MaxNestingDepthError beyond).
    max_nesting_depth: int = 3
    # A blocked run (``engine.blocking``) is tried again this long after its activation failed,
    # so workers running fixed code continue it on their own (None: only when resumed).
    blocked_retry: timedelta | None = timedelta(minutes=5)
    # Whether an activation that finds the run's workflow unregistered here blocks the run.
    # Workers (Celery) say yes: every worker should run every workflow. The local runtime says
    # no: processes sharing a storage may each define their own workflows (it blocks a run
    # only when no process took it back, ``runtime.local``).
    block_unregistered: bool = True
    # The key hook tokens' secrets derive from (``engine.hooks``): every process of a
    # deployment must share it. None: the one the storage keeps (``StorageBackend.keep_secret``).
    hook_key: bytes | None = field(default=None, repr=False)
    # Whether an activation whose workflow awaits a child it just started runs the child's first
    # activation itself (``Engine._child_here``) rather than sending it to the queue.
    inline_children: bool = True
    # Whether the runs this engine starts apply resolutions in logical time (``logical_order``
    # in their workflow.started: ``WorkflowInstance.fires_first``). Off during a rolling upgrade
    # from a release without the rule, whose workers would replay such a log in log order.
    logical_order: bool = True


__all__ = ["EngineOptions", "StepInvoker"]
