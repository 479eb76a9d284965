"""Tapes and shrinking: save a simulation's decisions, replay them, and cut a failure down.

A seed fixes every choice of a simulation, so a tape is small: the seed, the settings, the fault
draws to suppress, and (for the reader) which faults fired. ``shrink`` finds a smaller set of
faults that still fails: it suppresses fired faults one at a time (in halves first), keeping each
suppression under which the scenario still fails. Suppressed draws still happen, so the other
choices of the seed stay the same; the result is a tape that reproduces with fewer faults.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Tape:
    """Everything needed to run one simulation again, decision for decision."""

    seed: int
    faults: str
    workers: int
    dispatch_steps: bool
    max_faults: int | None
    suppress: list[int] = field(default_factory=list)
    fired: list[tuple[int, str, str]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)  # what ran: module, workflow, args

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Tape:
        try:
            raw = json.loads(Path(path).read_text())
            raw["fired"] = [tuple(item) for item in raw.get("fired", [])]
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a simulation tape ({exc})") from None


Outcome = tuple[bool, list[int]]  # (still fails, ordinals of the faults that fired)


def shrink(fails_with: Callable[[frozenset[int]], Outcome], fired: list[int]) -> frozenset[int]:
    """The suppress set of a smaller failing schedule (the fewest faults this search finds).

    ``fails_with(suppress)`` runs the scenario with those fault draws suppressed and says whether
    it still fails and which faults fired. ``fired`` are the faults of the original failure.
    """
    suppress: frozenset[int] = frozenset()
    remaining = list(fired)
    chunk = max(1, len(remaining) // 2)
    while remaining and chunk >= 1:
        progressed = False
        for start in range(0, len(remaining), chunk):
            candidate = remaining[start : start + chunk]
            trial = suppress | frozenset(candidate)
            still_fails, now_fired = fails_with(trial)
            if still_fails:
                suppress = trial
                remaining = [f for f in now_fired if f not in suppress]
                progressed = True
                break
        if not progressed:
            if chunk == 1:
                break
            chunk = max(1, chunk // 2)
    return suppress


__all__ = ["Outcome", "Tape", "shrink"]
