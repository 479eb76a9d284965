"""Code written for pyworkflow-engine 0.4 runs unchanged: step context helpers, context_class,
0.4's YAML storage keys, and logging that prints each line once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyworkflow import (
    StepContext,
    get_step_context,
    set_step_context,
    step,
    workflow,
)
from pyworkflow.config import ConfigurationError, configure_from_yaml, get_storage
from pyworkflow.storage.config import config_to_storage
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import Env

REPO_ROOT = Path(__file__).resolve().parents[2]


class Tenant(StepContext):
    tenant: str
    region: str = "eu"
    retries: int = 0


def test_step_context_helpers() -> None:
    ctx = Tenant(tenant="acme")
    moved = ctx.with_updates(region="us", retries=2)
    assert (moved.tenant, moved.region, moved.retries) == ("acme", "us", 2)
    assert ctx.region == "eu"  # the original is unchanged (contexts are immutable)
    assert ctx.to_dict() == {"tenant": "acme", "region": "eu", "retries": 0}
    assert Tenant.from_dict(moved.to_dict()) == moved
    with pytest.raises(ValueError):
        ctx.with_updates(retries="many")  # validated like the fields


@step(name="compat_where")
async def where() -> str:
    ctx = get_step_context()
    assert isinstance(ctx, Tenant)
    return f"{ctx.tenant}@{ctx.region}"


@workflow(name="compat_tenant_flow", context_class=Tenant)
async def tenant_flow(name: str) -> str:
    await set_step_context(Tenant(tenant=name))  # awaited, as 0.4 code does
    return await where()


class Other(StepContext):
    value: int = 0


@workflow(name="compat_wrong_context", context_class=Tenant)
async def wrong_context() -> str:
    try:
        set_step_context(Other())
    except TypeError as exc:
        return str(exc)
    return "accepted"


async def test_context_class_is_accepted_and_enforced(env: Env) -> None:
    assert await env.start(tenant_flow, "acme") is not None
    runs, _ = await env.storage.list_runs()
    from pyworkflow.serialization import loads

    assert loads(runs[0].result) == "acme@eu"
    await env.start(wrong_context)
    runs, _ = await env.storage.list_runs(workflow_name="compat_wrong_context")
    assert "takes a Tenant step context" in loads(runs[0].result)
    with pytest.raises(TypeError, match="StepContext subclass"):

        @workflow(name="compat_bad_context", context_class=dict)
        async def bad() -> None:
            return None


def test_yaml_with_04_storage_keys(tmp_path: Path) -> None:
    config = tmp_path / "pyworkflow.config.yaml"
    config.write_text(f"storage:\n  type: sqlite\n  base_path: {tmp_path / 'data'}\n")
    configure_from_yaml(config)
    storage = get_storage()
    assert isinstance(storage, SQLiteStorageBackend)
    assert Path(storage.db_path) == tmp_path / "data" / "pyworkflow.db"
    file_db = config_to_storage({"type": "sqlite", "base_path": str(tmp_path / "x.db")})
    assert isinstance(file_db, SQLiteStorageBackend)
    assert Path(file_db.db_path) == tmp_path / "x.db"


def test_an_unknown_storage_setting_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown sqlite storage setting.*'dbpath'"):
        config_to_storage({"type": "sqlite", "dbpath": str(tmp_path / "typo.db")})


def test_configure_logging_prints_each_line_once_and_keeps_the_application_s() -> None:
    code = (
        "from loguru import logger\n"
        "from pyworkflow import configure_logging\n"
        "logger.info('app before')\n"
        "configure_logging('INFO')\n"
        "logger.bind().patch(lambda r: r.update(name='pyworkflow.x')).info('hello once')\n"
        "logger.info('app after')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert done.stderr.count("hello once") == 1, done.stderr
    assert "app before" in done.stderr and "app after" in done.stderr, done.stderr
