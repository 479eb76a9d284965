"""Logging setup. PyWorkflow logs through loguru with ``run_id``/``step_id`` bound.

The library is silent until ``configure_logging`` is called (loguru's own default handler prints
everything at DEBUG, so the package is disabled at import instead of spamming applications).
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger

_sink_ids: list[int] = []

logger.disable("pyworkflow")


def _only_pyworkflow(record: Any) -> bool:
    return str(record["name"]).startswith("pyworkflow")


def configure_logging(
    level: str = "INFO",
    log_file: str | None = None,
    json_logs: bool = False,
    show_context: bool = True,
) -> None:
    """Send PyWorkflow's logs to stderr (and ``log_file``) at ``level``; call again to change."""
    for sink_id in _sink_ids:
        logger.remove(sink_id)
    _sink_ids.clear()
    context = " {extra}" if show_context else ""
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {name} | {message}" + context
    _sink_ids.append(
        logger.add(
            sys.stderr,
            level=level.upper(),
            format=fmt,
            filter=_only_pyworkflow,
            serialize=json_logs,
        )
    )
    if log_file:
        _sink_ids.append(
            logger.add(
                log_file,
                level=level.upper(),
                format=fmt,
                filter=_only_pyworkflow,
                serialize=json_logs,
            )
        )
    logger.enable("pyworkflow")


__all__ = ["configure_logging"]
