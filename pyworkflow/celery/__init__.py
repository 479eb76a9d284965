"""The celery runtime: PyWorkflow on Celery workers over Redis (the ``celery`` extra).

- ``celery_app`` — the Celery app (``app.py``): broker, late acks, requeue on worker loss,
  prefetch 1, the queues ``pyworkflow.workflows``, ``pyworkflow.steps``, ``pyworkflow.timers``
  and ``pyworkflow.default``.
- ``CeleryRuntime`` — the ``Runtime`` (``runtime.py``): ``start`` records the run in the caller and
  enqueues it; workers run activations and steps.
- tasks (``tasks.py``), the per-process event loop (``process.py``), the timer loop / sweeper /
  lease renewal (``service.py``), and worker startup and shutdown (``worker.py``).

Importing this package imports Celery and wires the worker signals; nothing in ``core`` or
``engine`` imports it (``pyworkflow.api`` loads ``runtime.py`` only when the celery runtime is
asked for).
"""

from __future__ import annotations

from pyworkflow.celery import tasks as tasks  # registers the tasks
from pyworkflow.celery import worker as worker  # wires the worker-process signals
from pyworkflow.celery.app import QUEUES, CelerySettings, celery_app, configure_app
from pyworkflow.celery.runtime import CeleryRuntime

__all__ = ["QUEUES", "CeleryRuntime", "CelerySettings", "celery_app", "configure_app"]
