"""Durations as users write them: the parser lives in the data model
(``pyworkflow.model.duration``, so that ``ScheduleSpec`` can read ``"5m"``); this path stays."""

from __future__ import annotations

from pyworkflow.model.duration import *  # noqa: F403
from pyworkflow.model.duration import __all__ as __all__
