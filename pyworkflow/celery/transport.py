"""kombu's Redis transport, made to survive losing the broker while tasks are unacknowledged.

Without this, a worker that is waiting for messages (BRPOP) while one of its tasks is still
running — the usual state of a busy prefork or threads worker — dies with ``Unrecoverable error:
AttributeError("'NoneType' object has no attribute 'hostname'")`` when the Redis connection
drops: kombu's first attempt to close the broken channel fails, the connection is detached from
its transport, and the second attempt then tries to requeue the unacknowledged messages through a
connection pool it can no longer build. (``tests/celery/test_faults.py`` stops Redis under busy
workers; with kombu's own transport the prefork worker exits.)

The fix is one guard: once the channel's connection is gone, the requeue on close is skipped. Those
messages are still in Redis's set of unacknowledged messages (if Redis kept them), where any
consumer requeues them after the visibility timeout, and PyWorkflow's timers and leases recover
their runs regardless.

It also reuses one Redis client per connection pool instead of building one per command (see
``Channel._create_client``), which cuts the CPU a message costs. ``app.py`` selects ``Transport``
for ``redis://`` broker URLs and ``SentinelTransport`` (kombu's Sentinel transport with the same
fix and the same client reuse) for ``sentinel://`` ones.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        if client is None and self.channel.connection.client is None:
            self._delivered.clear()  # the connection is gone: the visibility timeout requeues
            return None
        return super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One client per connection pool, not a new one for every command.

        kombu builds a fresh ``redis.Redis`` (and its table of response callbacks) for each
        publish, delivery and acknowledgement; that is a large share of a message's CPU cost.
        redis-py clients are thread-safe and take a pool connection per command, so sharing one
        is equivalent. A new pool (after a reconnect) gets a new client.
        """
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_pyworkflow_client")
        if cached is None or cached[0] is not pool:
            cached = self.__dict__["_pyworkflow_client"] = (pool, super()._create_client())
        return cached[1]


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the master found through the sentinels, and found again after a
    failover, by redis-py's ``SentinelConnectionPool``) with ``Channel``'s fix and client reuse.
    """


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"

__all__ = [
    "SENTINEL_TRANSPORT",
    "TRANSPORT",
    "Channel",
    "QoS",
    "SentinelChannel",
    "SentinelTransport",
    "Transport",
]
