"""The event model: every state change of a run is one immutable ``Event`` in its log.

Pure data. This module imports nothing of the package, so storage can use it without depending on
the engine. It also states the two facts storage enforces about events: which events are
*completions* of a command (at most one per ``completion_key``), and which are terminal.

Event ``data`` fields by type (``command_id`` names the durable call, e.g. ``step:charge:3``):

- ``workflow.started``: ``workflow_name``, ``args``, ``kwargs`` (serialized JSON text), and
  ``nesting_depth`` for a child and ``max_nesting_depth`` when the limit is not the default 3
  (replay needs them: how deep a run is, and may go, decides what it may start)
- ``workflow.completed``: ``result`` (up to ``INLINE_RESULT_LIMIT`` characters; a larger value
  lives in the run record only and the event has ``result_sha256``, ``result_size``: see
  ``ending_record``);  ``workflow.failed``: ``error``, ``error_type``, ``exception``
  (and ``imposed: true`` when the engine ended the run from outside its code, e.g. max_duration)
- ``step.started``: ``command_id``, ``step_name``, ``attempt`` (and ``args``/``kwargs`` when the
  step is dispatched to a queue; an attempt after a dispatched first one mentions them instead:
  ``args_sha256``/``args_size`` when large, see ``mention``)
- ``step.completed``: ``command_id``, ``step_name``, ``attempt``, ``result`` (an outcome of
  ``step.*`` also names the child runs the attempt started, ``children``, when it did)
- ``step.retrying``: ``command_id``, ``step_name``, ``attempt``, ``error``, ``resume_at``
- ``step.failed``: ``command_id``, ``step_name``, ``attempt``, ``error``, ``error_type``,
  ``exception``
- ``sleep.started``: ``command_id``, ``resume_at``;  ``sleep.completed``: ``command_id``
- ``hook.created``: ``command_id``, ``hook_id``, ``name``, ``expires_at`` (and ``announce: true``
  when the code passed ``on_created``)
- ``hook.announced``: ``command_id``, ``hook_id``: ``on_created`` was called with the hook's token
  (recorded after the call: a crash before it makes the next activation call it again)
- ``hook.received``: ``command_id``, ``hook_id``, ``payload``;  ``hook.expired``: ``command_id``,
  ``hook_id``
- ``workflow.interrupted``: ``recovery_attempt`` (a lost worker, noted by the sweeper)
- ``cancellation.requested``: ``reason`` (``cancel_workflow``);  ``workflow.cancelled``: ``error``,
  ``error_type``, ``exception``, ``reason``

- ``workflow.continued_as_new``: ``continued_to_run_id``, ``args``, ``kwargs`` (the next run's,
  mentioned: a large value as ``args_sha256``/``args_size``, kept in the next run's log)
- ``child_workflow.started``: ``command_id``, ``child_run_id``, ``child_workflow_name``,
  ``args``, ``kwargs`` (mentioned likewise: the child's log holds them; the child run is created
  by the same write)
- ``child_workflow.completed``: ``command_id``, ``child_run_id``, ``result``;
  ``child_workflow.failed``: ``command_id``, ``child_run_id``, ``error``, ``error_type``,
  ``exception``; ``child_workflow.cancelled``: the same and ``reason``. Appended to the parent's
  log by the child's terminal write (a ``Notice``).
- ``child_workflow.cancel_requested``: ``command_id``, ``child_run_id``, ``reason``, ``running``
  (``handle.cancel()`` in the parent; the child's ``cancellation.requested`` goes with it)

Reserved, never recorded by this release: ``workflow.suspended`` and ``hook.processed``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_SUSPENDED = "workflow.suspended"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    WORKFLOW_CONTINUED_AS_NEW = "workflow.continued_as_new"
    WORKFLOW_INTERRUPTED = "workflow.interrupted"
    STEP_STARTED = "step.started"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    STEP_RETRYING = "step.retrying"
    SLEEP_STARTED = "sleep.started"
    SLEEP_COMPLETED = "sleep.completed"
    HOOK_CREATED = "hook.created"
    HOOK_RECEIVED = "hook.received"
    HOOK_EXPIRED = "hook.expired"
    HOOK_PROCESSED = "hook.processed"
    HOOK_ANNOUNCED = "hook.announced"
    CANCELLATION_REQUESTED = "cancellation.requested"
    CHILD_WORKFLOW_STARTED = "child_workflow.started"
    CHILD_WORKFLOW_COMPLETED = "child_workflow.completed"
    CHILD_WORKFLOW_FAILED = "child_workflow.failed"
    CHILD_WORKFLOW_CANCELLED = "child_workflow.cancelled"
    CHILD_WORKFLOW_CANCEL_REQUESTED = "child_workflow.cancel_requested"

    def __str__(self) -> str:
        return self.value


TERMINAL_EVENT_TYPES = frozenset(
    {
        EventType.WORKFLOW_COMPLETED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_CANCELLED,
        EventType.WORKFLOW_CONTINUED_AS_NEW,
    }
)

# Events that resolve a command. Two events with the same completion key never both enter a log.
_FINAL_COMPLETIONS = frozenset(
    {
        EventType.STEP_COMPLETED,
        EventType.STEP_FAILED,
        EventType.SLEEP_COMPLETED,
        EventType.HOOK_RECEIVED,
        EventType.HOOK_EXPIRED,
        EventType.CHILD_WORKFLOW_COMPLETED,
        EventType.CHILD_WORKFLOW_FAILED,
        EventType.CHILD_WORKFLOW_CANCELLED,
    }
)


def completion_key(event_type: EventType, data: dict[str, Any]) -> str | None:
    """The uniqueness key storage enforces per run, or None for events that are not completions.

    A command has one final completion (``<command_id>#done``); each failed step attempt that is
    retried has its own pair (``step.failed`` with ``retrying: true``,
    ``<command_id>#failed#<attempt>``, then ``step.retrying``, ``<command_id>#retry#<attempt>``);
    a run has one terminal event.
    """
    if event_type is EventType.STEP_FAILED and data.get("retrying"):
        return f"{data['command_id']}#failed#{data['attempt']}"  # an attempt's, not the step's
    if event_type in _FINAL_COMPLETIONS:
        return f"{data['command_id']}#done"
    if event_type is EventType.STEP_RETRYING:
        return f"{data['command_id']}#retry#{data['attempt']}"
    if event_type in TERMINAL_EVENT_TYPES:
        return "#terminal"
    return None


_new = object.__new__


class Event:
    """One entry of a run's log. ``sequence`` is 1-based and contiguous within a run.

    A plain class with slots rather than a dataclass: a cold replay builds one per stored event,
    and ``restore`` builds them without running ``__init__``, converting the timestamp to a
    ``datetime`` or formatting ``event_id`` only when someone reads them (replay reads neither).
    """

    __slots__ = ("run_id", "type", "data", "sequence", "_timestamp", "_micros", "_event_id")

    run_id: str
    type: EventType
    data: dict[str, Any]
    sequence: int

    def __init__(
        self,
        run_id: str,
        type: EventType | str,  # noqa: A002 - the public field name
        data: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
        sequence: int = 0,
        event_id: str = "",
    ) -> None:
        self.run_id = run_id
        self.type = type if type.__class__ is EventType else EventType(type)
        self.data = {} if data is None else data
        self.sequence = sequence
        self._timestamp = timestamp
        self._micros: int | None = None
        self._event_id = event_id

    @classmethod
    def restore(
        cls,
        run_id: str,
        type: EventType,
        data: dict[str, Any],
        micros: int,
        sequence: int,  # noqa: A002
    ) -> Event:
        """An event read back from storage: its timestamp given in microseconds since the epoch."""
        event: Event = _new(cls)
        event.run_id = run_id
        event.type = type
        event.data = data
        event.sequence = sequence
        event._timestamp = None
        event._micros = micros
        event._event_id = ""
        return event

    @property
    def timestamp(self) -> datetime | None:
        value = self._timestamp
        if value is None and self._micros is not None:
            # Exact below 2**53 microseconds (until year 2255): the division is correctly rounded
            # and fromtimestamp rounds back to the nearest microsecond.
            value = self._timestamp = datetime.fromtimestamp(self._micros / 1_000_000, UTC)
        return value

    @timestamp.setter
    def timestamp(self, value: datetime | None) -> None:
        self._timestamp, self._micros = value, None

    def epoch_seconds(self) -> float:
        """The timestamp as seconds since the epoch (the workflow loop's clock)."""
        if self._micros is not None:
            return self._micros / 1_000_000
        assert self._timestamp is not None, "an event without a timestamp"
        return self._timestamp.timestamp()

    @property
    def event_id(self) -> str:
        if not self._event_id and self.sequence:
            return f"{self.run_id}:{self.sequence}"
        return self._event_id

    @event_id.setter
    def event_id(self, value: str) -> None:
        self._event_id = value

    def place(self, sequence: int, now: datetime) -> None:
        """Number the event as storage appends it (its id follows), stamping it if unstamped."""
        if self.sequence != sequence:
            self.sequence = sequence
            self._event_id = ""  # derived from run_id:sequence when read
        if self._timestamp is None and self._micros is None:
            self._timestamp = now

    def copy_for(self, run_id: str) -> Event:
        """An unnumbered copy of this event for ``run_id``'s log (a ``Notice`` delivered)."""
        return Event(run_id, self.type, dict(self.data), self.timestamp)

    def _key(self) -> tuple[Any, ...]:
        return (self.run_id, self.type, self.data, self.timestamp, self.sequence, self.event_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == other._key()

    # Mutable, so unhashable, like the dataclass it replaced.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Event(run_id={self.run_id!r}, type={self.type!r}, data={self.data!r},"
            f" timestamp={self.timestamp!r}, sequence={self.sequence!r},"
            f" event_id={self.event_id!r})"
        )

    @property
    def command_id(self) -> str | None:
        value = self.data.get("command_id")
        return value if isinstance(value, str) else None

    @property
    def completion_key(self) -> str | None:
        return completion_key(self.type, self.data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "run_id": self.run_id,
            "type": self.type.value,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "data": self.data,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        ts = raw.get("timestamp")
        return cls(
            run_id=raw["run_id"],
            type=EventType(raw["type"]),
            data=raw.get("data") or {},
            timestamp=datetime.fromisoformat(ts) if ts else None,
            sequence=int(raw.get("sequence", 0)),
            event_id=raw.get("event_id", ""),
        )


# Each value is stored once. Where an event only mentions a value stored elsewhere (a completed
# run's return value, kept in its record: ``WorkflowRun.result``, what ``get_workflow_result``
# reads; the arguments of the run a chain continues into, kept in that run's
# ``workflow.started``), it copies a value up to this many characters, for readers of the log,
# and of a larger one keeps the SHA-256: enough for a replay to check that the code still
# returns (or continues with) it.
INLINE_RESULT_LIMIT = 1024


def mention(name: str, value_json: str) -> dict[str, Any]:
    """Event data mentioning the value ``value_json`` under ``name`` (see above)."""
    if len(value_json) <= INLINE_RESULT_LIMIT:
        return {name: value_json}
    encoded = value_json.encode()
    return {f"{name}_sha256": hashlib.sha256(encoded).hexdigest(), f"{name}_size": len(encoded)}


def mentions(data: dict[str, Any], name: str, value_json: str) -> bool | None:
    """Whether ``data`` mentions ``value_json`` under ``name``; None when it mentions nothing
    (events written before ``name`` was recorded)."""
    if name in data:
        return bool(data[name] == value_json)
    digest = data.get(f"{name}_sha256")
    if digest is None:
        return None
    return bool(digest == hashlib.sha256(value_json.encode()).hexdigest())


def ending_record(result_json: str) -> dict[str, Any]:
    """The data of ``workflow.completed`` for a run that returned ``result_json``."""
    return mention("result", result_json)


__all__ = [
    "INLINE_RESULT_LIMIT",
    "TERMINAL_EVENT_TYPES",
    "Event",
    "EventType",
    "completion_key",
    "ending_record",
    "mention",
    "mentions",
]
