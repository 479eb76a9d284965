"""Fixtures of the storage contract suite: every test runs once per storage implementation.

To run the suite against another backend (PostgreSQL, Redis), add a ``BackendKind`` to
``BACKENDS``: its ``make`` builds a backend over the storage named by the test's ``tmp_path``
(a server-backed factory derives a unique schema, database or key prefix from it and calls
``pytest.skip`` when its server is unreachable). Calling ``make`` twice with one path must give
two backend objects over the same data, as two processes would have.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend


@dataclass(frozen=True)
class BackendKind:
    name: str
    make: Callable[[Path], StorageBackend]
    durable: bool  # a second backend object on the same storage sees the first one's data

    def __str__(self) -> str:
        return self.name


BACKENDS = [
    BackendKind("memory", lambda path: InMemoryStorageBackend(), durable=False),
    BackendKind("file", lambda path: FileStorageBackend(path / "files"), durable=True),
    BackendKind(
        "sqlite", lambda path: SQLiteStorageBackend(path / "db" / "pyworkflow.db"), durable=True
    ),
]
DURABLE_BACKENDS = [kind for kind in BACKENDS if kind.durable]


class Backends:
    """Opens backend objects over one test's storage and closes them all at teardown."""

    def __init__(self, kind: BackendKind, path: Path) -> None:
        self.kind, self.path = kind, path
        self.opened: list[StorageBackend] = []

    def open(self) -> StorageBackend:
        backend = self.kind.make(self.path)
        self.opened.append(backend)
        return backend

    async def close(self) -> None:
        for backend in self.opened:
            await backend.close()


@pytest.fixture(params=BACKENDS, ids=str)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageBackend]:
    backends = Backends(request.param, tmp_path)
    yield backends.open()
    await backends.close()


@pytest.fixture(params=DURABLE_BACKENDS, ids=str)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backends]:
    """Backend objects over one durable storage, as separate processes would hold them."""
    backends = Backends(request.param, tmp_path)
    yield backends
    await backends.close()
