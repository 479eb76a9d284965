"""Fixtures of the storage contract suite: every test runs once per storage implementation.

Each ``BackendKind`` of ``BACKENDS`` has a ``make`` that builds a backend over the storage named
by the test's ``tmp_path`` (a server-backed kind derives a unique schema or key prefix from it with
``namespace_for``). Calling ``make`` twice with one path must give two backend objects over the
same data, as two processes would have. A kind that needs a server names its session fixtures in
``needs`` (``"redis_server"``, ``"postgres_server"``: real servers started by the test session,
never skipped); ``make`` then receives their values after the path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.postgres import PostgresStorageBackend
from pyworkflow.storage.redis import RedisStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import namespace_for


@dataclass(frozen=True)
class BackendKind:
    name: str
    make: Callable[..., StorageBackend]  # (path, *the values of the fixtures in ``needs``)
    durable: bool  # a second backend object on the same storage sees the first one's data
    needs: tuple[str, ...] = ()  # session fixtures (servers) ``make`` takes after the path

    def __str__(self) -> str:
        return self.name


BACKENDS = [
    BackendKind("memory", lambda path: InMemoryStorageBackend(), durable=False),
    BackendKind("file", lambda path: FileStorageBackend(path / "files"), durable=True),
    BackendKind(
        "sqlite", lambda path: SQLiteStorageBackend(path / "db" / "pyworkflow.db"), durable=True
    ),
    BackendKind(
        "redis",
        lambda path, server: RedisStorageBackend(server.url, prefix=namespace_for(path)),
        durable=True,
        needs=("redis_server",),
    ),
    BackendKind(
        "postgres",
        lambda path, server: PostgresStorageBackend(server.dsn, schema=namespace_for(path)),
        durable=True,
        needs=("postgres_server",),
    ),
]
DURABLE_BACKENDS = [kind for kind in BACKENDS if kind.durable]


class Backends:
    """Opens backend objects over one test's storage and closes them all at teardown."""

    def __init__(self, kind: BackendKind, path: Path, servers: tuple[Any, ...] = ()) -> None:
        self.kind, self.path, self.servers = kind, path, servers
        self.opened: list[StorageBackend] = []

    @classmethod
    def for_test(cls, request: pytest.FixtureRequest, path: Path) -> Backends:
        kind: BackendKind = request.param
        return cls(kind, path, tuple(request.getfixturevalue(name) for name in kind.needs))

    def open(self) -> StorageBackend:
        backend = self.kind.make(self.path, *self.servers)
        self.opened.append(backend)
        return backend

    async def close(self) -> None:
        for backend in self.opened:
            await backend.close()


@pytest.fixture(params=BACKENDS, ids=str)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageBackend]:
    backends = Backends.for_test(request, tmp_path)
    yield backends.open()
    await backends.close()


@pytest.fixture(params=DURABLE_BACKENDS, ids=str)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backends]:
    """Backend objects over one durable storage, as separate processes would hold them."""
    backends = Backends.for_test(request, tmp_path)
    yield backends
    await backends.close()
