"""The event model lives in ``pyworkflow.model.events``; this path stays for code using it.

Everything the model module defines is reachable here (its public names, and any other by
attribute access).
"""

from __future__ import annotations

from typing import Any

from pyworkflow.model import events as _model
from pyworkflow.model.events import *  # noqa: F403
from pyworkflow.model.events import __all__ as __all__


def __getattr__(name: str) -> Any:
    return getattr(_model, name)
