"""The ``StorageBackend`` port: everything durable about runs lives behind these methods.

Every backend (memory, file, SQLite, PostgreSQL, Redis) implements exactly this, and nothing above
it branches on which backend it has. Constructing a backend does no I/O; the first call connects.
The engine's correctness rests on three guarantees each backend gives:

1. ``commit`` is atomic and conditional: all of a ``Commit`` or nothing, the log stays
   contiguous, and two commits at the same expected sequence cannot both succeed.
2. At most one event per ``completion_key`` per run (exactly-once recording).
3. ``claim_due_timers``, ``claim_due_schedules`` and ``claim_expired_leases`` hand each due item
   to one claimant until its claim lease runs out; ``update_schedule`` is compare-and-set.
4. A commit with an ``owner`` never takes a run from another activation whose lease is live
   (``Commit.owner``): one activation at a time runs a run's inline steps.

This module must never import the engine (only its pure event model) or any runtime.
"""

from __future__ import annotations

import asyncio
import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    CorruptHistoryError,
    DuplicateCompletionError,
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    LeaseHeldError,
    RunFinishedError,
    SequenceConflictError,
    StorageBusyError,
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
)
from pyworkflow.model.schedules import Schedule, ScheduleStatus
from pyworkflow.model.schemas import (
    IN_LOG,
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
    lease_blocks,
)

SCHEMA_VERSION = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Run ids of this prefix are PyWorkflow's own (``start`` refuses them): the run id under which
# storage keeps deployment secrets (``keep_secret``) is one.
RESERVED_RUN_PREFIX = "pyworkflow:"
SECRETS_RUN = RESERVED_RUN_PREFIX + "secrets"


class StorageBackend(ABC):
    """Async storage port. See the module docstring for the guarantees every backend gives."""

    # Whether other processes see what this backend stores (the Celery runtime's workers must).
    shared_between_processes: bool = True
    # What the backend is, in the words of an error message ("SQLite database"), and how its
    # location is written in a storage URL (for messages about a location that holds nothing).
    kind: str = "storage"
    url_hint: str = ""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """The config dict ``config_to_storage`` turns back into an equivalent backend."""

    def local_path(self) -> Path | None:
        """The file or folder this backend keeps its data in on this machine; None when the data
        lives elsewhere (a server) or nowhere durable (memory). Inspecting commands use it to
        refuse a path that holds nothing rather than create storage there."""
        return None

    async def connect(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Open connections and migrate the schema. Idempotent; every method calls it lazily."""

    async def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release connections. The backend may be used again afterwards (it reconnects)."""

    # -- runs ---------------------------------------------------------------------------------

    @abstractmethod
    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        """Insert ``run`` and its first ``events`` (numbered from 1) atomically.

        When ``run.idempotency_key`` already names a run, nothing is written and that run is
        returned with ``False``; otherwise the new run with ``True``. ``run.last_sequence`` of
        the returned record is the head after the insert.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> WorkflowRun | None: ...

    @abstractmethod
    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None: ...

    @abstractmethod
    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        """Runs ordered by ``(created_at, run_id)``; returns the page and the next cursor."""

    async def list_children(
        self, parent_run_id: str, *, open_only: bool = False
    ) -> list[WorkflowRun]:
        """The runs whose ``parent_run_id`` is ``parent_run_id`` (with ``open_only``, those not
        ended), ordered by ``(created_at, run_id)``: what a parent left running when its own log
        can no longer name them (``pyworkflow runs fail`` of a damaged run). The SQL backends
        answer from their ``parent_run_id`` index; this fallback pages through ``list_runs``
        (by status when ``open_only``), which an operator's command can afford."""
        statuses: list[RunStatus | None] = (
            [status for status in RunStatus if not status.is_terminal] if open_only else [None]
        )
        found: list[WorkflowRun] = []
        for status in statuses:
            cursor: str | None = None
            while True:
                page, cursor = await self.list_runs(status=status, limit=500, cursor=cursor)
                found += [run for run in page if run.parent_run_id == parent_run_id]
                if cursor is None:
                    break
        return sorted(found, key=lambda run: (run.created_at or _EPOCH, run.run_id))

    # -- the log ------------------------------------------------------------------------------

    @abstractmethod
    async def commit(self, commit: Commit) -> int:
        """Apply ``commit`` atomically (see ``Commit``) and return the new head sequence.

        Raises ``SequenceConflictError``, ``DuplicateCompletionError``,
        ``HookAlreadyReceivedError``/``HookExpiredError`` (hook moves), or
        ``WorkflowNotFoundError`` for an unknown run; on any error nothing was written.
        """

    # Whether ``commit_many`` is one atomic write here (the default: one write per commit).
    joint_commits: bool = False

    async def commit_many(self, commits: list[Commit]) -> list[int]:
        """Apply ``commits`` in order and return each one's new head sequence.

        With ``joint_commits`` they are one atomic write: on any error nothing was written (the
        engine joins a child's first write to the parent's write that creates it). The default
        commits them one after another, each atomic: an error leaves the earlier ones written.
        """
        return [await self.commit(commit) for commit in commits]

    @abstractmethod
    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        """Events of a run with ``sequence > after_sequence`` in order, optionally one command's."""

    # -- timers -------------------------------------------------------------------------------

    @abstractmethod
    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        """Claim up to ``limit`` due timers (``fire_at <= now``), unclaimed or whose claim ran out.

        A claimed timer is not handed out again until ``now + claim_for``; the activation it
        triggers replaces or clears it in its commit. Two concurrent claimants never get the
        same timer.
        """

    @abstractmethod
    async def get_timer(self, run_id: str) -> Timer | None: ...

    # -- leases -------------------------------------------------------------------------------

    @abstractmethod
    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        """Extend the leases ``owner`` holds on ``run_ids`` (others are left alone)."""

    @abstractmethod
    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        """Take over runs that are pending/running with no lease or an expired one.

        Returns their ids; each is now leased to ``owner`` until ``expires_at``.
        """

    # -- hooks --------------------------------------------------------------------------------

    @abstractmethod
    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None: ...

    @abstractmethod
    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]: ...

    # -- schedules ----------------------------------------------------------------------------
    #
    # A schedule is one record (``model.schedules.Schedule``, kept as ``schedule_to_json``) with
    # a few columns beside it: ``workflow_name``, ``status``, ``created_at`` (for listing) and
    # the poll time (``Schedule.poll_at``, indexed: the scheduler's "what is due" query must not
    # read every schedule). Writes are compare-and-set on ``Schedule.revision``.

    @abstractmethod
    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        """Insert ``schedule`` with revision 1; when its id is taken, nothing is written and the
        stored schedule is returned with ``False``, otherwise the stored one with ``True``."""

    @abstractmethod
    async def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        """Replace the schedule when its stored revision is ``expected_revision``; the stored
        record (revision ``expected_revision + 1``, poll time ``schedule.poll_at``) is returned.
        None when the revision moved on or the schedule does not exist: nothing was written."""

    @abstractmethod
    async def get_schedule(self, schedule_id: str) -> Schedule | None: ...

    @abstractmethod
    async def list_schedules(
        self,
        *,
        workflow_name: str | None = None,
        status: ScheduleStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Schedule]:
        """Schedules ordered by ``(created_at, schedule_id)``, filtered, one page of them."""

    @abstractmethod
    async def claim_due_schedules(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=10)
    ) -> list[Schedule]:
        """Claim up to ``limit`` schedules whose poll time is ``<= now``, earliest first: each
        one's poll time moves to ``now + claim_for`` (its record and revision are unchanged), so
        no other claimant gets it before then. The claimant's ``update_schedule`` sets the next
        poll time; one that dies leaves the schedule to be claimed again once its claim ends."""

    # -- step checkpoints ---------------------------------------------------------------------

    @abstractmethod
    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None: ...

    @abstractmethod
    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None: ...

    @abstractmethod
    async def delete_checkpoint(self, run_id: str, step_id: str) -> None: ...

    # -- deployment secrets -------------------------------------------------------------------

    async def keep_secret(self, name: str, candidate: str) -> str:
        """The secret named ``name`` this storage keeps for its deployment (the hook key of a
        deployment that configures none): ``candidate`` is stored by the first call, from any
        process, and every call returns the stored one. Kept beside step checkpoints under the
        reserved run id ``SECRETS_RUN``. The built-in backends store it atomically (first writer
        wins); this fallback, for other backends, reads back what it wrote."""
        stored = await self.get_checkpoint(SECRETS_RUN, name)
        if stored is None:
            await self.put_checkpoint(SECRETS_RUN, name, candidate)
            stored = await self.get_checkpoint(SECRETS_RUN, name)
        return candidate if stored is None else stored


def number_events(commit: Commit, head: int, now: datetime) -> list[Event]:
    """Check ``commit.expected_sequence`` against ``head`` and give each event its sequence.

    Shared by every backend so that numbering, timestamps and event ids are decided once.
    Raises ``SequenceConflictError`` when the log has moved.
    """
    if commit.expected_sequence is not None and commit.expected_sequence != head:
        raise SequenceConflictError(
            f"run {commit.run_id}: expected log head {commit.expected_sequence}, found {head}"
        )
    numbered = commit.events
    run_id = commit.run_id
    for offset, event in enumerate(numbered, start=1):
        # Events are numbered in place: once committed, an event belongs to the log.
        if event.run_id != run_id:
            raise ValueError(f"an event of run {event.run_id} in a commit to run {run_id}")
        event.place(head + offset, now)
    return numbered


# Runs whose lease the sweeper may take over once it is free (no holder, or expired).
LEASABLE_STATUSES: tuple[RunStatus, ...] = (RunStatus.PENDING, RunStatus.RUNNING)


def check_run_open(run_id: str, status: RunStatus) -> None:
    """Nothing enters a log after its terminal event: commits to a finished run fail."""
    if status.is_terminal:
        raise RunFinishedError(f"run {run_id} already ended ({status}); nothing more is recorded")


def check_lease(
    commit: Commit, lease_owner: str | None, lease_expires_at: datetime | None, now: datetime
) -> None:
    """Refuse ``commit`` when its ``owner`` may not take the run's current lease."""
    owner = commit.owner
    if owner is not None and lease_blocks(owner, lease_owner, lease_expires_at, now):
        raise lease_held(commit.run_id, lease_owner)


def lease_held(run_id: str, lease_owner: str | None) -> LeaseHeldError:
    return LeaseHeldError(
        f"run {run_id} is leased to {lease_owner}, which is still at work", lease_owner
    )


def run_status_after(commit: Commit, current: RunStatus) -> RunStatus:
    return commit.status if commit.status is not None else current


# -- shared by several backends ---------------------------------------------------------------


def new_run_record(
    run: WorkflowRun, events: list[Event], now: datetime
) -> tuple[WorkflowRun, list[Event]]:
    """What ``create_run`` stores: a copy of ``run`` and its first ``events``, numbered from 1.

    Arguments that the first event (``workflow.started``) records are not copied into the
    record (``IN_LOG``).

    ``created_at`` defaults to ``now``, ``updated_at`` to ``created_at``, events without a
    timestamp get ``created_at``; ``last_sequence`` is the number of events.
    """
    created_at = run.created_at or now
    numbered = number_events(Commit(run.run_id, events, expected_sequence=0), 0, created_at)
    logged = _logs_args(run, numbered)
    record = run.copy(
        created_at=created_at,
        updated_at=run.updated_at or created_at,
        last_sequence=len(numbered),
        input_args=IN_LOG if logged else run.input_args,
        input_kwargs=IN_LOG if logged else run.input_kwargs,
    )
    return record, numbered


def _logs_args(record: WorkflowRun, first: list[Event]) -> bool:
    """Whether ``record``'s arguments are the ones its first event (``workflow.started``)
    records, so that storage keeps them there only."""
    if not first or first[0].type is not EventType.WORKFLOW_STARTED or record.input_args == IN_LOG:
        return False
    data = first[0].data
    return (data.get("args"), data.get("kwargs")) == (record.input_args, record.input_kwargs)


def without_logged_args(record: WorkflowRun, first: list[Event]) -> WorkflowRun:
    """``record`` as storage keeps it: arguments that its first event (``workflow.started``,
    the one source of truth) records are stored there only (``IN_LOG``). ``record`` itself when
    nothing changes, else a copy."""
    if _logs_args(record, first):
        return record.copy(input_args=IN_LOG, input_kwargs=IN_LOG)
    return record


def with_logged_args(record: WorkflowRun, started: Event | dict[str, Any] | None) -> WorkflowRun:
    """A stored record as backends return it: arguments kept only in the run's
    ``workflow.started`` (``IN_LOG``, see ``new_run_record``) filled in from that event (or its
    data). Modifies and returns ``record`` (a copy the backend made)."""
    if record.input_args == IN_LOG and started is not None:
        data = started.data if isinstance(started, Event) else started
        record.input_args = data.get("args", "[]")
        record.input_kwargs = data.get("kwargs", "{}")
    return record


def already_exists(run_id: str) -> WorkflowAlreadyRunningError:
    return WorkflowAlreadyRunningError(f"workflow run {run_id!r} already exists")


def unknown_event_type(run_id: str, sequence: Any, kind: Any) -> WorkflowError:
    """An event of a type this release does not know (written by a newer one, during a rolling
    upgrade): not damage; the run waits for a process that knows it."""
    return WorkflowError(
        f"run {run_id}, event {sequence}: unknown event type {kind!r} (written by a newer"
        " release of pyworkflow?)"
    )


def damaged_event(run_id: str, sequence: Any, kind: Any, error: Exception) -> CorruptHistoryError:
    """What reading a stored event whose text cannot be decoded raises: which run, which
    event."""
    why = f"{type(error).__name__}: {error}"
    return CorruptHistoryError(run_id, int(sequence), str(kind), "data", why)


def run_not_found(run_id: str) -> WorkflowNotFoundError:
    return WorkflowNotFoundError(f"no workflow run {run_id!r}")


def duplicate_completion(run_id: str, keys: list[str]) -> DuplicateCompletionError:
    return DuplicateCompletionError(
        f"run {run_id}: a completion is already recorded for one of {', '.join(keys)}"
    )


def check_hook_pending(run_id: str, hook_id: str, status: HookStatus | None) -> None:
    """Raise what moving a hook out of ``status`` fails with (``None``: the hook does not exist).

    Only a pending hook can be received or expired: a received one raises
    ``HookAlreadyReceivedError``, an expired or disposed one ``HookExpiredError``.
    """
    if status is HookStatus.PENDING:
        return
    if status is None:
        raise HookNotFoundError(f"run {run_id} has no hook {hook_id!r}")
    if status is HookStatus.RECEIVED:
        raise HookAlreadyReceivedError(
            f"hook {hook_id!r} of run {run_id} already received its payload"
        )
    raise HookExpiredError(f"hook {hook_id!r} of run {run_id} is {status.value}, not pending")


def encode_run_cursor(created_at: datetime, run_id: str) -> str:
    """The opaque ``list_runs`` cursor: the ``(created_at, run_id)`` of the last run returned."""
    raw = json.dumps([created_at.isoformat(), run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_run_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_run_cursor``; ``ValueError`` for anything it did not produce."""
    try:
        created_at, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created_at), str(run_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed list_runs cursor: {cursor!r}") from exc


_T = TypeVar("_T")


async def retry_while_busy(
    attempt: Callable[[], _T],
    is_busy: Callable[[Exception], bool],
    *,
    what: str,
    timeout: float,
) -> _T:
    """Call ``attempt`` until it does not fail with a "busy" error, sleeping between tries.

    ``attempt`` must be synchronous and must leave nothing half done when it raises. The sleep
    doubles from 1 ms up to 50 ms, so the event loop keeps running while another process holds
    a lock; after ``timeout`` seconds of being busy it gives up with ``StorageBusyError``.
    """
    delay = 0.001
    deadline: float | None = None
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not is_busy(exc):
                raise
            now = asyncio.get_running_loop().time()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise StorageBusyError(
                    f"{what} stayed locked by another process for more than {timeout:g}s"
                ) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


__all__ = [
    "RESERVED_RUN_PREFIX",
    "SCHEMA_VERSION",
    "StorageBackend",
    "StorageBusyError",
    "already_exists",
    "check_lease",
    "check_run_open",
    "check_hook_pending",
    "damaged_event",
    "unknown_event_type",
    "decode_run_cursor",
    "duplicate_completion",
    "encode_run_cursor",
    "lease_held",
    "new_run_record",
    "without_logged_args",
    "with_logged_args",
    "number_events",
    "retry_while_busy",
    "run_not_found",
    "run_status_after",
]
