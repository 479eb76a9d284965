"""One recorded value has a size limit: warned about past 512 KB, refused past 2 MB (both
configurable), with an error that names the value, at the boundary where it enters."""

from __future__ import annotations

import pytest

from pyworkflow import HookPayloadError, api, configure, hook, step, workflow
from pyworkflow.config import ConfigurationError
from pyworkflow.model.exceptions import SerializationError
from pyworkflow.serialization import dumps, serialize_args, value_limits
from tests.conftest import Env

MB = 1024 * 1024


@step(name="limits_big")
async def big(size: int) -> str:
    return "x" * size


@workflow(name="limits_wf")
async def produce(size: int) -> int:
    return len(await big(size))


@workflow(name="limits_arg")
async def takes(data: str) -> int:
    return len(data)


def test_defaults_and_configuration() -> None:
    assert value_limits() == (512 * 1024, 2 * MB)
    with pytest.raises(SerializationError, match="over the 2.0 MB limit"):
        dumps("x" * (2 * MB + 1), what="result of step big")
    configure(max_value_size=4 * MB)
    assert len(dumps("x" * (3 * MB))) > 3 * MB
    configure(max_value_size=None, warn_value_size=None)
    assert value_limits() == (None, None)
    with pytest.raises(ConfigurationError, match="max_value_size"):
        configure(max_value_size=-1)


def test_a_large_value_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from loguru import logger

    logger.enable("pyworkflow")  # (the library's logging is off until configure_logging)
    handler = logger.add(caplog.handler, level="WARNING", format="{message}")
    try:
        dumps("x" * (600 * 1024), what="result of step big")
    finally:
        logger.remove(handler)
        logger.disable("pyworkflow")
    assert "result of step big is 600 KB as JSON" in caplog.text


def test_arguments_are_checked_each() -> None:
    with pytest.raises(SerializationError, match="positional arguments is 3.0 MB"):
        serialize_args(("x" * (3 * MB),), {})


async def test_a_too_large_start_argument_is_refused_before_anything_is_recorded(
    env: Env,
) -> None:
    with pytest.raises(SerializationError, match="over the 2.0 MB limit"):
        await env.start(takes, "x" * (3 * MB))
    runs, _ = await env.storage.list_runs()
    assert runs == []


async def test_a_too_large_step_result_fails_the_step_clearly(env: Env) -> None:
    with pytest.raises(SerializationError, match="result of step 'limits_big' is 3.0 MB"):
        await env.start(produce, 3 * MB)  # the local runtime re-raises the run's error
    (run,), _ = await env.storage.list_runs()
    assert run.status.value == "failed"
    assert run.error is not None and "over the 2.0 MB limit" in run.error


async def test_a_too_large_hook_payload_is_refused(env: Env) -> None:
    @workflow(name="limits_hook")
    async def waits() -> str:
        return str(await hook("approval"))

    run_id = await env.start(waits)
    await env.settle()
    hooks = await env.storage.list_hooks(run_id)
    token = await api.get_hook_token(run_id, hooks[0].hook_id, storage=env.storage)
    with pytest.raises((SerializationError, HookPayloadError)):
        await api.resume_hook(token, "x" * (3 * MB), storage=env.storage)
