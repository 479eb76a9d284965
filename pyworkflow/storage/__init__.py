"""Durable storage of runs: the ``StorageBackend`` port, its records, and the built-in backends.

The memory, file and SQLite backends need only the standard library and are imported here; the
PostgreSQL and Redis backends need optional client libraries and are imported on first access
(``pyworkflow.storage.PostgresStorageBackend``). Nothing here may import the engine or a runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from pyworkflow.model.schemas import (
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.config import config_to_storage, storage_to_config
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend

# Backends whose client library is an optional extra: attribute -> (module, extra). They are left
# out of ``__all__`` so that ``from pyworkflow.storage import *`` works without the extras.
_OPTIONAL_BACKENDS = {
    "PostgresStorageBackend": ("pyworkflow.storage.postgres", "postgres"),
    "RedisStorageBackend": ("pyworkflow.storage.redis", "redis"),
}


def __getattr__(name: str) -> Any:
    if name not in _OPTIONAL_BACKENDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = _OPTIONAL_BACKENDS[name]
    try:
        backend = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ImportError(f"{name} is not available in this version of pyworkflow") from exc
        raise ImportError(
            f"{name} needs the '{extra}' extra: pip install 'pyworkflow-engine[{extra}]' ({exc})"
        ) from exc
    except ImportError as exc:
        raise ImportError(
            f"{name} needs the '{extra}' extra: pip install 'pyworkflow-engine[{extra}]' ({exc})"
        ) from exc
    globals()[name] = backend
    return backend


__all__ = [
    "Commit",
    "FileStorageBackend",
    "Hook",
    "HookStatus",
    "InMemoryStorageBackend",
    "RunStatus",
    "SQLiteStorageBackend",
    "StorageBackend",
    "Timer",
    "WorkflowRun",
    "config_to_storage",
    "storage_to_config",
]
