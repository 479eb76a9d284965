"""``Trace``: what happened in one simulation, where and when, for the HTML report of a seed.

A trace is attached to a ``World`` only when a report is wanted (``Simulation(trace=True)``,
``pyworkflow simulate --report``, ``pytest --sim-report``). Every recording point in the world,
its broker and its storage is one ``if trace is not None`` check, so a simulation without a trace
does no other work for it.

A trace only watches. It never draws from a random stream, never changes a decision and never
reads the wall clock: every mark is stamped with the simulation loop's virtual time, and with its
place among all the marks (many happen at one virtual instant: time moves only when all is idle).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pyworkflow.model.events import Event
    from pyworkflow.model.schemas import Commit, WorkflowRun

# The lanes of the timeline besides one per worker ("worker 0", "worker 1", ...).
SCRIPT = "script"  # what the test did: starts, hook payloads, cancellations
BROKER = "broker"  # messages lost, duplicated, delayed, taken out of order, redelivered
TIMERS = "timers"  # the timer service and the lease sweeper
SCHEDULER = "scheduler"  # schedules served (by a worker's engine)
STORAGE = "storage"  # commits, runs created, storage errors

# The kinds of mark. A fault kind is drawn in its own colour on the timeline.
DELIVERY = "delivery"  # a worker handled a message (an activation or a step)
STEP_BODY = "step body"  # a step's body ran on a worker
COMMIT = "commit"
REFUSED = "commit refused"  # storage said no (a lease, a sequence conflict): not a fault
CREATED = "run created"
TIMER = "timer fired"
RECOVERED = "sweeper"  # a run whose lease expired was taken over
SCHEDULE = "schedules served"
START = "start"
HOOK = "hook payload"
CANCEL = "cancel"
REDELIVERY = "redelivery"
# With ``reorder`` on, the broker takes a random waiting message rather than the oldest: not a
# fault draw (it happens at every take), so not drawn as one.
OUT_OF_ORDER = "taken out of order"
ERROR = "engine error"
CRASH = "crash"
DROP = "drop"
DUPLICATE = "duplicate"
REORDER = "reorder"
STORAGE_ERROR = "storage error"
RESTART = "restart"
FAULTS = (CRASH, DROP, DUPLICATE, REORDER, STORAGE_ERROR, RESTART)

MAX_LISTED_EVENTS = 40  # events of one commit listed in its mark's details


class _Message(Protocol):
    """What the trace reads of a broker message (``world.Message``)."""

    kind: str
    run_id: str
    step_id: str
    attempt: int
    number: int


class _Clock(Protocol):
    def time(self) -> float: ...


@dataclass(slots=True)
class Mark:
    """One thing that happened: at virtual time ``at`` (seconds since the simulation began), the
    ``order``-th mark of the trace, on ``lane``. A delivery spans up to ``until`` /
    ``until_order`` (None while it runs, or if a restart killed it)."""

    order: int
    at: float
    lane: str
    kind: str
    run_id: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    until: float | None = None
    until_order: int | None = None

    @property
    def is_fault(self) -> bool:
        return self.kind in FAULTS


def worker_lane(index: int) -> str:
    return f"worker {index}"


def _what(message: _Message) -> str:
    if message.kind == "step":
        return f"step {message.step_id} (attempt {message.attempt}) of {message.run_id}"
    return f"activation of {message.run_id}"


def _message_details(message: _Message) -> dict[str, Any]:
    details: dict[str, Any] = {"message": f"#{message.number} {message.kind}"}
    if message.kind == "step":
        details["step"] = message.step_id
        details["attempt"] = message.attempt
    return details


def describe_event(event: Event) -> str:
    """``"3 step.completed step:charge:1"``: an event in one line (sequence, type, command)."""
    command = event.data.get("command_id")
    return f"{event.sequence} {event.type.value}" + (f" {command}" if command else "")


class Trace:
    """The marks of one simulation, in the order they happened; see the module docstring.

    Invariant: ``marks[i].order == i``; ``_open[w]`` is the mark of the delivery worker ``w`` is
    handling, if any.
    """

    def __init__(self, clock: _Clock) -> None:
        self._clock = clock
        self.marks: list[Mark] = []
        self._open: dict[int, Mark] = {}

    def _mark(
        self, lane: str, kind: str, run_id: str, summary: str, details: dict[str, Any] | None = None
    ) -> Mark:
        mark = Mark(len(self.marks), self._clock.time(), lane, kind, run_id, summary, details or {})
        self.marks.append(mark)
        return mark

    # -- workers --------------------------------------------------------------------------------

    def delivery_started(
        self, worker: int, message: _Message, owner: str, fated: str | None
    ) -> None:
        details = _message_details(message)
        details["engine"] = owner
        if fated is not None:
            details["fated to crash"] = fated
        self._open[worker] = self._mark(
            worker_lane(worker), DELIVERY, message.run_id, _what(message), details
        )

    def delivery_ended(self, worker: int, outcome: str, detail: str = "") -> None:
        """``outcome``: ``ok``, ``crash``, ``error`` (an engine error: reported) or ``retried``
        (a storage fault or a refused write: the broker redelivers it a little later)."""
        mark = self._open.pop(worker, None)
        if mark is None:
            return
        mark.until, mark.until_order = self._clock.time(), len(self.marks)
        mark.details["outcome"] = f"{outcome}: {detail}" if detail else outcome
        mark.summary += f" -> {outcome}"

    def crash(self, worker: int, run_id: str, point: str) -> None:
        self._mark(
            worker_lane(worker),
            CRASH,
            run_id,
            f"worker {worker} crashed at {point}" + (f" ({run_id})" if run_id else ""),
            {"point": point},
        )

    def engine_error(self, worker: int, run_id: str, error: BaseException) -> None:
        self._mark(
            worker_lane(worker),
            ERROR,
            run_id,
            f"{type(error).__name__} in {run_id}",
            {"error": f"{type(error).__name__}: {error}"},
        )

    def step_body(self, worker: int, run_id: str, step_id: str, attempt: int) -> None:
        self._mark(
            worker_lane(worker),
            STEP_BODY,
            run_id,
            f"body of {step_id} ran (attempt {attempt}) for {run_id}",
            {"step": step_id, "attempt": attempt},
        )

    def restart(self, workers: int, busy: Iterable[int], forgotten: int) -> None:
        """Every worker died and the broker forgot ``forgotten`` messages."""
        killed = set(busy)
        for worker in range(workers):
            open_mark = self._open.pop(worker, None)
            if open_mark is not None:
                open_mark.details["outcome"] = "killed by the restart"
                open_mark.summary += " -> killed by the restart"
            self._mark(
                worker_lane(worker),
                RESTART,
                open_mark.run_id if open_mark is not None else "",
                f"restart: worker {worker} dies" + (" mid-delivery" if worker in killed else ""),
            )
        self._mark(BROKER, RESTART, "", f"restart: the broker forgot {forgotten} messages")

    # -- the broker -----------------------------------------------------------------------------

    def dropped(self, message: _Message) -> None:
        self._mark(
            BROKER, DROP, message.run_id, f"dropped: {_what(message)}", _message_details(message)
        )

    def duplicated(self, run_id: str, what: str, lane: str = BROKER) -> None:
        self._mark(lane, DUPLICATE, run_id, f"duplicated: {what}")

    def delayed(self, message: _Message, seconds: float) -> None:
        self._mark(
            BROKER,
            REORDER,
            message.run_id,
            f"delayed {seconds:.3f}s: {_what(message)}",
            _message_details(message),
        )

    def out_of_order(self, message: _Message, position: int, visible: int) -> None:
        self._mark(
            BROKER,
            OUT_OF_ORDER,
            message.run_id,
            f"taken out of order (#{position + 1} of {visible} waiting): {_what(message)}",
            _message_details(message),
        )

    def redelivery(self, message: _Message, after: float) -> None:
        self._mark(
            BROKER,
            REDELIVERY,
            message.run_id,
            f"{_what(message)} comes back in {after:g}s",
            _message_details(message),
        )

    # -- timers, sweeper, schedules -------------------------------------------------------------

    def timers_fired(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._mark(TIMERS, TIMER, run_id, f"timer of {run_id} fired")

    def recovered(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._mark(TIMERS, RECOVERED, run_id, f"sweeper took over {run_id} (lease expired)")

    def schedules_served(self, worker: int, outcome: str) -> None:
        self._mark(SCHEDULER, SCHEDULE, "", f"worker {worker} served due schedules: {outcome}")

    def scheduler_crash(self, worker: int, point: str) -> None:
        self._mark(SCHEDULER, CRASH, "", f"scheduler on worker {worker} crashed at {point}")

    # -- storage --------------------------------------------------------------------------------

    def committed(self, worker: int | None, commit: Commit, head: int) -> None:
        events = commit.events
        types = ", ".join(dict.fromkeys(event.type.value for event in events)) or "no events"
        by = "" if worker is None else f" by worker {worker}"
        details: dict[str, Any] = {
            "head": head,
            "events": [describe_event(event) for event in events[:MAX_LISTED_EVENTS]],
        }
        if len(events) > MAX_LISTED_EVENTS:
            details["events"].append(f"... and {len(events) - MAX_LISTED_EVENTS} more")
        if worker is not None:
            details["worker"] = worker
        if commit.status is not None:
            details["status"] = commit.status.value
        if commit.runs_created:
            details["runs created"] = [run.run_id for run, _ in commit.runs_created]
        if commit.notices:
            details["notices"] = len(commit.notices)
        self._mark(
            STORAGE,
            COMMIT,
            commit.run_id,
            f"commit {commit.run_id}: {len(events)} events ({types}){by}",
            details,
        )

    def refused(self, worker: int | None, commit: Commit, error: BaseException) -> None:
        by = "" if worker is None else f" from worker {worker}"
        self._mark(
            STORAGE,
            REFUSED,
            commit.run_id,
            f"commit {commit.run_id}{by} refused: {type(error).__name__}",
            {"error": f"{type(error).__name__}: {error}", "events": len(commit.events)},
        )

    def storage_fault(self, worker: int | None, run_id: str, what: str) -> None:
        by = "" if worker is None else f" (worker {worker})"
        of = f" for {run_id}" if run_id else ""
        self._mark(STORAGE, STORAGE_ERROR, run_id, f"{what}{by}{of}", {"fault": what})

    def run_created(self, run: WorkflowRun, events: list[Event], created: bool) -> None:
        self._mark(
            STORAGE,
            CREATED,
            run.run_id,
            f"run {run.run_id} ({run.workflow_name}) "
            + ("created" if created else "already existed (idempotency key)"),
            {"events": [describe_event(event) for event in events[:MAX_LISTED_EVENTS]]},
        )

    # -- the script -----------------------------------------------------------------------------

    def scripted(self, kind: str, run_id: str, summary: str) -> None:
        self._mark(SCRIPT, kind, run_id, summary)


__all__ = ["FAULTS", "Mark", "Trace", "describe_event", "worker_lane"]
