"""Logging setup. PyWorkflow logs through loguru with ``run_id``/``workflow``/``step_id`` bound.

The library is silent until ``configure_logging`` is called (loguru's own default handler prints
everything at DEBUG, so the package is disabled at import instead of spamming applications).
``configure_logging()`` shows INFO and up: a run's lifecycle (started, resumed, suspended,
completed, failed, cancelled; a step attempt failed or retrying; a hook received; a timer fired),
one line each (``lifecycle``), besides warnings (a blocked run, a storage outage) and errors.
``level="WARNING"`` keeps only those; ``json_logs=True`` writes one JSON object per line.

Lifecycle lines sit on the hot path (several per step), so they are only built when a sink at
INFO or below is configured: one boolean test otherwise.
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger

_sink_ids: list[int] = []
_default_removed = False
# Whether lifecycle lines (INFO) reach a sink: set by configure_logging.
_lifecycle_on = False


def lifecycle(
    message: str,
    *args: Any,
    run_id: str,
    workflow: str | None = None,
    step_id: str | None = None,
) -> None:
    """Log one line of a run's lifecycle at INFO, with the run's ids bound (``extra``)."""
    if not _lifecycle_on:
        return
    extra: dict[str, Any] = {"run_id": run_id}
    if workflow is not None:
        extra["workflow"] = workflow
    if step_id is not None:
        extra["step_id"] = step_id
    logger.bind(**extra).opt(depth=1).info(message, *args)


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
    global _default_removed, _lifecycle_on
    _lifecycle_on = logger.level(level.upper()).no <= logger.level("INFO").no
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


__all__ = ["configure_logging", "lifecycle"]
