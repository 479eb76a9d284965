"""A cancellation that caught a run behind: what the fault-free comparison may expect of it.

Faults delay a run: a lost message, a lost worker or a late timer leave it, at a given moment of
virtual time, where the run without faults was some time earlier. A script that cancels at that
moment therefore cancels the faulty run at an earlier point of its code than the fault-free
rerun, and the two may end differently (cancelled in a sleep the faulty run had not left yet,
against cancelled at the step after it): that is what a cancellation arriving earlier does, in
production too, not a difference the faults should not make.

``check()`` keeps comparing such a run with a run without faults, one cancelled where the
faulty run was rather than when:

- a run's *progress* at its request is the set of durable calls resolved (a step's outcome, a
  sleep's end, a hook's payload or expiry, a child's ending) before ``cancellation.requested`` in
  its log (``progress_at_request``);
- the faulty run was *behind* when its progress is a strict subset of the fault-free run's (of
  everything the fault-free run resolved, when that one had ended before the request);
- the script runs once more without faults, and the request is made the moment that run's log
  holds exactly that progress (``CancelAtProgress``: right after the write that completes it,
  before the writer goes on, so also at a point the run passes in no virtual time, a step run
  at the very instant the sleep before it ended), or, when it never does (parallel steps that
  finish in another order), just before the write that would take it past that progress. The
  faulty run must end as that run does.

A fault-free run that ended before the request had done everything: the faulty run is behind
too when it had resolved as much but not yet ended (a chain's link that had not yet continued).
Anything else is reported as a difference, as before: a run not behind, or a rerun where the
request is never made. The script's own request is still made in that run, where it was: a
second request there, which changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

from pyworkflow.model.events import TERMINAL_EVENT_TYPES, Event, EventType, completion_key


def resolutions(events: Sequence[Event]) -> list[tuple[str, datetime | None]]:
    """The durable calls a log resolves, in log order: (command id, when)."""
    found: list[tuple[str, datetime | None]] = []
    seen: set[str] = set()
    for event in events:
        command_id = _resolved(event)
        if command_id is not None and command_id not in seen:
            seen.add(command_id)
            found.append((command_id, event.timestamp))
    return found


def _resolved(event: Event) -> str | None:
    """The command ``event`` resolves, if it is a command's final completion (not a retried
    attempt's failure, not a run's end)."""
    key = completion_key(event.type, event.data)
    return str(event.data["command_id"]) if key is not None and key.endswith("#done") else None


def progress_at_request(events: Sequence[Event]) -> tuple[frozenset[str], datetime] | None:
    """The durable calls resolved before the log's first cancellation request, and when the
    request was made; None when the log holds no request."""
    for index, event in enumerate(events):
        if event.type is EventType.CANCELLATION_REQUESTED and event.timestamp is not None:
            done = frozenset(command_id for command_id, _ in resolutions(events[:index]))
            return done, event.timestamp
    return None


class CancelAtProgress:
    """A simulated storage's ``after_write`` and ``before_write``: makes ``request`` (a
    cancellation of ``run_id``) once, the moment that run's log holds exactly the resolutions
    ``target``; or, if it never does, just before the first write that would take it past them
    (resolve a call outside ``target``, or end the run) while all it holds is part of them. The
    latter is where steps run in parallel finish in another order without faults (the faulty
    run's {1, 2, 4} of a gather is never a set the fault-free run holds, its {1, 2} is)."""

    def __init__(
        self,
        run_id: str,
        target: frozenset[str],
        request: Callable[[], Coroutine[Any, Any, Any]],
    ) -> None:
        self.run_id = run_id
        self.target = target
        self.request = request
        self.seen: set[str] = set()
        self.fired = False

    async def before(self, run_id: str, events: list[Event]) -> None:
        if self.fired or run_id != self.run_id or not self.seen <= self.target:
            return
        for event in events:
            command_id = _resolved(event)
            if (command_id is not None and command_id not in self.target) or (
                event.type in TERMINAL_EVENT_TYPES
            ):
                self.fired = True
                await self.request()
                return

    async def after(self, run_id: str, events: list[Event]) -> None:
        if self.fired or run_id != self.run_id:
            return
        for event in events:
            command_id = _resolved(event)
            if command_id is not None:
                self.seen.add(command_id)
        if self.seen == self.target:
            self.fired = True
            await self.request()


__all__ = ["CancelAtProgress", "progress_at_request", "resolutions"]
