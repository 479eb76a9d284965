"""The exceptions live in ``pyworkflow.model.exceptions``; this path stays for code using it.

Everything the model module defines is reachable here (its public names, and any other by
attribute access).
"""

from __future__ import annotations

from typing import Any

from pyworkflow.model import exceptions as _model
from pyworkflow.model.exceptions import *  # noqa: F403
from pyworkflow.model.exceptions import __all__ as __all__


def __getattr__(name: str) -> Any:
    return getattr(_model, name)
