"""Redis storage (needs the ``redis`` extra): ``RedisStorageBackend`` and its settings.

The backend is split by concern, so that a connection bug and a semantic bug live apart:

- ``backend``: ``RedisStorageBackend``, the port's calls mapped onto scripts and reads;
- ``scripts``: the Lua scripts every write is, and running them by SHA1;
- ``codec``: the key layout, and records <-> hash fields and script arguments;
- ``connection``: the connections to the server and the protocol, written by hand;
- ``sentinel``: for ``sentinel://`` URLs, the master found through Redis Sentinel, and found
  again after a failover.

This module only re-exports; it must never hold code of its own.
"""

from __future__ import annotations

from pyworkflow.storage.redis.backend import DEFAULT_PREFIX, DEFAULT_URL, RedisStorageBackend
from pyworkflow.storage.redis.codec import LAYOUT_VERSION
from pyworkflow.storage.redis.connection import MAX_IDLE_CONNECTIONS, REPLY_TIMEOUT
from pyworkflow.storage.redis.sentinel import SENTINEL_TIMEOUT

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "LAYOUT_VERSION",
    "MAX_IDLE_CONNECTIONS",
    "REPLY_TIMEOUT",
    "SENTINEL_TIMEOUT",
    "RedisStorageBackend",
]
