"""The Redis backend's connections through Redis Sentinel: the master found, and found again.

``SentinelConnections`` is ``RedisConnections`` for a ``sentinel://`` URL (the form is in
``pyworkflow.utils.sentinel``). To connect, it asks the sentinels in turn
``SENTINEL get-master-addr-by-name <name>`` and uses the first address one knows; the sentinel
that answered is asked first next time. Every connection it opens asks the server its ``ROLE``
after the handshake, so a reconnect never lands on a master that has since been demoted.

After a failover a call meets a dead master (refused, reset, no reply in time) or a demoted one
(``READONLY``; or ``NOREPLICAS`` from a master that lost the replicas its
``min-replicas-to-write`` asks for). That call fails with the ``ConfigurationError`` an
unreachable ``redis://`` server gives, every idle connection is dropped, and the next call asks
the sentinels again, reconnects and greets the new master. Nothing is retried, not even here: a
write whose reply was lost may have been applied, so the engine sees an outage, and its
conditional commits make its own retry safe. Calls that were in flight on the old master fail the
same way; their connections are closed instead of going back to the idle list.

No sentinel answering, or none knowing the master's name, is one ``ConfigurationError`` naming
the URL (without passwords), raised after one pass over the sentinels.

This module must never know what is stored and never retry a command; the ``redis://`` fast path
(``connection``) never passes through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.storage.redis.connection import Command, GreetingCheck, RedisConnections, pack
from pyworkflow.utils.sentinel import address, parse_sentinel_url
from pyworkflow.utils.urls import shown_url

SENTINEL_TIMEOUT = 1.0  # seconds one sentinel has to answer before the next one is asked

Address = tuple[str, int]


def _shown(where: Address) -> str:
    return address(*where)


def _demoted(exc: ResponseError) -> bool:
    """Whether a refusal says the server is no longer a master that can take writes."""
    return isinstance(exc, ReadOnlyError) or str(exc).startswith("NOREPLICAS")


async def _connect_to_master(conn: Connection) -> None:
    """redis-py's handshake (AUTH, SELECT), then ``ROLE``: a server no longer master is refused."""
    await conn.on_connect()
    await conn.send_packed_command(pack(("ROLE",)), check_health=False)
    role = await conn.read_response()
    if not role or role[0] != "master":
        raise RedisConnectionError(
            f"{_shown((conn.host, conn.port))} is a replica now, no longer the master"
        )


class SentinelConnections(RedisConnections):
    """The connections to the master the sentinels of a ``sentinel://`` URL name (module doc).

    Constructing parses the URL (a malformed one is a ``ConfigurationError`` at once) and does no
    I/O.
    """

    def __init__(self, url: str, greeting: list[Command], check: GreetingCheck) -> None:
        super().__init__(url, greeting, check)
        self._sentinel = parse_sentinel_url(url)
        # The sentinels in the order they are asked: the last one that answered first.
        self._order: list[Address] = list(self._sentinel.sentinels)
        # Where the connections of the current pool go (set just before the pool is made).
        self._master: Address | None = None
        if self._sentinel.socket_timeout is not None:
            self._reply_timeout = self._sentinel.socket_timeout

    async def connect(self) -> None:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            return
        self._master = await self._find_master()
        await super().connect()

    def _new_pool(self) -> ConnectionPool:
        """A pool whose connections go to the master just found (and check it still is one)."""
        assert self._master is not None
        host, port = self._master
        url = self._sentinel
        return ConnectionPool(
            host=host,
            port=port,
            db=url.db,
            username=url.username,
            password=url.password,
            decode_responses=True,
            socket_timeout=None,  # the deadline is kept by ``_request`` (see ``connection``)
            redis_connect_func=_connect_to_master,
        )

    async def call(self, *command: str | int) -> Any:
        """Send one command and return its reply; after a failover, one ``ConfigurationError``.

        A master out of reach or demoted also drops every idle connection, so the next call asks
        the sentinels again (module docstring). Nothing is retried.
        """
        pool = self._pool
        try:
            return await self._request(pack(command))
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            error = self._unreachable(exc)
        except ResponseError as exc:
            if not _demoted(exc):
                raise
            error = self._unreachable(exc)
        if pool is None or self._pool is pool:  # (not a pool a newer call already found)
            await self.close()
        raise error  # outside the handler: one error, without redis-py's chain

    def _unreachable(self, exc: BaseException) -> ConfigurationError:
        reason = str(exc) or f"no reply within {self._reply_timeout:g}s"
        where = f" (the master at {_shown(self._master)})" if self._master is not None else ""
        return ConfigurationError(
            f"cannot use Redis at {shown_url(self.url)}{where}: {reason}; the sentinels are asked"
            " for the master again on the next call"
        )

    # -- discovery ----------------------------------------------------------------------------

    async def _find_master(self) -> Address:
        """Ask each sentinel in turn where the master is; the first that knows is believed."""
        unaware: list[str] = []  # answered, but know no master of that name
        failures: list[str] = []  # did not answer, or refused the question
        for sentinel in list(self._order):
            try:
                reply = await self._ask(sentinel)
            except (RedisError, OSError, TimeoutError) as exc:
                reason = str(exc) or f"no reply within {SENTINEL_TIMEOUT:g}s"
                failures.append(f"{_shown(sentinel)}: {reason}")
                continue
            if not reply:
                unaware.append(_shown(sentinel))
                continue
            self._order.remove(sentinel)
            self._order.insert(0, sentinel)
            return str(reply[0]), int(reply[1])
        name = self._sentinel.master_name
        if unaware:
            reason = f"no sentinel knows a master named {name!r} (asked {', '.join(unaware)})"
            if failures:
                reason += f"; no answer from {'; '.join(failures)}"
        else:
            reason = f"no sentinel answered ({'; '.join(failures)})"
        raise ConfigurationError(f"cannot use Redis at {shown_url(self.url)}: {reason}")

    async def _ask(self, sentinel: Address) -> Any:
        """``SENTINEL get-master-addr-by-name`` on one sentinel: [host, port], or None."""
        url = self._sentinel
        host, port = sentinel
        conn = Connection(
            host=host,
            port=port,
            username=url.sentinel_username,
            password=url.sentinel_password,
            decode_responses=True,
            socket_timeout=None,
        )
        try:
            async with asyncio.timeout(SENTINEL_TIMEOUT):
                question = ("SENTINEL", "get-master-addr-by-name", url.master_name)
                await conn.send_packed_command(pack(question), check_health=False)
                return await conn.read_response()
        finally:
            await conn.disconnect()


__all__ = ["SENTINEL_TIMEOUT", "SentinelConnections"]
