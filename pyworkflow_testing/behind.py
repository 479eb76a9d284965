"""A cancellation that caught a run behind: what the fault-free comparison may expect of it.

Faults delay a run: a lost message, a lost worker or a late timer leave it, at a given moment of
virtual time, where the run without faults was some time earlier. A script that cancels at that
moment therefore cancels the faulty run at an earlier point of its code than the fault-free
rerun, and the two may end differently (cancelled in a sleep the faulty run had not left yet,
against cancelled at the step after it): that is what a cancellation arriving earlier does, in
production too, not a difference the faults should not make.

``check()`` keeps comparing such a run with a run without faults, one whose cancellation is
moved to where the fault-free run was as far along as the faulty run was at its request:

- a run's *progress* at its request is the set of durable calls resolved (a step's outcome, a
  sleep's end, a hook's payload or expiry, a child's ending) before ``cancellation.requested`` in
  its log (``progress_at_request``);
- the faulty run was *behind* when its progress is a strict subset of the fault-free run's;
- the fault-free run had exactly that progress between two moments (``window``); the script
  is run again without faults with the cancellation at the middle of that window
  (``moved_cancel``), and the faulty run must end as that run does.

When the fault-free run passed through that progress in no virtual time at all (its steps ran
at the same instant as the sleep before them, say), no moment of the script reaches it. The
faulty ending is then accepted if the request did something: it must not be the ending the run
has without faults when nobody cancels it (a request lost on the way, a bug, would end it so).
The other oracles (the execution ledger, replay, determinism) apply as always.

A faulty progress that is not a stage the fault-free run went through, or a script whose
cancellation cannot be moved (another action comes between), is reported as a difference, as
before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pyworkflow.model.events import Event, EventType, completion_key

if TYPE_CHECKING:
    from pyworkflow_testing.simulation import _Action


def resolutions(events: Sequence[Event]) -> list[tuple[str, datetime | None]]:
    """The durable calls a log resolves, in log order: (command id, when)."""
    found: list[tuple[str, datetime | None]] = []
    seen: set[str] = set()
    for event in events:
        key = completion_key(event.type, event.data)
        if key is None or not key.endswith("#done"):
            continue  # (not a command's final completion: a retried attempt's, a run's end)
        command_id = str(event.data["command_id"])
        if command_id not in seen:
            seen.add(command_id)
            found.append((command_id, event.timestamp))
    return found


def progress_at_request(events: Sequence[Event]) -> tuple[frozenset[str], datetime] | None:
    """The durable calls resolved before the log's first cancellation request, and when the
    request was made; None when the log holds no request."""
    for index, event in enumerate(events):
        if event.type is EventType.CANCELLATION_REQUESTED and event.timestamp is not None:
            done = frozenset(command_id for command_id, _ in resolutions(events[:index]))
            return done, event.timestamp
    return None


def window(
    events: Sequence[Event], done: frozenset[str], started: datetime
) -> tuple[datetime, datetime] | None:
    """When the run of ``events`` had resolved exactly ``done``: from the last of them (or
    ``started``) to the next resolution. None when it never had exactly that progress (it
    resolved them in another order, or never resolved some of them)."""
    ordered = resolutions(events)
    if len(ordered) <= len(done) or {c for c, _ in ordered[: len(done)]} != done:
        return None
    begin = ordered[len(done) - 1][1] if done else started
    end = ordered[len(done)][1]
    if begin is None or end is None:
        return None
    return begin, end


def moved_cancel(
    script: Sequence[_Action], index: int, requested: datetime, at: datetime
) -> list[_Action] | None:
    """``script`` with run ``index``'s first cancellation made at ``at`` instead of at
    ``requested`` (when it was made): the time the script lets pass before it (its ``run_for``
    actions just before the cancellation) is split there. None when another action lies
    between ``at`` and the cancellation, or ``at`` is not before it."""
    position = next(
        (i for i, a in enumerate(script) if a.kind == "cancel" and a.args[0] == index), None
    )
    if position is None or at >= requested:
        return None
    first, total = position, 0.0
    while first > 0 and script[first - 1].kind == "run_for":
        first -= 1
        total += float(script[first].args[0])
    if first == position:
        return None  # nothing but time passes just before it
    before = total - (requested - at).total_seconds()  # seconds into the run_for actions
    if before < 0:
        return None
    passing = script[first]
    return [
        *script[:first],
        dataclasses.replace(passing, args=(before,)),
        script[position],
        dataclasses.replace(passing, args=(total - before,)),
        *script[position + 1 :],
    ]


__all__ = ["moved_cancel", "progress_at_request", "resolutions", "window"]
