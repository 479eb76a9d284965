"""PostgreSQL storage: the runs of every process that reaches one database, over asyncpg.

One concept per module, so that a connection bug and a semantic bug live in different files:

- ``backend.py``: ``PostgresStorageBackend``, the ``StorageBackend`` port over the modules below.
- ``schema.py``: the tables, the PL/pgSQL commit function (a commit is one round trip), what its
  refusals mean, the statements only PostgreSQL runs, and the migrations.
- ``group_commit.py``: the conditional commits of one event loop turn sent to the server together.
- ``pool.py``: the backend's own connection pool (why not asyncpg's: see there), pgbouncer, and
  which failures are retried.
- ``dsn.py``: the DSN, PyWorkflow's options in its query, and the server as messages show it.

``pyworkflow.storage.config`` loads ``PostgresStorageBackend`` from this package by name.

This package must never import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

# The driver first: importing this package fails without the 'postgres' extra even when one of its
# modules is already loaded (pyworkflow.storage turns that failure into a message naming the extra).
import asyncpg  # noqa: F401

from pyworkflow.storage.postgres.backend import DEFAULT_SCHEMA, PostgresStorageBackend
from pyworkflow.storage.postgres.group_commit import GROUP_COMMIT_SIZE

__all__ = ["DEFAULT_SCHEMA", "GROUP_COMMIT_SIZE", "PostgresStorageBackend"]
