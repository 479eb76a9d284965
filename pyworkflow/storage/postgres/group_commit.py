"""Group commit for the PostgreSQL backend: the conditional commits of one event loop turn together.

Conditional commits issued in one turn of the event loop (a process activating many runs at once)
go to the server together, up to ``GROUP_COMMIT_SIZE``: one pipelined ``executemany`` of the same
function call, one transaction, one round trip and one WAL flush for the group. If any call of the
group is refused, the transaction applied none of them and each is sent again alone, so every
commit still succeeds or fails on its own. Rows are locked in run id order. A single run's commit
goes alone, after one loop turn.

``GroupCommit`` is a part of ``PostgresStorageBackend`` (a base class of it), not a backend of its
own: ``commit`` hands it a ``PendingCommit`` whose new head is known in advance.

This module must never let one commit's refusal decide another commit's outcome, never change
what a commit checks or writes (it sends the very call ``commit`` would send alone), never open
or retry a connection itself (every call goes through the backend's ``_run``), and never import
the engine or a runtime.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from pyworkflow.model.events import Event
from pyworkflow.model.schemas import Commit
from pyworkflow.storage.postgres.pool import Work
from pyworkflow.storage.postgres.schema import PostgresStatements, commit_error

_T = TypeVar("_T")

# At most this many commits per group: two half-full groups on two connections keep the server
# busy on one while the client prepares the other (measured: 16 concurrent runs, 2 cores).
GROUP_COMMIT_SIZE = 8


class PendingCommit:
    """A conditional commit waiting for its group's flush; ``done`` resolves when it is known."""

    __slots__ = ("args", "commit", "done", "events", "loop", "now")

    def __init__(
        self,
        commit: Commit,
        events: list[Event],
        now: datetime,
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.commit, self.events, self.now, self.args, self.loop = commit, events, now, args, loop
        self.done: asyncio.Future[None] = loop.create_future()

    def settle(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class GroupCommit:
    """The group commit of a PostgreSQL backend, which sets the state below in its ``__init__``."""

    _sql: PostgresStatements
    # The group the next conditional commits join (None: the next one starts a group); a full
    # group is detached at once, so ``_batch`` never holds more than ``GROUP_COMMIT_SIZE``.
    _batch: list[PendingCommit] | None
    _flushes: set[asyncio.Task[None]]  # the flushes under way (a reference keeps each alive)

    async def _run(self, work: Work[_T], *, retry: bool = True) -> _T:
        """Run ``work`` on a pooled connection (the backend's)."""
        raise NotImplementedError

    def _join_batch(self, pending: PendingCommit) -> None:
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            pending.loop.call_soon(self._start_flush, batch)
        batch.append(pending)
        if len(batch) >= GROUP_COMMIT_SIZE:
            self._batch = None  # full: the next commits start another group, in parallel

    def _start_flush(self, batch: list[PendingCommit]) -> None:
        if self._batch is batch:
            self._batch = None
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[PendingCommit]) -> None:
        """Group commit: the conditional commits issued in one turn of the event loop (one per
        run being activated) go to the server in one pipelined transaction, one round trip and
        one WAL flush for all of them. Each stays the same conditional function call; if one is
        refused, the transaction applied none, and each is sent again alone to find out which
        (a conflict is rare once activations hold their runs' leases). Rows are locked in run id
        order, so two processes' groups cannot deadlock."""
        try:
            if len(batch) > 1:
                batch.sort(key=lambda pending: pending.commit.run_id)
                rows = [pending.args for pending in batch]
                try:
                    await self._run(
                        lambda conn: conn.executemany(self._sql.commit, rows), retry=False
                    )
                except asyncpg.PostgresError:
                    pass  # nothing was applied: one at a time below
                else:
                    for pending in batch:
                        pending.settle(None)
                    return
            for pending in batch:
                await self._commit_alone(pending)
        except BaseException as exc:
            for pending in batch:
                pending.settle(exc)
            if not isinstance(exc, Exception):
                raise

    async def _commit_alone(self, pending: PendingCommit) -> None:
        try:
            await self._run(
                lambda conn: conn.fetchval(self._sql.commit, *pending.args), retry=False
            )
        except asyncpg.PostgresError as exc:
            pending.settle(commit_error(pending.commit, pending.events, pending.now, exc))
        else:
            pending.settle(None)


__all__ = ["GROUP_COMMIT_SIZE", "GroupCommit", "PendingCommit"]
