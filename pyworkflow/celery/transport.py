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

The same guard covers a task that finishes *after* the worker reconnected: its late
acknowledgement (or rejection) goes to the channel it was delivered on, which is closed by then
and has no connection to build a Redis client from. kombu raises ``AttributeError("'NoneType'
object has no attribute 'client'")``, which Celery does not count as a connection error, and the
worker's main process exits with ``Unrecoverable error`` (seen when a Sentinel failover lands
while tasks run: ``tests/celery/test_sentinel_broker.py``). The acknowledgement is dropped
instead: the message stays in the unacknowledged set of the Redis it was delivered from (if that
Redis kept it), and comes back after the visibility timeout to a run that has moved on, which the
engine's leases and its idempotent activations make a no-op.

It also reuses one Redis client per connection pool instead of building one per command (see
``Channel._create_client``), which cuts the CPU a message costs. ``app.py`` selects ``Transport``
for ``redis://`` broker URLs and ``SentinelTransport`` (kombu's Sentinel transport with the same
fix and the same client reuse) for ``sentinel://`` ones.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual


class QoS(kombu_redis.QoS):
    def _connection_gone(self) -> bool:
        """The channel is closed or its connection detached: no Redis client can be built."""
        connection = self.channel.connection
        return connection is None or connection.client is None

    def restore_unacked(self, client: Any = None) -> Any:
        if client is None and self._connection_gone():
            self._delivered.clear()  # the connection is gone: the visibility timeout requeues
            return None
        return super().restore_unacked(client)

    def ack(self, delivery_tag: Any) -> None:
        if self._connection_gone():
            # Delivered on a channel closed since (a reconnect): the visibility timeout requeues.
            virtual.QoS.ack(self, delivery_tag)  # (forgotten here, left in Redis)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._connection_gone():
            virtual.QoS.ack(self, delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)


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
