"""Durable storage in plain JSON files: a journal of mutations replayed into a ``MemoryStore``.

Layout under ``base_path``::

    FORMAT               the layout's version (``FILE_FORMAT``; absent: written before it, 1)
    CURRENT              the current generation g (absent: 0)
    snapshot-<g>.json    the whole state when generation g began (absent for g = 0)
    journal-<g>.jsonl    one JSON line per mutation since then, in order
    lock                 fcntl lock: exclusive around a mutation, shared around a read

A schedule is journaled whole (``Schedule.to_dict``) when it is created or updated, and a claim
as the ids it moved and their new poll time; a snapshot keeps each schedule with its poll time
(``"schedules"``, absent in snapshots written before schedules existed: they load as none).

Every operation takes the lock, first catches up with what other processes wrote (it applies the
journal lines appended since it last looked, or reloads when the generation changed), then works
on the in-process ``MemoryStore`` exactly as the memory backend does, so both backends share one
implementation of the semantics. A mutation is written as one line with one ``write``: the
complete line is the commit point, so a ``Commit`` with all its side-table changes is on disk
entirely or not at all. A torn last line (its writer died mid-write) is ignored by readers and
cut off by the next writer. Past ``compact_after_bytes`` of journal the state is written to the
next generation's snapshot (temp file, fsync, ``os.replace``) and ``CURRENT`` is switched last,
so a crash at any point leaves one complete generation.

Blocking: the file I/O runs synchronously on the event loop. An operation reads only what others
appended and writes one small line, which costs less than a hop to a thread; compaction is rare.
The lock is taken with ``LOCK_NB`` and retried with ``asyncio.sleep``, so a lock held by another
process never blocks the loop. Lines go to the OS without fsync by default: they survive a
process crash but not a power loss, the promise SQLite gives with ``synchronous=NORMAL``;
``fsync=True`` makes every write durable.

This is the low-volume backend (each process holds the whole state in memory): correctness over
speed. It must never import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from pyworkflow.model.events import Event
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.model.schedules import Schedule, ScheduleStatus
from pyworkflow.model.schemas import (
    UNSET,
    Change,
    Commit,
    Hook,
    HookStatus,
    Notice,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage.base import (
    SECRETS_RUN,
    StorageBackend,
    retry_while_busy,
    without_logged_args,
)
from pyworkflow.storage.memory import MemoryStore, StoreTables

if sys.platform != "win32":
    import fcntl

_T = TypeVar("_T")
_JSON_SEPARATORS = (",", ":")


# Files are the owner's alone: they hold arguments, results and hook tokens' digests.
_FILE_MODE = 0o600

# The version of what the files mean (``FORMAT``). A release that changes it writes a higher
# number; a release that finds a number it does not know refuses the folder with a clear error
# rather than misread it. A folder without ``FORMAT`` was written before it existed: format 1.
FILE_FORMAT = 1


class FileStorageBackend(StorageBackend):
    """Storage in JSON files under ``base_path``, safe to share between processes on one host."""

    kind = "file storage"

    def to_config(self) -> dict[str, Any]:
        return {"type": "file", "base_path": str(self.base_path)}

    def local_path(self) -> Path | None:
        return Path(self.base_path)

    def __init__(
        self,
        base_path: str | os.PathLike[str] = "./pyworkflow_data",
        *,
        fsync: bool = False,
        compact_after_bytes: int = 8 * 1024 * 1024,
        lock_timeout: float = 10.0,
    ) -> None:
        self.base_path = Path(base_path)
        self.fsync = fsync
        self.compact_after_bytes = compact_after_bytes
        self.lock_timeout = lock_timeout
        self._lock_fd: int | None = None
        self._journal_fd: int | None = None
        # Invariant (while ``_loaded``): ``_store`` is snapshot-<_generation> plus the first
        # ``_journal_offset`` bytes of journal-<_generation>, which end at a line boundary.
        self._store = MemoryStore()
        self._loaded = False
        self._generation = 0
        self._journal_offset = 0

    async def connect(self) -> None:
        if self._lock_fd is not None:
            return
        if sys.platform == "win32":
            raise ConfigurationError("file storage needs POSIX file locks, which Windows lacks")
        self.base_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.base_path / "lock", os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            await retry_while_busy(
                lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                lambda exc: isinstance(exc, BlockingIOError),
                what=f"file storage {self.base_path}",
                timeout=self.lock_timeout,
            )
            try:
                self._check_format()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        if self._lock_fd is not None:  # another call connected while this one waited
            os.close(fd)
            return
        self._lock_fd = fd

    def _check_format(self) -> None:
        """Refuse a folder in a format this release does not know; mark a new one (under the
        lock: two processes opening a fresh folder at once)."""
        path = self.base_path / "FORMAT"
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            _write_atomically(path, f"{FILE_FORMAT}\n".encode())
            return
        try:
            found = int(text.strip())
        except ValueError:
            raise ConfigurationError(
                f"file storage {self.base_path}: {path.name} holds {text[:40]!r}, not a format"
                " number (is this folder pyworkflow's?)"
            ) from None
        if found > FILE_FORMAT:
            raise ConfigurationError(
                f"file storage {self.base_path} is in format {found}, written by a newer release"
                f" of pyworkflow; this release reads format {FILE_FORMAT} at most: upgrade"
                " pyworkflow in this process"
            )

    async def close(self) -> None:
        self._close_journal()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._store, self._loaded = MemoryStore(), False

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        now = datetime.now(UTC)

        def create() -> tuple[WorkflowRun, bool]:
            stored, created = self._store.create_run(run, events, now)
            if created:
                logged = self._store.get_events(stored.run_id)
                self._append(
                    _line(
                        {
                            "op": "create_run",
                            "run": _encode_record(without_logged_args(stored, logged)),
                            "events": [event.to_dict() for event in logged],
                        }
                    )
                )
            return stored, created

        return await self._locked(True, create)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        return await self._locked(False, lambda: self._store.get_run(run_id))

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        return await self._locked(False, lambda: self._store.get_run_by_idempotency_key(key))

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        return await self._locked(
            False, lambda: self._store.list_runs(status, workflow_name, limit, cursor)
        )

    # -- the log ------------------------------------------------------------------------------

    async def commit(self, commit: Commit) -> int:
        now = commit.now or datetime.now(UTC)
        # Encoded before the store changes, so unserializable data fails with nothing changed.
        line = _line({"op": "commit", "commit": _encode_commit(commit, now)})

        def apply() -> int:
            head = self._store.commit(commit, now)
            self._append(line)
            return head

        return await self._locked(True, apply)

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        return await self._locked(
            False, lambda: self._store.get_events(run_id, after_sequence, command_id)
        )

    # -- timers -------------------------------------------------------------------------------

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        def claim() -> list[Timer]:
            timers = self._store.claim_due_timers(now, limit, claim_for)
            if timers:
                self._append(
                    _line(
                        {
                            "op": "claim_timers",
                            "run_ids": [timer.run_id for timer in timers],
                            "claimed_until": (now + claim_for).isoformat(),
                        }
                    )
                )
            return timers

        return await self._locked(True, claim)

    async def get_timer(self, run_id: str) -> Timer | None:
        return await self._locked(False, lambda: self._store.get_timer(run_id))

    # -- leases -------------------------------------------------------------------------------

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        def renew() -> None:
            self._append_leases(
                self._store.renew_leases(run_ids, owner, expires_at), owner, expires_at
            )

        await self._locked(True, renew)

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        def claim() -> list[str]:
            run_ids = self._store.claim_expired_leases(now, owner, expires_at, limit)
            self._append_leases(run_ids, owner, expires_at)
            return run_ids

        return await self._locked(True, claim)

    def _append_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        if run_ids:
            self._append(
                _line(
                    {
                        "op": "lease",
                        "run_ids": run_ids,
                        "owner": owner,
                        "expires_at": expires_at.isoformat(),
                    }
                )
            )

    # -- hooks --------------------------------------------------------------------------------

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        return await self._locked(False, lambda: self._store.get_hook(run_id, hook_id))

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        return await self._locked(False, lambda: self._store.list_hooks(run_id, status))

    # -- schedules ----------------------------------------------------------------------------

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        def create() -> tuple[Schedule, bool]:
            stored, created = self._store.create_schedule(schedule)
            if created:
                self._append(_line({"op": "create_schedule", "schedule": stored.to_dict()}))
            return stored, created

        return await self._locked(True, create)

    async def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        def update() -> Schedule | None:
            stored = self._store.update_schedule(schedule, expected_revision)
            if stored is not None:
                self._append(_line({"op": "update_schedule", "schedule": stored.to_dict()}))
            return stored

        return await self._locked(True, update)

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._locked(False, lambda: self._store.get_schedule(schedule_id))

    async def list_schedules(
        self,
        *,
        workflow_name: str | None = None,
        status: ScheduleStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Schedule]:
        return await self._locked(
            False, lambda: self._store.list_schedules(workflow_name, status, limit, offset)
        )

    async def claim_due_schedules(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=10)
    ) -> list[Schedule]:
        # Polling is frequent and usually finds nothing: look under the shared lock first.
        def due() -> bool:
            poll = self._store.next_schedule_poll()
            return poll is not None and poll <= now

        if not await self._locked(False, due):
            return []

        def claim() -> list[Schedule]:
            schedules = self._store.claim_due_schedules(now, limit, claim_for)
            if schedules:
                self._append(
                    _line(
                        {
                            "op": "claim_schedules",
                            "schedule_ids": [schedule.schedule_id for schedule in schedules],
                            "poll_at": (now + claim_for).isoformat(),
                        }
                    )
                )
            return schedules

        return await self._locked(True, claim)

    # -- step checkpoints ---------------------------------------------------------------------

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        def put() -> None:
            self._store.put_checkpoint(run_id, step_id, data)
            self._append(
                _line({"op": "put_checkpoint", "run_id": run_id, "step_id": step_id, "data": data})
            )

        await self._locked(True, put)

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        return await self._locked(False, lambda: self._store.get_checkpoint(run_id, step_id))

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        def delete() -> None:
            self._store.delete_checkpoint(run_id, step_id)
            self._append(_line({"op": "delete_checkpoint", "run_id": run_id, "step_id": step_id}))

        await self._locked(True, delete)

    async def keep_secret(self, name: str, candidate: str) -> str:
        def keep() -> str:
            stored = self._store.get_checkpoint(SECRETS_RUN, name)
            if stored is not None:
                return stored
            self._store.put_checkpoint(SECRETS_RUN, name, candidate)
            self._append(
                _line(
                    {
                        "op": "put_checkpoint",
                        "run_id": SECRETS_RUN,
                        "step_id": name,
                        "data": candidate,
                    }
                )
            )
            return candidate

        return await self._locked(True, keep)

    # -- locking and catching up --------------------------------------------------------------

    async def _locked(self, exclusive: bool, action: Callable[[], _T]) -> _T:
        """Run ``action`` under the lock, on a store that has caught up with the files.

        Between taking and releasing the lock nothing awaits, so operations of this process
        never interleave either.
        """
        if self._lock_fd is None:
            await self.connect()
        fd = self._lock_fd
        assert fd is not None
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        await retry_while_busy(
            lambda: fcntl.flock(fd, mode),
            lambda exc: isinstance(exc, BlockingIOError),
            what=f"file storage {self.base_path}",
            timeout=self.lock_timeout,
        )
        try:
            self._catch_up(repair=exclusive)
            return action()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _catch_up(self, repair: bool) -> None:
        generation = self._read_generation()
        if not self._loaded or generation != self._generation:
            self._load(generation)
            if repair:
                self._sweep_stale()
        path = self._journal_path(self._generation)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < self._journal_offset:  # cut below what we applied: only after a failed write
            self._load(self._generation)
        if size > self._journal_offset:
            self._replay(path, size, repair)

    def _read_generation(self) -> int:
        try:
            return int((self.base_path / "CURRENT").read_text())
        except FileNotFoundError:
            return 0

    def _load(self, generation: int) -> None:
        self._close_journal()
        self._loaded = False
        snapshot = self.base_path / f"snapshot-{generation}.json"
        if generation == 0:
            self._store = MemoryStore()
        else:
            self._store = MemoryStore.from_tables(_decode_tables(json.loads(snapshot.read_bytes())))
        self._generation, self._journal_offset, self._loaded = generation, 0, True

    def _replay(self, path: Path, size: int, repair: bool) -> None:
        """Apply the complete journal lines from ``_journal_offset`` to ``size``."""
        with path.open("rb") as journal:
            journal.seek(self._journal_offset)
            data = journal.read(size - self._journal_offset)
        complete = data.rfind(b"\n") + 1
        for line in data[:complete].splitlines(keepends=True):
            try:
                self._apply(json.loads(line))
            except Exception as exc:
                self._loaded = False
                raise RuntimeError(
                    f"corrupt journal {path} at byte {self._journal_offset}: {exc!r}"
                ) from exc
            self._journal_offset += len(line)
        if repair and complete < len(data):  # a torn line: its writer died mid-write
            os.truncate(path, self._journal_offset)

    def _apply(self, line: dict[str, Any]) -> None:
        """Redo one journal line on the store (it succeeded on this same state before)."""
        store, op = self._store, line["op"]
        if op == "commit":
            raw = line["commit"]
            store.commit(_decode_commit(raw), _parse_time(raw["now"]))
        elif op == "create_run":
            run = WorkflowRun(**_decode_fields(line["run"], _RUN_TIMES))
            assert run.created_at is not None
            store.create_run(run, [Event.from_dict(e) for e in line["events"]], run.created_at)
        elif op == "schedule_timer":
            store.schedule_timer(line["run_id"], _parse_time(line["fire_at"]))
        elif op == "claim_timers":
            store.set_timer_claims(line["run_ids"], _parse_time(line["claimed_until"]))
        elif op == "lease":
            store.set_leases(line["run_ids"], line["owner"], _parse_time(line["expires_at"]))
        elif op == "put_checkpoint":
            store.put_checkpoint(line["run_id"], line["step_id"], line["data"])
        elif op == "delete_checkpoint":
            store.delete_checkpoint(line["run_id"], line["step_id"])
        elif op == "create_schedule":
            if not store.create_schedule(Schedule.from_dict(line["schedule"]))[1]:
                raise ValueError("the journal creates a schedule that exists")
        elif op == "update_schedule":
            schedule = Schedule.from_dict(line["schedule"])
            if store.update_schedule(schedule, schedule.revision - 1) is None:
                raise ValueError("the journal updates a schedule at a revision it does not have")
        elif op == "claim_schedules":
            store.set_schedule_polls(line["schedule_ids"], _parse_time(line["poll_at"]))
        else:
            raise ValueError(f"unknown journal operation {op!r}")

    # -- writing ------------------------------------------------------------------------------

    def _append(self, data: bytes) -> None:
        """Write one journal line; the store already holds the mutation it records."""
        try:
            fd = self._open_journal()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            # The store is ahead of the disk now: cut the partial line and reload next time.
            self._loaded = False
            with contextlib.suppress(OSError):
                os.truncate(self._journal_path(self._generation), self._journal_offset)
            raise
        self._journal_offset += len(data)
        if self._journal_offset >= self.compact_after_bytes:
            self._compact()

    def _open_journal(self) -> int:
        if self._journal_fd is None:
            path = self._journal_path(self._generation)
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
        return self._journal_fd

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def _journal_path(self, generation: int) -> Path:
        return self.base_path / f"journal-{generation}.jsonl"

    def _compact(self) -> None:
        """Start generation g+1 from a snapshot of the state. Failing here loses nothing."""
        old, new = self._generation, self._generation + 1
        try:
            tables = _encode_tables(self._store.tables())
            _write_atomically(
                self.base_path / f"snapshot-{new}.json",
                json.dumps(tables, separators=_JSON_SEPARATORS).encode(),
            )
            # A journal left by an earlier compaction that crashed before its switch is void.
            os.close(
                os.open(self._journal_path(new), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            )
            _write_atomically(self.base_path / "CURRENT", str(new).encode())  # the switch
        except OSError as exc:
            logger.warning("file storage {}: compaction failed: {!r}", self.base_path, exc)
            return
        self._close_journal()
        self._generation, self._journal_offset = new, 0
        del old
        self._sweep_stale()

    def _sweep_stale(self) -> None:
        """Remove the files of generations other than the current one (a compaction killed
        between its switch and its clean-up, or before its switch, left them) and temporary
        files. Only under the exclusive lock: nobody is compacting meanwhile."""
        current = self._generation
        for path in self.base_path.iterdir():
            name = path.name
            stale = name.endswith(".tmp")
            for prefix, suffix in (("snapshot-", ".json"), ("journal-", ".jsonl")):
                if name.startswith(prefix) and name.endswith(suffix):
                    number = name[len(prefix) : -len(suffix)]
                    stale = stale or (number.isdigit() and int(number) != current)
            if stale:
                path.unlink(missing_ok=True)


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=_JSON_SEPARATORS) + "\n").encode()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- JSON codec ---------------------------------------------------------------------------------


def _time_fields(cls: type[WorkflowRun] | type[Hook]) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if "datetime" in str(f.type))


_RUN_TIMES = _time_fields(WorkflowRun)
_HOOK_TIMES = _time_fields(Hook)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _format_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _encode_record(record: WorkflowRun | Hook) -> dict[str, Any]:
    encoded: dict[str, Any] = {}
    for f in fields(record):
        name = f.name
        if isinstance(record, Hook) and name in ("token", "token_hash"):
            if name == "token_hash":  # the journal's "token" key holds the digest (file format 1)
                encoded["token"] = record.token_hash
            continue  # the token itself is never stored
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Enum):
            value = value.value
        encoded[name] = value
    return encoded


def _decode_fields(raw: dict[str, Any], times: frozenset[str]) -> dict[str, Any]:
    return {
        name: _parse_time(value) if name in times and value is not None else value
        for name, value in raw.items()
    }


def _decode_hook(raw: dict[str, Any]) -> Hook:
    decoded = _decode_fields(raw, _HOOK_TIMES)
    decoded["token_hash"] = decoded.pop("token")
    return Hook(**decoded)


def _encode_commit(commit: Commit, now: datetime) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "run_id": commit.run_id,
        "events": [event.to_dict() for event in commit.events],
        "expected_sequence": commit.expected_sequence,
        "now": now.isoformat(),
        "status": commit.status.value if commit.status is not None else None,
        "result": commit.result,
        "error": commit.error,
        "started_at": _format_time(commit.started_at),
        "completed_at": _format_time(commit.completed_at),
        "recovery_attempts": commit.recovery_attempts,
        "hooks_created": [_encode_record(hook) for hook in commit.hooks_created],
        "hook_received": commit.hook_received,
        "hook_expired": commit.hook_expired,
    }
    # Absent when empty: journals written before children and chains read the same.
    if commit.runs_created:
        raw["runs_created"] = [
            {
                "run": _encode_record(without_logged_args(run, events)),
                "events": [event.to_dict() for event in events],
            }
            for run, events in commit.runs_created
        ]
    if commit.continued_to_run_id is not None:
        raw["continued_to_run_id"] = commit.continued_to_run_id
    if commit.hooks_disposed:
        raw["hooks_disposed"] = commit.hooks_disposed
    if commit.notices:
        raw["notices"] = [
            {
                "run_id": notice.run_id,
                "event": notice.event.to_dict(),
                "wake_at": _format_time(notice.wake_at),
                "follow_chain": notice.follow_chain,
            }
            for notice in commit.notices
        ]
    # An absent key means keep (leave as is); null means clear.
    timer, lease = commit.timer_change, commit.lease_change
    if timer.change is not Change.KEEP:
        raw["timer"] = _format_time(timer.fire_at)
    if lease.change is Change.SET:
        assert lease.expires_at is not None
        raw["lease"] = [lease.owner, lease.expires_at.isoformat()]
    elif lease.change is Change.CLEAR:
        raw["lease"] = None
    return raw


def _decode_commit(raw: dict[str, Any]) -> Commit:
    received = raw["hook_received"]
    commit = Commit(
        run_id=raw["run_id"],
        events=[Event.from_dict(event) for event in raw["events"]],
        expected_sequence=raw["expected_sequence"],
        status=RunStatus(raw["status"]) if raw["status"] is not None else None,
        result=raw["result"],
        error=raw["error"],
        started_at=_parse_time(raw["started_at"]) if raw["started_at"] else None,
        completed_at=_parse_time(raw["completed_at"]) if raw["completed_at"] else None,
        recovery_attempts=raw["recovery_attempts"],
        hooks_created=[_decode_hook(hook) for hook in raw["hooks_created"]],
        hook_received=(received[0], received[1]) if received else None,
        hook_expired=raw["hook_expired"],
        runs_created=[
            (
                WorkflowRun(**_decode_fields(entry["run"], _RUN_TIMES)),
                [Event.from_dict(event) for event in entry["events"]],
            )
            for entry in raw.get("runs_created", ())
        ],
        continued_to_run_id=raw.get("continued_to_run_id"),
        hooks_disposed=list(raw.get("hooks_disposed", ())),
        notices=[
            Notice(
                entry["run_id"],
                Event.from_dict(entry["event"]),
                _parse_time(entry["wake_at"]) if entry["wake_at"] else None,
                bool(entry.get("follow_chain", True)),
            )
            for entry in raw.get("notices", ())
        ],
    )
    timer = raw.get("timer", UNSET)
    commit.timer = _parse_time(timer) if isinstance(timer, str) else timer
    lease = raw.get("lease", UNSET)
    commit.lease = (lease[0], _parse_time(lease[1])) if isinstance(lease, list) else lease
    return commit


def _encode_tables(tables: StoreTables) -> dict[str, Any]:
    return {
        "runs": [
            {"run": _encode_record(run), "events": [event.to_dict() for event in events]}
            for run, events in tables.runs
        ],
        "timers": [
            [run_id, fire_at.isoformat(), _format_time(claimed_until)]
            for run_id, (fire_at, claimed_until) in tables.timers.items()
        ],
        "hooks": [_encode_record(hook) for hook in tables.hooks],
        "checkpoints": [
            [run_id, step_id, data] for (run_id, step_id), data in tables.checkpoints.items()
        ],
        "schedules": [
            [schedule.to_dict(), _format_time(poll_at)]
            for schedule, poll_at in tables.schedules.values()
        ],
    }


def _decode_tables(raw: dict[str, Any]) -> StoreTables:
    return StoreTables(
        runs=[
            (
                WorkflowRun(**_decode_fields(entry["run"], _RUN_TIMES)),
                [Event.from_dict(event) for event in entry["events"]],
            )
            for entry in raw["runs"]
        ],
        timers={
            run_id: (_parse_time(fire_at), _parse_time(claimed) if claimed else None)
            for run_id, fire_at, claimed in raw["timers"]
        },
        hooks=[_decode_hook(hook) for hook in raw["hooks"]],
        checkpoints={(run_id, step_id): data for run_id, step_id, data in raw["checkpoints"]},
        schedules={
            schedule.schedule_id: (schedule, _parse_time(poll_at) if poll_at else None)
            for schedule, poll_at in (
                (Schedule.from_dict(record), poll_at)
                for record, poll_at in raw.get("schedules", ())  # (older snapshots: none)
            )
        },
    )


__all__ = ["FileStorageBackend"]
