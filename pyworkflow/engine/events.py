"""The event model: every state change of a run is one immutable ``Event`` in its log.

Pure data. This module imports nothing of the package, so storage can use it without depending on
the engine. It also states the two facts storage enforces about events: which events are
*completions* of a command (at most one per ``completion_key``), and which are terminal.

Event ``data`` fields by type (``command_id`` names the durable call, e.g. ``step:charge:3``):

- ``workflow.started``: ``workflow_name``, ``args``, ``kwargs`` (serialized JSON text)
- ``workflow.completed``: ``result``;  ``workflow.failed``: ``error``, ``error_type``, ``exception``
- ``step.started``: ``command_id``, ``step_name``, ``attempt`` (and ``args``/``kwargs`` when the
  step is dispatched to a queue)
- ``step.completed``: ``command_id``, ``step_name``, ``attempt``, ``result``
- ``step.retrying``: ``command_id``, ``step_name``, ``attempt``, ``error``, ``resume_at``
- ``step.failed``: ``command_id``, ``step_name``, ``attempt``, ``error``, ``error_type``,
  ``exception``
- ``sleep.started``: ``command_id``, ``resume_at``;  ``sleep.completed``: ``command_id``
- ``hook.created``: ``command_id``, ``hook_id``, ``name``, ``expires_at``
- ``hook.received``: ``command_id``, ``hook_id``, ``payload``;  ``hook.expired``: ``command_id``,
  ``hook_id``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
    CANCELLATION_REQUESTED = "cancellation.requested"
    CHILD_WORKFLOW_STARTED = "child_workflow.started"
    CHILD_WORKFLOW_COMPLETED = "child_workflow.completed"
    CHILD_WORKFLOW_FAILED = "child_workflow.failed"
    CHILD_WORKFLOW_CANCELLED = "child_workflow.cancelled"

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
    retried has its own (``<command_id>#retry#<attempt>``); a run has one terminal event.
    """
    if event_type in _FINAL_COMPLETIONS:
        return f"{data['command_id']}#done"
    if event_type is EventType.STEP_RETRYING:
        return f"{data['command_id']}#retry#{data['attempt']}"
    if event_type in TERMINAL_EVENT_TYPES:
        return "#terminal"
    return None


@dataclass(slots=True)
class Event:
    """One entry of a run's log. ``sequence`` is 1-based and contiguous within a run."""

    run_id: str
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    sequence: int = 0
    event_id: str = ""

    def __post_init__(self) -> None:
        if self.type.__class__ is not EventType:
            self.type = EventType(self.type)
        if not self.event_id and self.sequence:
            self.event_id = f"{self.run_id}:{self.sequence}"

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


__all__ = ["TERMINAL_EVENT_TYPES", "Event", "EventType", "completion_key"]
