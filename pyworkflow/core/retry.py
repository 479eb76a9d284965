"""Retry policy of a step: how many attempts, and how long to wait before each retry.

``retry_delay`` is one of ``"exponential"`` (1s, 2s, 4s, ... capped at 300s), ``"fixed"`` (60s),
a duration (``"5s"``, ``10``, ``timedelta``), or a list of durations, one per retry (the last
repeats). A ``RetryableError(retry_after=...)`` overrides the policy for that failure. Pure
computation: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pyworkflow.model.exceptions import CancellationError, FatalError, RetryableError
from pyworkflow.utils.duration import parse_duration

EXPONENTIAL_BASE = timedelta(seconds=1)
EXPONENTIAL_CAP = timedelta(seconds=300)
FIXED_DELAY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt: at most ``max_retries + 1`` attempts."""

    max_retries: int = 3
    kind: str = "exponential"  # "exponential" | "fixed" | "durations"
    delays: tuple[timedelta, ...] = ()

    @classmethod
    def from_options(cls, max_retries: int, retry_delay: Any) -> RetryPolicy:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        if retry_delay in ("exponential", None):
            return cls(max_retries, "exponential")
        if retry_delay == "fixed":
            return cls(max_retries, "fixed", (FIXED_DELAY,))
        if isinstance(retry_delay, list | tuple):
            if not retry_delay:
                raise ValueError("retry_delay list must name at least one duration")
            return cls(max_retries, "durations", tuple(parse_duration(d) for d in retry_delay))
        try:
            return cls(max_retries, "durations", (parse_duration(retry_delay),))
        except ValueError as exc:
            raise ValueError(
                f"retry_delay must be 'exponential', 'fixed', a duration or a list of durations;"
                f" {exc}"
            ) from None

    def delay_before(self, next_attempt: int) -> timedelta:
        """The wait before attempt ``next_attempt`` (2 for the first retry)."""
        retry_index = max(next_attempt - 2, 0)
        if self.kind == "exponential":
            delay: timedelta = EXPONENTIAL_BASE * (2**retry_index)
            return min(delay, EXPONENTIAL_CAP)
        return self.delays[min(retry_index, len(self.delays) - 1)]

    def decide(self, error: BaseException, attempt: int) -> timedelta | None:
        """After ``attempt`` failed with ``error``: the wait before the next try, None to stop."""
        if isinstance(error, FatalError | CancellationError) or attempt > self.max_retries:
            return None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return parse_duration(error.retry_after)
        return self.delay_before(attempt + 1)


__all__ = ["RetryPolicy"]
