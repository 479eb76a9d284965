"""Records that storage keeps: runs, hooks, timers, and the ``Commit`` an activation writes.

Pure data: imports only the event model and the standard library. The run ``status`` column is a
cache of what the log says; the log is the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

from pyworkflow.model.events import Event


class RunStatus(StrEnum):
    """Where a run stands. The values are the contract's (``docs/api.md``); two are reserved
    and never set by this release: ``PENDING`` (a run is created ``running``)."""

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    CONTINUED_AS_NEW = "continued_as_new"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STATUSES


_TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CONTINUED_AS_NEW}
)


class HookStatus(StrEnum):
    """A hook's state: ``DISPOSED`` when its run ended while it was still pending."""

    PENDING = "pending"
    RECEIVED = "received"
    EXPIRED = "expired"
    DISPOSED = "disposed"

    def __str__(self) -> str:
        return self.value


class BlockedKind(StrEnum):
    """Why a run is blocked: each needs its code (or its deployment) fixed, not a retry."""

    NON_DETERMINISM = "non_determinism"  # replay diverged from the log (``NonDeterminismError``)
    WORKFLOW_NOT_FOUND = "workflow_not_found"  # the activating process lacks the workflow
    UNDECODABLE = "undecodable"  # a recorded value does not decode in this process
    CORRUPT_HISTORY = "corrupt_history"  # the log itself is damaged (storage edited or broken)
    ENGINE_ERROR = "engine_error"  # the activation raised something unexpected

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a run's activations fail for a reason code must fix (``WorkflowRun.blocked``).

    A blocked run is not failed: it keeps its status (``suspended``) and log, and the next
    activation that succeeds (after the code is fixed: ``pyworkflow runs resume``, the retry
    timer, the next worker) clears it. Stored as JSON text in the run's ``error`` field, which
    only terminal runs use otherwise; ``detail`` holds the divergence for non-determinism.
    """

    kind: BlockedKind
    error_type: str  # the exception's class name, e.g. ``NonDeterminismError``
    message: str
    since: datetime
    owner: str | None = None  # the process whose activation hit it
    detail: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        return json.dumps(
            {
                "blocked": self.kind.value,
                "error_type": self.error_type,
                "error": self.message,
                "since": self.since.isoformat(),
                "owner": self.owner,
                "detail": self.detail,
            },
            sort_keys=True,
            default=str,
        )

    @classmethod
    def from_text(cls, text: str) -> Blocked | None:
        """The record ``to_text`` wrote; None for any other text."""
        if not text.startswith("{"):
            return None
        try:
            raw = json.loads(text)
            return cls(
                kind=BlockedKind(raw["blocked"]),
                error_type=str(raw["error_type"]),
                message=str(raw["error"]),
                since=datetime.fromisoformat(raw["since"]),
                owner=raw.get("owner"),
                detail=dict(raw.get("detail") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return None


# What a run record holds in place of a value its log holds (each value is stored once): the
# arguments are in ``workflow.started``, a completed run's result in ``workflow.completed``.
IN_LOG = ""


@dataclass(slots=True)
class WorkflowRun:
    """A run of a workflow. ``input_args``/``input_kwargs``/``result``/``error`` hold JSON text.

    Storage keeps each value once. The arguments live in the run's ``workflow.started`` event
    (the one source of truth): the stored row holds ``IN_LOG`` and every backend fills them in
    from that event when it reads the run (rows written before hold a copy). The return value
    lives in the record (``result``); ``workflow.completed`` mentions it (``events.mention``).
    """

    run_id: str
    workflow_name: str
    status: RunStatus = RunStatus.PENDING
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    input_args: str = "[]"
    input_kwargs: str = "{}"
    result: str | None = None
    error: str | None = None
    idempotency_key: str | None = None
    max_duration: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    recovery_attempts: int = 0
    max_recovery_attempts: int = 3
    recover_on_worker_loss: bool = True
    parent_run_id: str | None = None
    nesting_depth: int = 0
    continued_from_run_id: str | None = None
    continued_to_run_id: str | None = None
    # Engine bookkeeping: the head of the log and the activation lease.
    last_sequence: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, RunStatus):
            self.status = RunStatus(self.status)
        if self.error == "":  # what a commit writes to clear a block (``Commit.error``)
            self.error = None

    @property
    def blocked(self) -> Blocked | None:
        """Why this run cannot advance until its code is fixed (None: it is not blocked)."""
        if self.error is None or self.status.is_terminal:
            return None
        return Blocked.from_text(self.error)

    def copy(self, **changes: Any) -> WorkflowRun:
        """A shallow copy with ``changes`` (field names; an unknown one raises). Copies the
        slots directly: ``dataclasses.replace`` runs ``__init__`` again, three times slower, and
        storage copies a run on every read and write."""
        new = object.__new__(WorkflowRun)
        for name in _RUN_FIELDS:
            setattr(new, name, getattr(self, name))
        if changes:
            for name, value in changes.items():
                if name not in _RUN_FIELD_SET:
                    raise TypeError(f"WorkflowRun has no field {name!r}")
                setattr(new, name, value)
            new.__post_init__()
        return new


_RUN_FIELDS = tuple(f.name for f in fields(WorkflowRun))
_RUN_FIELD_SET = frozenset(_RUN_FIELDS)

TOKEN_HASH_PREFIX = "sha256:"


@dataclass(slots=True)
class Hook:
    """A webhook a run waits on.

    Its token is ``<run_id>:<hook_id>:<secret>``; storage keeps only ``token_hash``
    (``sha256:<hex digest of the token>``), never the token (``engine.hooks``). ``token`` is the
    token itself when the reader could tell it (``pyworkflow.get_hook_token`` and the CLI fill it
    in with the deployment's hook key); rows written before tokens were hashed hold the token
    itself in ``token_hash``, and read back with ``token`` set.
    """

    hook_id: str
    run_id: str
    name: str
    token_hash: str
    command_id: str
    status: HookStatus = HookStatus.PENDING
    created_at: datetime | None = None
    expires_at: datetime | None = None
    received_at: datetime | None = None
    payload: str | None = None
    schema_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    token: str | None = None  # never stored: see the class docstring

    def __post_init__(self) -> None:
        if not isinstance(self.status, HookStatus):
            self.status = HookStatus(self.status)
        if self.token is None and not self.token_hash.startswith(TOKEN_HASH_PREFIX):
            self.token = self.token_hash  # a row from before tokens were hashed


@dataclass(slots=True, frozen=True)
class Timer:
    """A run's next durable wake-up. A run has at most one timer row: its earliest due time."""

    run_id: str
    fire_at: datetime


# Lease owners that stand for "some activation should take this run soon" rather than for an
# activation at work: the caller that created the run, the sweeper that recovered it, the
# executors of its dispatched steps, an activation that gave up. Any activation may take such a
# lease over; a lease held by an activation is exclusive until it expires (see ``Commit.owner``).
RESERVED_LEASE_PREFIX = "pyworkflow:"


def lease_blocks(
    owner: str,
    lease_owner: str | None,
    lease_expires_at: datetime | None,
    now: datetime,
) -> bool:
    """Whether ``owner`` must not take a run whose lease is ``(lease_owner, lease_expires_at)``:
    another activation holds it and it has not run out (a lease without an expiry never does)."""
    return (
        lease_owner is not None
        and lease_owner != owner
        and not lease_owner.startswith(RESERVED_LEASE_PREFIX)
        and (lease_expires_at is None or lease_expires_at > now)
    )


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


class Change(Enum):
    """What a commit does to one of a run's side rows (its lease, its timer)."""

    KEEP = "keep"
    CLEAR = "clear"
    SET = "set"


@dataclass(frozen=True, slots=True)
class LeaseChange:
    """A commit's lease, decoded once for every backend (``Commit.lease_change``)."""

    change: Change
    owner: str | None = None  # set when change is SET
    expires_at: datetime | None = None  # set when change is SET


@dataclass(frozen=True, slots=True)
class TimerChange:
    """A commit's timer, decoded once for every backend (``Commit.timer_change``)."""

    change: Change
    fire_at: datetime | None = None  # set when change is SET


_KEEP_LEASE, _CLEAR_LEASE = LeaseChange(Change.KEEP), LeaseChange(Change.CLEAR)
_KEEP_TIMER, _CLEAR_TIMER = TimerChange(Change.KEEP), TimerChange(Change.CLEAR)


@dataclass(slots=True)
class Notice:
    """An event a commit appends to *another* run's log, in the same atomic write.

    How a finishing child tells its parent, and how an ending parent cancels its children: the
    notice and the commit that causes it are durable together, so a notice is never lost between
    two writes. Storage appends ``event`` (numbered from the target's head) and, when
    ``wake_at`` is set, sets the target's timer to it; it skips the notice, silently, when the
    target does not exist, has ended, or already holds the event's completion key (a notice is
    delivered at most once). With ``follow_chain``, a target that ended by continuing as new is
    followed along its chain (``continued_to_run_id``) to the run that carries it on (a request
    to stop a run reaches its live generation); without, a continued target counts as ended (a
    child's ending concerns the generation that started it, not the next one).
    """

    run_id: str
    event: Event
    wake_at: datetime | None = None
    follow_chain: bool = False
    # Set by a backend that can tell, when the commit returns: the event as appended (its
    # sequence and timestamp), or None when it skipped the notice. Not stored.
    placed: Event | None = field(default=None, compare=False)


@dataclass(slots=True)
class Commit:
    """One atomic write to a run: appended events plus the run-row and side-table changes.

    Storage applies all of it or nothing:

    - ``events`` are appended; when ``expected_sequence`` is given the write succeeds only if the
      log head is still there (else ``SequenceConflictError``) and the events must carry the
      sequences that follow it. With ``expected_sequence=None`` storage numbers the events from
      the current head (used by writers that do not replay: hook receipts, step workers).
    - any event whose ``completion_key`` is already in the log fails the whole commit with
      ``DuplicateCompletionError``.
    - ``status``, ``result``, ``error``, ``started_at``, ``completed_at``, ``recovery_attempts``
      update the run row when not None; ``updated_at`` is always set. ``error=""`` clears a
      block (``Blocked``): the row keeps ``""``, which reads back as None.
    - ``timer``: a datetime sets the run's next wake-up, None clears it, UNSET leaves it.
    - ``lease``: ``(owner, expires_at)`` sets the lease, None releases it, UNSET leaves it.
      Backends read both through ``timer_change`` / ``lease_change``: explicit keep / clear /
      set operations, decoded here once.
    - ``owner``: the activation committing. When set, storage refuses the whole commit with
      ``LeaseHeldError`` if another activation holds the run's lease and it has not expired
      (``lease_blocks``): the sequence check alone lets an event-less commit take a run from an
      activation that is still running a step.
    - ``hooks_created`` are inserted; ``hook_received`` / ``hook_expired`` move that hook from
      pending (else ``HookAlreadyReceivedError`` / ``HookExpiredError`` fail the commit).
    - ``runs_created`` are inserted with their first events (numbered from 1), as ``create_run``
      would, idempotency keys aside (they must have none); a run id already taken fails the
      whole commit with ``WorkflowAlreadyRunningError``. Children and the next run of a chain
      are created this way, atomically with the record that names them.
    - ``hooks_disposed``: hooks of this run that move to ``disposed`` if still pending (a run that
      ends disposes the hooks it leaves waiting; received and expired ones stay as they are).
    - ``continued_to_run_id`` is set on the run row when not None.
    - ``notices`` are appended to other runs' logs after everything above (see ``Notice``).
    """

    run_id: str
    events: list[Event] = field(default_factory=list)
    expected_sequence: int | None = None
    now: datetime | None = None
    status: RunStatus | None = None
    result: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    recovery_attempts: int | None = None
    timer: datetime | None | _Unset = UNSET
    lease: tuple[str, datetime] | None | _Unset = UNSET
    hooks_created: list[Hook] = field(default_factory=list)
    # (hook_id, payload JSON or None): the hook's row moves to ``received`` (the engine keeps
    # the payload in the hook.received event only: None).
    hook_received: tuple[str, str | None] | None = None
    hook_expired: str | None = None  # hook_id
    owner: str | None = None
    runs_created: list[tuple[WorkflowRun, list[Event]]] = field(default_factory=list)
    hooks_disposed: list[str] = field(default_factory=list)
    continued_to_run_id: str | None = None
    notices: list[Notice] = field(default_factory=list)

    @property
    def lease_change(self) -> LeaseChange:
        """``lease`` as an explicit operation: keep, clear, or set ``(owner, expires_at)``."""
        lease = self.lease
        if isinstance(lease, _Unset):
            return _KEEP_LEASE
        if lease is None:
            return _CLEAR_LEASE
        return LeaseChange(Change.SET, lease[0], lease[1])

    @property
    def timer_change(self) -> TimerChange:
        """``timer`` as an explicit operation: keep, clear, or set ``fire_at``."""
        timer = self.timer
        if isinstance(timer, _Unset):
            return _KEEP_TIMER
        if timer is None:
            return _CLEAR_TIMER
        return TimerChange(Change.SET, timer)


__all__ = [
    "RESERVED_LEASE_PREFIX",
    "UNSET",
    "Blocked",
    "BlockedKind",
    "Change",
    "Commit",
    "Hook",
    "LeaseChange",
    "HookStatus",
    "Notice",
    "RunStatus",
    "Timer",
    "TimerChange",
    "WorkflowRun",
    "lease_blocks",
]
