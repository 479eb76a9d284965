"""The storage records lives in ``pyworkflow.model.schemas``; this path stays for code using it.

Everything the model module defines is reachable here (its public names, and any other by
attribute access).
"""

from __future__ import annotations

from typing import Any

from pyworkflow.model import schemas as _model
from pyworkflow.model.schemas import *  # noqa: F403
from pyworkflow.model.schemas import __all__ as __all__


def __getattr__(name: str) -> Any:
    return getattr(_model, name)
