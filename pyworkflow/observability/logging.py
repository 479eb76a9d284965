"""Logging setup. PyWorkflow logs through loguru with ``run_id``/``step_id`` bound.

The library is silent until ``configure_logging`` is called (loguru's own default handler prints
everything at DEBUG, so the package is disabled at import instead of spamming applications).
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger

_sink_ids: list[int] = []
_default_removed = False

logger.disable("pyworkflow")


def _only_pyworkflow(record: Any) -> bool:
    return str(record["name"]).startswith("pyworkflow")


def _not_pyworkflow(record: Any) -> bool:
    return not _only_pyworkflow(record)


def configure_logging(
    level: str = "INFO",
    log_file: str | None = None,
    json_logs: bool = False,
    show_context: bool = True,
) -> None:
    """Send PyWorkflow's logs to stderr (and ``log_file``) at ``level``; call again to change.

    loguru's own default handler (stderr, everything at DEBUG) would print the library's
    lines a second time: the first call replaces it by the same handler without them (the
    application's own lines still go there)."""
    for sink_id in _sink_ids:
        logger.remove(sink_id)
    _sink_ids.clear()
    global _default_removed
    if not _default_removed:
        _default_removed = True
        try:
            logger.remove(0)
        except ValueError:
            pass  # the application removed it already: its handlers are its own
        else:
            logger.add(sys.stderr, level="DEBUG", filter=_not_pyworkflow)
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
