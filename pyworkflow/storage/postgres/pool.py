"""The PostgreSQL backend's connections: a small pool of its own, and the retries around a call.

- **No session state.** Every statement names its tables with their schema (never ``SET
  search_path``) and the migration lock is transaction-scoped, so a connection is ready for any
  call as soon as the previous one returns. That lets the backend keep its own small pool
  (``Connections``): asyncpg's ``Pool`` resets each connection it gets back (one more round
  trip) and spends tens of microseconds of CPU per call on bookkeeping. It also makes the backend
  work behind pgbouncer's transaction pooling; ``pgbouncer=True`` (or ``?pgbouncer=true`` in the
  DSN) turns asyncpg's statement cache off, because a named prepared statement does not survive
  a change of server connection (each statement then costs two round trips: an unnamed prepare
  and the execution).
- **Errors.** A server that cannot be reached (or refuses the credentials) is one
  ``ConfigurationError`` naming the URL with its password replaced by ``***``, never a chain of
  asyncpg internals. Failing to get a connection (refused, ``too many connections``, the server
  starting up) is retried with a short backoff for up to ``retry_for`` seconds: nothing was sent.
  A connection lost in the middle of a call, or a deadlock, is retried the same way when running
  the call again is harmless (reads, idempotent writes, claims, whose lost result is a claimant
  that died); a ``create_run`` or ``commit`` that lost its connection may have been applied, so
  that error is raised (a ``ConfigurationError`` saying so) instead.

This module must never know what a call does (no schema, no statement, no record: it runs the
callables it is given), never keep session state on a connection, never run a call again after
losing its connection unless the caller said that is harmless (``retry=True``), and never import
the engine or a runtime.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from pyworkflow.model.exceptions import ConfigurationError

_T = TypeVar("_T")
Work = Callable[[Any], Awaitable[_T]]  # a call on one connection

_CONNECT_TIMEOUT = 10.0

# Failing to get a connection for one of these is worth another try a moment later.
TRANSIENT_CONNECT_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# The statement was rolled back as a whole: running it again is always safe.
ROLLED_BACK_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def _connection_lost(exc: BaseException, conn: Any) -> bool:
    return isinstance(exc, TRANSIENT_CONNECT_ERRORS) or conn.is_closed()


def reason(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


def unreachable(where: str, exc: BaseException) -> ConfigurationError:
    """The error for a server at ``where`` (shown without its password) that cannot be reached."""
    return ConfigurationError(f"cannot connect to PostgreSQL at {where}: {reason(exc)}")


class _Backoff:
    """Sleeps between tries: 5 ms doubling up to 200 ms, for at most ``budget`` seconds in all."""

    def __init__(self, budget: float) -> None:
        self.delay = 0.005
        self.deadline = asyncio.get_running_loop().time() + budget

    async def wait(self) -> bool:
        """Sleep before the next try; False (without sleeping) when the budget is spent."""
        if asyncio.get_running_loop().time() + self.delay > self.deadline:
            return False
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.2)
        return True


class Connections:
    """The backend's connections to the server: a minimal pool.

    Why not ``asyncpg.Pool``: it spends about 45 µs of CPU on each acquire and release (a proxy
    object per acquire, a shielded task per release), more than the engine spends on a whole step.
    Our connections keep no session state, so one is ready for the next call as soon as a call on
    it returns; one a call may have left mid-protocol (cancelled, timed out, closed, still in a
    transaction) is closed instead of reused. Idle connections stay open until ``close``.

    Invariant: ``size`` counts the connections open or being opened, at most ``max_size``;
    ``idle`` holds the open ones no call uses, the most recently released last; ``waiters`` are
    the acquires waiting for a connection (given one) or for room to open one (given None).
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], max_size: int) -> None:
        self.connect, self.max_size = connect, max_size
        self.size = 0
        self.idle: list[Any] = []
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.closed = False

    async def acquire(self) -> Any:
        while True:
            idle = self.idle
            while idle:
                conn = idle.pop()
                if not conn.is_closed():
                    return conn
                self.size -= 1  # the server closed it while it was idle
            if self.size < self.max_size:
                self.size += 1
                try:
                    return await self.connect()
                except BaseException:
                    self._discarded()
                    raise
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed over as it was cancelled
                    self._hand_on(waiter.result())
                raise
            if conn is not None:
                return conn

    def release(self, conn: Any, *, reusable: bool = True) -> None:
        if not reusable or self.closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._discarded()
        else:
            self._hand_on(conn)

    def _hand_on(self, conn: Any | None) -> None:
        """Give ``conn`` (or, for None, room to open one) to the first waiter, else keep it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)

    def _discarded(self) -> None:
        self.size -= 1
        self._hand_on(None)

    async def close(self) -> None:
        """Close the idle connections; the ones in use are closed when they are released."""
        self.closed = True
        idle, self.idle = self.idle, []
        self.size -= len(idle)
        await asyncio.gather(*(conn.close(timeout=5) for conn in idle), return_exceptions=True)

    def terminate(self) -> None:
        """Close everything at once, without a goodbye (the event loop that opened it is gone)."""
        self.closed = True
        for conn in self.idle:
            conn.terminate()
        self.idle.clear()


async def open_connection(
    dsn: str | None,
    *,
    host: str | None,
    port: int | None,
    user: str | None,
    password: str | None,
    database: str | None,
    pgbouncer: bool,
) -> Any:
    """A new connection to the server; without a statement cache behind pgbouncer."""
    return await asyncpg.connect(
        dsn,
        host=host,
        port=port,
        user=user,
        password=password,
        database=database,
        statement_cache_size=0 if pgbouncer else 100,
        timeout=_CONNECT_TIMEOUT,
    )


async def open_min_size(pool: Connections, min_size: int, where: Callable[[], str]) -> None:
    """Open ``min_size`` connections up front (the migration's is one of them)."""
    held: list[Any] = []
    try:
        while len(held) < min_size:
            held.append(await pool.acquire())
    except Exception as exc:
        pool.terminate()
        raise unreachable(where(), exc) from None
    finally:
        for conn in held:
            pool.release(conn)


async def run_on(
    pool: Connections,
    work: Work[_T],
    *,
    retry: bool,
    retry_for: float,
    where: Callable[[], str],
) -> _T:
    """Run ``work`` on a connection of ``pool``, trying again for up to ``retry_for`` seconds
    when that is harmless (see the module docstring): ``retry=False`` for calls that must not run
    twice when their outcome is unknown. ``where()`` names the server for error messages."""
    backoff: _Backoff | None = None
    while True:
        try:
            conn = await pool.acquire()
        except Exception as exc:
            if not isinstance(exc, TRANSIENT_CONNECT_ERRORS):
                raise unreachable(where(), exc) from None
            failure: Exception = exc  # nothing was sent: another try is harmless
        else:
            try:
                result = await work(conn)
            except BaseException as exc:
                # A statement the server refused leaves its connection ready for the next.
                pool.release(conn, reusable=isinstance(exc, asyncpg.PostgresError))
                if isinstance(exc, ROLLED_BACK_ERRORS):
                    failure = exc  # the statement was undone as a whole
                elif isinstance(exc, Exception) and _connection_lost(exc, conn):
                    if not retry:
                        raise ConfigurationError(
                            f"lost the connection to PostgreSQL at {where()} in the"
                            " middle of a write, which may or may not have been applied:"
                            f" {reason(exc)}"
                        ) from None
                    failure = exc
                else:
                    raise
            else:
                pool.release(conn)
                return result
        backoff = backoff or _Backoff(retry_for)
        if not await backoff.wait():
            if isinstance(failure, ROLLED_BACK_ERRORS):
                raise failure
            raise unreachable(where(), failure) from None


__all__ = [
    "ROLLED_BACK_ERRORS",
    "TRANSIENT_CONNECT_ERRORS",
    "Connections",
    "Work",
    "open_connection",
    "open_min_size",
    "reason",
    "run_on",
    "unreachable",
]
