"""Virtual time for user code: ``datetime.now()`` and ``time.time()`` in steps see the simulation.

While a simulation runs, the modules that define its steps and workflows get a ``datetime`` and a
``time`` whose clocks read the simulation's virtual time — but only on the simulation's thread;
every other thread keeps the real clock. Only names bound in those modules' globals are swapped
(``import time``, ``import datetime``, ``from datetime import datetime``), and they are put back
when the simulation pauses. Code elsewhere (libraries, the engine) is left alone: the engine gets
its time from the ``Clock`` port anyway.
"""

from __future__ import annotations

import datetime as _datetime
import sys
import threading
import time as _time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_REAL_DATETIME = _datetime.datetime
_REAL_DATE = _datetime.date


class _Warp:
    """Which thread is simulated, and what time it is there (aware UTC)."""

    thread: int | None = None
    now: Callable[[], _datetime.datetime] | None = None


def _virtual_now() -> _datetime.datetime | None:
    if _Warp.now is not None and threading.get_ident() == _Warp.thread:
        return _Warp.now()
    return None


class _DatetimeMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _REAL_DATETIME)


class VirtualDatetime(_REAL_DATETIME, metaclass=_DatetimeMeta):
    """``datetime.datetime`` whose ``now``/``utcnow``/``today`` read virtual time when simulated."""

    @classmethod
    def now(cls, tz: _datetime.tzinfo | None = None) -> Any:
        virtual = _virtual_now()
        if virtual is None:
            return _REAL_DATETIME.now(tz)
        return virtual.astimezone(tz) if tz is not None else virtual.replace(tzinfo=None)

    @classmethod
    def utcnow(cls) -> Any:
        virtual = _virtual_now()
        return _REAL_DATETIME.utcnow() if virtual is None else virtual.replace(tzinfo=None)

    @classmethod
    def today(cls) -> Any:
        return cls.now()


def _virtual_time() -> float:
    virtual = _virtual_now()
    return _time.time() if virtual is None else virtual.timestamp()


def _virtual_time_ns() -> int:
    virtual = _virtual_now()
    return _time.time_ns() if virtual is None else int(virtual.timestamp() * 1_000_000_000)


def _proxy(module: types.ModuleType, overrides: dict[str, Any]) -> types.ModuleType:
    proxy = types.ModuleType(module.__name__, module.__doc__)
    proxy.__dict__.update(module.__dict__)
    proxy.__dict__.update(overrides)
    return proxy


_DATETIME_PROXY = _proxy(_datetime, {"datetime": VirtualDatetime})
_TIME_PROXY = _proxy(_time, {"time": _virtual_time, "time_ns": _virtual_time_ns})
_SWAPS: dict[int, Any] = {
    id(_REAL_DATETIME): VirtualDatetime,
    id(_datetime): _DATETIME_PROXY,
    id(_time): _TIME_PROXY,
}


@contextmanager
def warped(module_names: set[str], now: Callable[[], _datetime.datetime]) -> Iterator[None]:
    """Swap the clocks of ``module_names`` for virtual ones on this thread, for the block."""
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    for name in module_names:
        module = sys.modules.get(name)
        if module is None or name.startswith(("pyworkflow.", "pyworkflow_testing.")):
            continue
        namespace = vars(module)
        for attr, value in list(namespace.items()):
            replacement = _SWAPS.get(id(value))
            if replacement is not None:
                swapped.append((namespace, attr, value))
                namespace[attr] = replacement
    _Warp.thread, _Warp.now = threading.get_ident(), now
    try:
        yield
    finally:
        _Warp.thread, _Warp.now = None, None
        for namespace, attr, value in swapped:
            namespace[attr] = value


__all__ = ["VirtualDatetime", "warped"]
