"""PyWorkflow's Redis transport (``pyworkflow/celery/transport.py``) against a real Redis.

A task that finishes after its worker reconnected acknowledges its message on the channel it was
delivered on, closed by then. kombu's own transport raises ``AttributeError`` there, and Celery
stops the worker with ``Unrecoverable error``; ours drops the acknowledgement and leaves the
message to the visibility timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.message import Message

from pyworkflow.celery.transport import TRANSPORT
from tests import servers

pytestmark = pytest.mark.integration

QUEUE = Queue("pyworkflow-transport-test", Exchange("pyworkflow-transport-test"), "t")


@contextlib.contextmanager
def _delivered(
    redis_server: servers.RedisServer, transport: str | None, db: int
) -> Iterator[tuple[Connection, Message]]:
    """A connection and one message it delivered and has not acknowledged."""
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    connection = Connection(url, transport=transport)
    try:
        with connection.Producer() as producer:
            producer.publish({"n": 1}, exchange=QUEUE.exchange, routing_key="t", declare=[QUEUE])
        message = connection.SimpleQueue(QUEUE).get(timeout=10)  # (no_ack is False by default)
        assert message.payload == {"n": 1}
        yield connection, message
    finally:
        connection.release()


def _reconnect(connection: Connection, message: Message) -> None:
    """What a worker's reconnect leaves behind when the old Redis is gone: the old channel closed
    without requeuing its unacknowledged message (the requeue cannot reach Redis)."""
    message.channel.do_restore = False
    connection.close()


def _redis(redis_server: servers.RedisServer, db: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=redis_server.port, db=db)


def _unacked(redis_server: servers.RedisServer, db: int) -> int:
    with _redis(redis_server, db) as client:
        return int(client.hlen("unacked"))


@pytest.mark.parametrize("settle", ["ack", "reject", "requeue"])
def test_a_message_settled_after_its_channel_closed_stays_for_the_visibility_timeout(
    redis_server: servers.RedisServer, settle: str
) -> None:
    db = 5
    with _redis(redis_server, db) as client:
        client.flushdb()
    with _delivered(redis_server, TRANSPORT, db) as (connection, message):
        channel = message.channel
        assert _unacked(redis_server, db) == 1
        _reconnect(connection, message)
        assert channel.connection is None
        if settle == "ack":
            message.ack()
        else:
            message.reject(requeue=settle == "requeue")
        assert message.acknowledged
        assert not channel.qos._delivered or all(
            tag in channel.qos._dirty for tag in channel.qos._delivered
        )
    # Left where the visibility timeout finds it (Redis's set of unacknowledged messages).
    assert _unacked(redis_server, db) == 1


def test_kombus_own_transport_would_stop_the_worker_there(
    redis_server: servers.RedisServer,
) -> None:
    """The failure the transport exists for is real (if kombu fixes it, this says so)."""
    db = 6
    with _redis(redis_server, db) as client:
        client.flushdb()
    with _delivered(redis_server, None, db) as (connection, message):
        _reconnect(connection, message)
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'client'"):
            message.ack()
