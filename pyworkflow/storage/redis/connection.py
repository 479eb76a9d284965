"""The Redis backend's connections: a plain list of idle connections and the protocol, by hand.

redis-py parses the URL and makes the connections (TLS, auth, database, RESP version), but
``RedisConnections`` keeps its idle connections in a plain list and writes the protocol itself,
because redis-py's pool and command layer cost several times the round trip on the hot path (see
``RedisConnections._request``). A server that cannot be reached, or does not answer within the
reply timeout (``REPLY_TIMEOUT``, or ``socket_timeout`` in the URL), is one ``ConfigurationError``
naming the URL without its password, raised at once: nothing is retried, since a write whose
reply was lost may have been applied. Idle connections the server closed (a restart) are
reconnected before use, so a restarted server is used again without an error.

This module must never know what is stored: no key names, scripts or records (the backend hands
it the greeting to send on connect and how to check the replies), and it must never retry a
command. It imports nothing of pyworkflow but its exceptions and URL display.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.utils.urls import shown_url

REPLY_TIMEOUT = 5.0  # seconds; a ``socket_timeout`` in the URL replaces it
# Connections are opened on demand, one per concurrent call; this many are kept when idle.
MAX_IDLE_CONNECTIONS = 32

Command = tuple[str | int, ...]
# Checks the replies to the greeting: None to accept the server, or the error to refuse it with.
GreetingCheck = Callable[[list[Any]], ConfigurationError | None]


def pack(command: Command) -> list[bytes]:
    """A command in RESP, the Redis protocol: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return parts


async def _closed_or_dirty(conn: AbstractConnection) -> bool:
    """Whether an idle connection was closed by the server or holds an unread reply."""
    try:
        if _HAS_CAN_READ:
            return bool(await conn.can_read())
        return bool(await conn.can_read_destructive())  # redis-py before 8
    except RedisConnectionError:
        return True


_HAS_CAN_READ = hasattr(AbstractConnection, "can_read")


class RedisConnections:
    """The connections to one Redis server, opened on demand and kept in the running event loop.

    Constructing does no I/O. The first call (or ``connect``) opens a connection and sends the
    ``greeting`` on it in one trip; ``check`` reads the replies and may refuse the server.
    """

    def __init__(self, url: str, greeting: list[Command], check: GreetingCheck) -> None:
        self.url = url
        self._greeting = greeting
        self._check = check
        self._pool: ConnectionPool | None = None
        self._idle: list[AbstractConnection] = []  # connected (or to reconnect) and unused
        self._loop: asyncio.AbstractEventLoop | None = None  # where the connections live
        self._reply_timeout = REPLY_TIMEOUT

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return
        if self._loop is not loop:
            # Connections belong to the event loop that opened them; after another
            # ``asyncio.run`` that loop is gone, so its connections are dropped, not reused.
            self._pool, self._idle = None, []
        pool = self._new_pool()
        conn = pool.make_connection()
        try:
            await self._greet(conn)
        except BaseException:
            await conn.disconnect()
            raise
        if self._pool is not None and self._loop is loop:  # another task connected meanwhile
            await conn.disconnect()
            return
        self._pool, self._idle, self._loop = pool, [conn], loop

    def _new_pool(self) -> ConnectionPool:
        """redis-py's pool: parses the URL (TLS, auth, database) and makes our connections."""
        try:
            pool = ConnectionPool.from_url(self.url, decode_responses=True, socket_timeout=None)
        except ValueError as exc:
            raise ConfigurationError(f"malformed Redis URL {shown_url(self.url)}: {exc}") from None
        # redis-py waits for a reply with ``asyncio.wait_for``, a task per read; this layer
        # keeps the deadline itself (``asyncio.timeout``), which costs a timer handle.
        kwargs = pool.connection_kwargs
        self._reply_timeout = float(kwargs.get("socket_timeout") or REPLY_TIMEOUT)
        kwargs["socket_timeout"] = None
        return pool

    async def _greet(self, conn: AbstractConnection) -> None:
        """Send the greeting on a new connection and check the replies: one trip."""
        commands = self._greeting
        try:
            async with asyncio.timeout(self._reply_timeout):
                await conn.send_packed_command([part for c in commands for part in pack(c)])
                replies = [await conn.read_response() for _ in commands]
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, ResponseError) as exc:
            error = self._unreachable(exc)
        else:
            refusal = self._check(replies)
            if refusal is None:
                return
            error = refusal
        raise error  # outside the handler: one error, without redis-py's chain

    async def close(self) -> None:
        idle, self._pool, self._idle = self._idle, None, []
        if self._loop is asyncio.get_running_loop():
            for conn in idle:
                await conn.disconnect()
        self._loop = None

    def _unreachable(self, exc: BaseException) -> ConfigurationError:
        reason = str(exc) or f"no reply within {self._reply_timeout:g}s"
        return ConfigurationError(f"cannot use Redis at {shown_url(self.url)}: {reason}")

    async def call(self, *command: str | int) -> Any:
        """Send one command and return its reply; a server out of reach is a ConfigurationError.

        Nothing is retried: a write whose reply was lost may have been applied, and only the
        caller knows whether sending it again is safe.
        """
        try:
            return await self._request(pack(command))
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            error = self._unreachable(exc)
        raise error  # outside the handler: one error, without redis-py's chain

    async def _request(self, packet: list[bytes]) -> Any:
        """One exchange on an idle connection (or a new one), which goes back to the idle list.

        redis-py's own pool and command layer cost several times the round trip itself on the
        hot path, so this layer keeps a plain list of idle connections: asyncio runs one task
        at a time, so popping and appending need no lock. An idle connection the server closed
        (a restart, an idle timeout) is reconnected before use; one that failed or was cancelled
        mid-exchange has been disconnected by redis-py and reconnects when next used.
        """
        if self._pool is None or self._loop is not asyncio.get_running_loop():
            await self.connect()
        assert self._pool is not None
        idle = self._idle
        conn = idle.pop() if idle else self._pool.make_connection()
        try:
            async with asyncio.timeout(self._reply_timeout):
                if conn.is_connected and await _closed_or_dirty(conn):
                    await conn.disconnect()
                await conn.send_packed_command(packet, check_health=False)
                return await conn.read_response()
        finally:
            if idle is self._idle and len(idle) < MAX_IDLE_CONNECTIONS:
                idle.append(conn)
            else:  # closed meanwhile, or enough are idle already
                await conn.disconnect()
