"""The celery runtime without a broker: settings, the Celery config, queues, and ``start``'s order.

Publishing is replaced by a recorder, so nothing here needs Redis or a worker; the real thing
runs in ``tests/celery``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from pyworkflow import api, configure, configure_from_yaml, step, workflow
from pyworkflow.celery import QUEUES, CeleryRuntime, CelerySettings
from pyworkflow.celery.app import (
    ACTIVATE_TASK,
    STEP_QUEUE,
    STEP_TASK,
    WORKFLOW_QUEUE,
    celery_config,
)
from pyworkflow.celery.queue import BrokerQueue
from pyworkflow.celery.worker import WorkerStartupError, parse_queues
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.storage import InMemoryStorageBackend, SQLiteStorageBackend
from pyworkflow.utils.urls import redact_url


def test_settings_come_from_configuration_then_the_environment_then_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PYWORKFLOW_CELERY_BROKER", raising=False)
    monkeypatch.delenv("PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT", raising=False)
    assert CelerySettings.from_config().broker_url == "redis://localhost:6379/0"
    assert CelerySettings.from_config().visibility_timeout == 3600

    monkeypatch.setenv("PYWORKFLOW_CELERY_BROKER", "redis://env-host:6379/1")
    monkeypatch.setenv("PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT", "120")
    assert CelerySettings.from_config().broker_url == "redis://env-host:6379/1"
    assert CelerySettings.from_config().visibility_timeout == 120

    config = tmp_path / "pyworkflow.config.yaml"
    config.write_text(
        "runtime: celery\n"
        "lease_ttl: 12\n"
        "timer_poll_interval: 0.5\n"
        "module: myapp.workflows\n"
        "celery:\n"
        "  broker: redis://yaml-host:6379/2\n"
        "  visibility_timeout: 7200\n"
    )
    configure_from_yaml(config)
    settings = CelerySettings.from_config()
    assert settings.broker_url == "redis://yaml-host:6379/2"
    assert settings.visibility_timeout == 7200
    assert (settings.lease_ttl, settings.timer_poll_interval) == (12, 0.5)
    configure(celery_broker="redis://explicit:6379/3")
    assert CelerySettings.from_config().broker_url == "redis://explicit:6379/3"


@pytest.mark.parametrize("value", ["an hour", "0", "-5", "nan"])
def test_a_visibility_timeout_that_is_not_a_positive_number_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PYWORKFLOW_CELERY_VISIBILITY_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match=f"visibility timeout .* above 0, got '{value}'"):
        CelerySettings.from_config()


def test_the_celery_config_acks_late_requeues_lost_work_and_reserves_one_message() -> None:
    conf = celery_config(CelerySettings(broker_url="redis://h:1/0", visibility_timeout=9))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_serializer"] == "json" and conf["accept_content"] == ["json"]
    assert [q.name for q in conf["task_queues"]] == list(QUEUES)
    assert QUEUES == (
        "pyworkflow.workflows",
        "pyworkflow.steps",
        "pyworkflow.timers",
        "pyworkflow.default",
    )
    assert conf["task_routes"][ACTIVATE_TASK] == {"queue": WORKFLOW_QUEUE}
    assert conf["task_routes"][STEP_TASK] == {"queue": STEP_QUEUE}
    transport = conf["broker_transport_options"]
    assert transport["visibility_timeout"] == 9
    assert transport["unacked_restore_interval"] == 3  # a lost worker's messages come back soon


def test_queues_default_to_all_and_unknown_ones_are_refused() -> None:
    assert parse_queues(None) == list(QUEUES)
    assert parse_queues("pyworkflow.steps, pyworkflow.timers") == [
        "pyworkflow.steps",
        "pyworkflow.timers",
    ]
    with pytest.raises(WorkerStartupError, match="unknown queue.*steps2"):
        parse_queues("pyworkflow.steps2")


def test_broker_urls_in_messages_hide_the_password() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:s3cret@host/0") == "redis://user:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


@step(name="celery_unit_step")
async def unit_step() -> int:
    return 1


@workflow(name="celery_unit_flow")
async def unit_flow() -> int:
    return await unit_step()


class Recorder:
    """Stands in for the broker: remembers each message and what storage held at that moment."""

    def __init__(self, storage: Any = None) -> None:
        self.sent: list[tuple[str, tuple[Any, ...], str]] = []
        self.storage = storage
        self.seen_in_storage: list[bool] = []
        self.fail = False

    async def send(self, task: str, args: tuple[Any, ...], queue: str) -> None:
        if self.storage is not None:
            self.seen_in_storage.append(await self.storage.get_run(args[0]) is not None)
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((task, args, queue))


def _runtime(recorder: Recorder) -> CeleryRuntime:
    runtime = CeleryRuntime(settings=CelerySettings(broker_url="redis://nowhere:1/0"), app=Celery())
    runtime.queue.publisher = recorder  # type: ignore[assignment]
    return runtime


async def test_start_writes_the_run_then_enqueues_then_returns_its_id(tmp_path: Path) -> None:
    storage = SQLiteStorageBackend(str(tmp_path / "runs.db"))
    recorder = Recorder(storage)
    runtime = _runtime(recorder)
    try:
        run_id = await api.start(unit_flow, runtime=runtime, storage=storage)
        assert recorder.sent == [(ACTIVATE_TASK, (run_id,), WORKFLOW_QUEUE)]
        assert recorder.seen_in_storage == [True]  # the run existed before its message did
        events = await storage.get_events(run_id)
        assert [e.type.value for e in events] == ["workflow.started"]  # nothing ran in the caller
        again = await api.start(unit_flow, runtime=runtime, storage=storage, idempotency_key="k")
        same = await api.start(unit_flow, runtime=runtime, storage=storage, idempotency_key="k")
        assert again == same and len(recorder.sent) == 2  # the second start enqueues nothing
    finally:
        await storage.close()


async def test_start_returns_a_stored_run_even_when_the_broker_refuses(tmp_path: Path) -> None:
    storage = SQLiteStorageBackend(str(tmp_path / "runs.db"))
    recorder = Recorder(storage)
    recorder.fail = True
    try:
        run_id = await api.start(unit_flow, runtime=_runtime(recorder), storage=storage)
        run = await storage.get_run(run_id)
        assert run is not None and run.lease_owner is not None  # the sweeper will start it
    finally:
        await storage.close()


async def test_the_celery_runtime_refuses_storage_its_workers_cannot_see() -> None:
    with pytest.raises(ConfigurationError, match="storage its workers share"):
        await api.start(unit_flow, runtime=_runtime(Recorder()), storage=InMemoryStorageBackend())


async def test_a_step_outcome_continues_its_run_in_the_same_worker() -> None:
    recorder = Recorder()
    queue = BrokerQueue(recorder)  # type: ignore[arg-type]
    with queue.continuation("run_a") as then:
        await queue.enqueue_activation("run_a")  # left to the caller: no message
        await queue.enqueue_activation("run_b")  # another run: published
        await queue.enqueue_step("run_a", "step:x:1", 1)
    assert then.requested
    assert recorder.sent == [
        (ACTIVATE_TASK, ("run_b",), WORKFLOW_QUEUE),
        (STEP_TASK, ("run_a", "step:x:1", 1), STEP_QUEUE),
    ]
    await queue.enqueue_activation("run_a")  # outside the continuation: published
    assert recorder.sent[-1] == (ACTIVATE_TASK, ("run_a",), WORKFLOW_QUEUE)


def test_the_configured_runtime_name_celery_builds_a_celery_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYWORKFLOW_RUNTIME", "celery")
    assert isinstance(api.get_runtime(), CeleryRuntime)


def test_redis_brokers_use_the_transport_that_survives_a_lost_connection() -> None:
    from types import SimpleNamespace

    from pyworkflow.celery.transport import QoS

    assert celery_config(CelerySettings(broker_url="redis://h:1/0"))["broker_transport"] == (
        "pyworkflow.celery.transport:Transport"
    )
    assert celery_config(CelerySettings(broker_url="amqp://h//"))["broker_transport"] is None
    # kombu detaches a connection from its transport before its second attempt to close a
    # broken channel: requeueing then must not try to build a connection pool from nothing.
    channel = SimpleNamespace(connection=SimpleNamespace(client=None), do_restore=False)
    qos = QoS(channel, 1)
    qos._delivered["tag"] = object()
    assert qos.restore_unacked() is None
    assert not qos._delivered


@step(force_local=True)
async def slow_local_step() -> str:
    await asyncio.sleep(0.25)  # longer than the lease below: only renewals keep it
    return "ran"


@workflow()
async def slow_local_flow() -> str:
    return await slow_local_step()


async def test_resume_in_the_caller_renews_the_lease_while_a_local_step_runs(
    tmp_path: Path,
) -> None:
    storage = SQLiteStorageBackend(str(tmp_path / "runs.db"))
    settings = CelerySettings(broker_url="redis://nowhere:1/0", lease_ttl=0.1)
    runtime = CeleryRuntime(settings=settings, app=Celery())
    runtime.queue.publisher = Recorder(storage)  # type: ignore[assignment]
    try:
        run_id = await api.start(slow_local_flow, runtime=runtime, storage=storage)
        expiries: list[object] = []

        async def watch() -> None:
            while True:
                run = await storage.get_run(run_id)
                assert run is not None
                expiries.append(run.lease_expires_at)
                await asyncio.sleep(0.02)

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            assert await api.resume(run_id, runtime=runtime, storage=storage) == "ran"
        finally:
            watcher.cancel()
        held = [at for at in expiries if at is not None]
        # The step outlived three lease terms; the expiry kept moving with it.
        assert len(set(held)) >= 3, held
    finally:
        await storage.close()
