"""Runtimes by name: ``"local"`` is built in; other packages register theirs.

A package registers a runtime under a name with an entry point in the group
``pyworkflow.runtimes`` (the Celery runtime: ``celery = "pyworkflow.celery.runtime:CeleryRuntime"``
in ``pyproject.toml``), or at run time with ``register_runtime``. The name's factory is loaded on
first use, so choosing a runtime imports its package only when it is asked for, and nothing here
names a package above this layer.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.runtime.base import Runtime

ENTRY_POINT_GROUP = "pyworkflow.runtimes"

_factories: dict[str, Callable[[], Runtime]] = {}


def register_runtime(name: str, factory: Callable[[], Runtime]) -> None:
    """Make ``factory()`` the runtime used for ``name`` from now on."""
    _factories[name] = factory


def runtime_factory(name: str) -> Callable[[], Runtime]:
    """The factory registered for ``name``; ``ConfigurationError`` when there is none, or when
    its package cannot be imported here (an optional dependency not installed)."""
    factory = _factories.get(name)
    if factory is not None:
        return factory
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            loaded: Callable[[], Runtime] = entry.load()
        except ImportError as exc:
            raise ConfigurationError(
                f"the {name} runtime is not available ({exc});"
                f" install pyworkflow-engine[{name}]"
            ) from None
        _factories[name] = loaded
        return loaded
    known = sorted({"local", *_factories, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})
    raise ConfigurationError(f"unknown runtime {name!r} (known: {', '.join(known)})")


__all__ = ["ENTRY_POINT_GROUP", "register_runtime", "runtime_factory"]
