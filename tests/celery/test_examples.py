"""The Celery counterparts of the examples in ``examples/celery``, run unchanged as a user runs
them: a real worker process importing them, then ``python examples/celery/<name>.py``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.celery.conftest import REPO_ROOT, Cluster, client_of, new_cluster
from tests.integration.test_examples import EXAMPLES, check_output
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def examples_cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    made = new_cluster(
        redis_server,
        tmp_path_factory.mktemp("celery-examples"),
        13,
        modules=tuple(f"examples.celery.{name}" for name in EXAMPLES),
    )
    made.add("x", "prefork")
    made.start("x")
    try:
        yield made
    finally:
        made.stop_all()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_celery_example_runs_unchanged(name: str, examples_cluster: Cluster) -> None:
    async with client_of(examples_cluster) as client:
        await examples_cluster.wait_ready(client.app, "x")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "celery" / f"{name}.py")],
        cwd=examples_cluster.tmp,
        env=examples_cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_output(name, done, examples_cluster.logs())
    assert Path(examples_cluster.db).exists()  # the runs are in the storage the worker shares
