"""The ``pyworkflow`` command (click): one module per command group.

``root`` (global options, configuration), ``workflows``, ``runs``, ``hooks``, ``schedules``,
``scheduler``, ``worker`` (Celery, imported only by its commands), ``setup``, ``quickstart``;
``simulate`` comes from ``pyworkflow_testing.cli``. ``_common`` answers errors and holds what the
commands share; ``_output`` prints tables, plain lines and JSON; ``_records`` shapes runs, events
and hooks. The entry point is ``pyworkflow.cli:main``; ``python -m pyworkflow.cli`` runs it too.
"""

from __future__ import annotations

from pyworkflow.cli.root import main

__all__ = ["main"]
