"""Which faults a simulation injects, and how often.

Every fault is drawn from the simulation's one seeded random stream, so a seed names a whole
fault schedule. Kinds:

- ``crash``: the worker handling a delivery dies at one point of it — before a step body, after
  the body (before its result is committed), before a commit, after a commit (before the
  commands are published), or after the work (before the ack);
- ``drop``: a delivery is lost; the message comes back after the visibility timeout;
- ``duplicate``: a message is delivered twice; a hook payload is delivered twice at once
  (a retried webhook), and exactly one receipt must win;
- ``reorder``: messages are delivered in a random order and with random delays;
- ``storage``: a storage call fails before doing anything (transient), or a write is applied and
  the caller still sees an error (the ambiguous commit);
- ``restart``: every worker dies at once and the broker forgets its queue: recovery from storage
  alone (timers and the lease sweeper);
- ``interleave``: a storage call yields to the event loop (once or a few times) before it runs,
  so other workers' activations, step executors and hook receipts run between one activation's
  read and its write, as they do against a real database. Drawn from a stream of its own (the
  other choices of a seed stay where they were) and not counted among the faults a run had: it
  excuses nothing, and ``max_faults`` does not limit it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

KINDS = ("crash", "drop", "duplicate", "reorder", "storage", "restart", "interleave")
CRASH_POINTS = ("before_step", "after_step", "before_commit", "after_commit", "before_ack")
# Where a scheduler serving schedules may die: around a schedule's compare-and-set (after the
# first one: a run decided on, not yet created), and around a cancellation's commit.
SCHEDULE_CRASH_POINTS = ("before_schedule_write", "after_schedule_write", "after_commit")

DEFAULT_RATES = {
    "crash": 0.05,
    "drop": 0.05,
    "duplicate": 0.05,
    "reorder": 0.3,
    "storage": 0.02,
    "restart": 0.01,
    "interleave": 0.2,
}

_HIGHEST = {"duplicate": 0.9}


@dataclass(frozen=True)
class Faults:
    """Fault kinds switched on, each with the probability it strikes at a decision point."""

    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in KINDS:
                raise ValueError(f"unknown fault {kind!r} (known: {', '.join(KINDS)})")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind!r} must be within 0..1, got {rate}")
            if rate > _HIGHEST.get(kind, 1.0):
                # Copies can be duplicated too: at 1 every delivery would breed copies forever.
                raise ValueError(f"fault rate for {kind!r} must be at most {_HIGHEST[kind]}")

    @classmethod
    def none(cls) -> Faults:
        return cls({})

    @classmethod
    def all(cls, scale: float = 1.0) -> Faults:
        return cls(
            {
                kind: min(_HIGHEST.get(kind, 1.0), rate * scale)
                for kind, rate in DEFAULT_RATES.items()
            }
        )

    @classmethod
    def only(cls, *kinds: str, rate: float | None = None) -> Faults:
        return cls({kind: DEFAULT_RATES[kind] if rate is None else rate for kind in kinds})

    @classmethod
    def parse(cls, text: str | Faults | None) -> Faults:
        """``"all"``, ``"none"``, or a comma list such as ``"crash,drop"`` / ``"crash=0.2"``."""
        if isinstance(text, Faults):
            return text
        if text is None or text.strip() in ("", "none"):
            return cls.none()
        if text.strip() == "all":
            return cls.all()
        rates: dict[str, float] = {}
        for part in text.split(","):
            name, _, rate = part.strip().partition("=")
            if name not in KINDS:
                raise ValueError(f"unknown fault {name!r} (known: all, none, {', '.join(KINDS)})")
            try:
                rates[name] = float(rate) if rate else DEFAULT_RATES[name]
            except ValueError:
                raise ValueError(f"fault rate {rate!r} for {name!r} is not a number") from None
        return cls(rates)

    def rate(self, kind: str) -> float:
        return self.rates.get(kind, 0.0)

    def without(self, *kinds: str) -> Faults:
        return replace(self, rates={k: v for k, v in self.rates.items() if k not in kinds})

    @property
    def enabled(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        return ",".join(
            kind if rate == DEFAULT_RATES[kind] else f"{kind}={rate:g}"
            for kind, rate in self.rates.items()
            if rate > 0
        )


__all__ = ["CRASH_POINTS", "SCHEDULE_CRASH_POINTS", "DEFAULT_RATES", "KINDS", "Faults"]
