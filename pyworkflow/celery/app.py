"""The Celery app of the celery runtime: broker, delivery guarantees, queues and task names.

Messages carry ids only — a run id, or a run id with a step command id and an attempt number — as
JSON. Everything else is read from storage, which is what makes a redelivered message harmless:
an activation decides from the log, and a step attempt records at most one outcome.

Delivery: tasks are acknowledged late (after they ran), requeued when the worker process running
them is lost, and each worker process reserves one message at a time. Nothing ever rides on a
broker countdown or ETA: sleeps and retry delays are durable timer rows in storage, so the
broker's visibility timeout only bounds how long a *running* task may take before Redis hands its
message to another worker (keep it above your longest step).

Settings come from PyWorkflow's configuration, then the environment, then defaults:

==========================  ==================================  ===========================
setting                     ``configure()`` / YAML ``celery:``  environment
==========================  ==================================  ===========================
broker URL                  ``celery_broker`` / ``broker``      ``PYWORKFLOW_CELERY_BROKER``
visibility timeout (s)      ``celery_visibility_timeout`` /     ``PYWORKFLOW_CELERY_``
                            ``visibility_timeout``              ``VISIBILITY_TIMEOUT``
==========================  ==================================  ===========================

``lease_ttl``, ``timer_poll_interval``, ``event_limit``, ``max_nesting_depth``,
``logical_order`` and ``inline_children`` are the general configuration keys.

The broker is Redis: ``redis://host:6379/0``, or the master a group of Redis Sentinels names,
``sentinel://[:password@]host1:26379,host2:26379/<master_name>[/<db>]`` (the form is in
``pyworkflow.utils.sentinel``; ``_sentinel_broker`` maps it onto what kombu's Sentinel transport
wants).

This module is the celery layer: nothing in ``core`` or ``engine`` may import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu import Queue
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyworkflow.config import get_config
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.utils.sentinel import is_sentinel_url, parse_sentinel_url

DEFAULT_BROKER = "redis://localhost:6379/0"
DEFAULT_VISIBILITY_TIMEOUT = 3600.0

WORKFLOW_QUEUE = "pyworkflow.workflows"
STEP_QUEUE = "pyworkflow.steps"
TIMER_QUEUE = "pyworkflow.timers"
DEFAULT_QUEUE = "pyworkflow.default"
QUEUES = (WORKFLOW_QUEUE, STEP_QUEUE, TIMER_QUEUE, DEFAULT_QUEUE)

ACTIVATE_TASK = "pyworkflow.activate"
STEP_TASK = "pyworkflow.execute_step"
FIRE_TIMERS_TASK = "pyworkflow.fire_timers"
SWEEP_TASK = "pyworkflow.sweep"
TASK_QUEUES = {
    ACTIVATE_TASK: WORKFLOW_QUEUE,
    STEP_TASK: STEP_QUEUE,
    FIRE_TIMERS_TASK: TIMER_QUEUE,
    SWEEP_TASK: DEFAULT_QUEUE,
}


@dataclass(frozen=True, slots=True)
class CelerySettings:
    """What the celery runtime reads from configuration (see the module docstring)."""

    broker_url: str = DEFAULT_BROKER
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    lease_ttl: float = 30.0
    timer_poll_interval: float = 1.0
    event_limit: int = 50_000
    max_nesting_depth: int = 3
    logical_order: bool = True
    inline_children: bool = True
    result_backend: str | None = None

    @classmethod
    def from_config(cls) -> CelerySettings:
        """Configured values (``configure``/YAML) first, then the environment, then defaults."""
        config = get_config()
        extra = config.extra
        broker = (
            extra.get("celery_broker")
            or os.environ.get("PYWORKFLOW_CELERY_BROKER")
            or DEFAULT_BROKER
        )
        visibility = (
            extra.get("celery_visibility_timeout")
            or os.environ.get("PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT")
            or DEFAULT_VISIBILITY_TIMEOUT
        )
        try:
            timeout = float(visibility)
        except (TypeError, ValueError):
            timeout = float("nan")
        if not timeout > 0:  # (also NaN)
            raise ConfigurationError(
                "the Celery visibility timeout (celery_visibility_timeout /"
                f" PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT) must be a number of seconds above 0,"
                f" got {visibility!r}"
            )
        return cls(
            broker_url=str(broker),
            visibility_timeout=timeout,
            lease_ttl=float(config.lease_ttl),
            timer_poll_interval=float(config.timer_poll_interval),
            event_limit=int(config.event_limit),
            max_nesting_depth=int(config.max_nesting_depth),
            logical_order=bool(config.logical_order),
            inline_children=bool(config.inline_children),
            result_backend=extra.get("celery_result_backend"),
        )


def _sentinel_broker(url: str, options: dict[str, Any]) -> str:
    """kombu's form of a ``sentinel://`` broker URL; what its transport needs goes in ``options``.

    kombu's Sentinel transport takes one ``sentinel://[:password@]host:port/<db>`` per sentinel,
    joined with ``;`` (the credentials are the master's), and the master's name and the
    sentinels' own credentials and timeouts as transport options. A malformed URL is a
    ``ConfigurationError``.
    """
    parsed = parse_sentinel_url(url)
    auth = ""
    if parsed.username is not None or parsed.password is not None:
        auth = quote(parsed.username or "", safe="")
        if parsed.password is not None:
            auth += ":" + quote(parsed.password, safe="")
        auth += "@"
    if parsed.socket_timeout is not None:
        options["socket_timeout"] = parsed.socket_timeout
    # The sentinels get the same socket timeouts as the master (kombu gives them none of the
    # master's settings once ``sentinel_kwargs`` is set), and their own credentials. A sentinel
    # that does not answer is passed over at once for the next one: redis-py's own retries (with
    # seconds of backoff) would hold up every search for the master; kombu retries the whole.
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
    }
    if parsed.sentinel_username is not None:
        sentinel_kwargs["username"] = parsed.sentinel_username
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
    options["master_name"] = parsed.master_name
    options["sentinel_kwargs"] = sentinel_kwargs
    return ";".join(f"sentinel://{auth}{where}/{parsed.db}" for where in parsed.addresses())


def celery_config(settings: CelerySettings) -> dict[str, Any]:
    """The Celery settings the runtime relies on (applied by ``configure_app``).

    A malformed ``sentinel://`` broker URL is a ``ConfigurationError``.
    """
    visibility = settings.visibility_timeout
    transport_options: dict[str, Any] = {
        "visibility_timeout": visibility,
        # How often a consumer looks for messages whose worker vanished (SIGKILL, power
        # loss): about a third of the visibility timeout, at most kombu's default of 10 s.
        "unacked_restore_interval": max(1.0, min(10.0, visibility / 3)),
        "unacked_restore_throttle": 1,
        # A broker that vanishes without closing the connection must not hang a publish.
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
    }
    # kombu's Redis transports with a fix and a speed-up (transport.py); others as they are.
    broker_url, transport = settings.broker_url, None
    if broker_url.startswith("redis://"):
        transport = "pyworkflow.celery.transport:Transport"
    elif is_sentinel_url(broker_url):
        broker_url = _sentinel_broker(broker_url, transport_options)
        transport = "pyworkflow.celery.transport:SentinelTransport"
    return {
        "broker_url": broker_url,
        "pyworkflow_broker_url": settings.broker_url,  # as configured, for messages
        "broker_transport_options": transport_options,
        "broker_transport": transport,
        "broker_connection_retry_on_startup": True,
        "result_backend": settings.result_backend,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "worker_send_task_events": False,
        "worker_disable_rate_limits": True,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
        # Optional: `celery beat` can drive timer firing and sweeping too. Workers already run
        # both in-process (pyworkflow.celery.service); these entries only matter if beat runs.
        "beat_schedule": {
            "pyworkflow-fire-timers": {
                "task": FIRE_TIMERS_TASK,
                "schedule": max(settings.timer_poll_interval, 0.5),
                "options": {"expires": 10.0},
            },
            "pyworkflow-sweep": {
                "task": SWEEP_TASK,
                "schedule": max(settings.lease_ttl / 2, 0.5),
                "options": {"expires": max(settings.lease_ttl, 10.0)},
            },
        },
    }


def configure_app(app: Any = None, settings: CelerySettings | None = None) -> Any:
    """Apply ``settings`` (default: from the configuration) to ``app`` (default: ``celery_app``)."""
    target = celery_app if app is None else app
    target.conf.update(celery_config(settings or CelerySettings.from_config()))
    return target


celery_app = Celery(
    "pyworkflow",
    include=["pyworkflow.celery.tasks", "pyworkflow.celery.worker"],
)
configure_app(celery_app)


__all__ = [
    "ACTIVATE_TASK",
    "DEFAULT_QUEUE",
    "FIRE_TIMERS_TASK",
    "QUEUES",
    "STEP_QUEUE",
    "STEP_TASK",
    "SWEEP_TASK",
    "TIMER_QUEUE",
    "WORKFLOW_QUEUE",
    "CelerySettings",
    "celery_app",
    "celery_config",
    "configure_app",
]
