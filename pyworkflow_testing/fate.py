"""What the seed decides, and where it strikes: the seeded ``Chooser``, the fate of the delivery
at hand (a crash at a chosen point), the exceptions a fault raises, and scripted actions.

Shared by the simulated world and its faulty storage. Nothing here reads the wall clock or does
I/O; every random draw comes from a stream seeded by the simulation's seed.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from pyworkflow.model.exceptions import WorkflowError
from pyworkflow_testing.faults import Faults


class WorkerCrash(BaseException):  # noqa: N818 - it is an event, not an error
    """The simulated worker died here. A BaseException, so no ``except Exception`` stops it."""

    def __init__(self, point: str) -> None:
        super().__init__(point)
        self.point = point


class StorageFault(WorkflowError):
    """A simulated storage failure (the connection dropped, the server said no)."""


class Chooser:
    """The one seeded random stream, with a record of the faults it injected.

    ``suppress`` holds ordinals of fault draws that must not fire (shrinking a failing schedule);
    the draw still happens, so every other choice stays where it was.
    """

    def __init__(self, seed: int, faults: Faults, suppress: frozenset[int] = frozenset()) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self._rates: dict[str, float] = {}
        self.faults = faults
        self.suppress = suppress
        self.draws = 0
        self.fired: list[tuple[int, str, str]] = []  # (ordinal, kind, detail)
        self.max_faults: int | None = None

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        # Only the kinds that can strike: a kind switched off costs one failed dict lookup.
        self._rates = {kind: rate for kind, rate in faults.rates.items() if rate > 0}

    def fault(self, kind: str, detail: str = "") -> bool:
        rate = self._rates.get(kind)
        if rate is None:
            return False
        ordinal = self.draws
        self.draws += 1
        hit = self.random.random() < rate
        if not hit or ordinal in self.suppress:
            return False
        if self.max_faults is not None and len(self.fired) >= self.max_faults:
            return False
        self.fired.append((ordinal, kind, detail))
        return True

    def pick(self, count: int) -> int:
        return self.random.randrange(count) if count > 1 else 0

    def uniform(self, low: float, high: float) -> float:
        return self.random.uniform(low, high)


@dataclass
class Delivery:
    """What the worker handling the current delivery is fated to do."""

    worker: int
    crash_at: str | None
    run_id: str = ""
    # Every run the delivery wrote to or ran a step of (a child run in its parent's activation,
    # ``Engine._child_here``): a fault that strikes the delivery strikes each of them.
    runs: set[str] = field(default_factory=set)

    def struck(self) -> set[str]:
        """The runs a fault of this delivery may make repeat work."""
        return {self.run_id, *self.runs} - {""}


_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "pyworkflow_sim_delivery", default=None
)


# Set while the simulation performs one action of its script (a start, a hook payload): storage
# calls made then may interleave (calls made from outside the script, which a rerun of the script
# would not make, must not draw from the interleaving stream).
_scripted: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pyworkflow_sim_scripted", default=False
)


@contextlib.contextmanager
def scripted_action() -> Iterator[None]:
    token = _scripted.set(True)
    try:
        yield
    finally:
        _scripted.reset(token)


def crash_point(point: str) -> None:
    """Die here if the current delivery was fated to."""
    delivery = _delivery.get()
    if delivery is not None and delivery.crash_at == point:
        raise WorkerCrash(point)


def lose_worker() -> NoReturn:
    """Called from a step body (a mock): the simulated worker running it dies here, now. The
    simulation counts it as a fault of the run (the step running again is excused); the
    reference model runs the body again, as the engine's recovery does."""
    raise WorkerCrash("in_step")


__all__ = [
    "Chooser",
    "Delivery",
    "StorageFault",
    "WorkerCrash",
    "crash_point",
    "lose_worker",
    "scripted_action",
]
