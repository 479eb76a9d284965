"""A run whose workflow the workers lack does not hang on Celery: a worker records why on the
run, and the caller's ``get_workflow_result`` raises that at once."""

from __future__ import annotations

import pytest

from pyworkflow import BlockedKind, WorkflowNotFoundError, get_workflow_result, step, workflow
from tests.celery.conftest import Client, until


@step(name="celery_blocked_only_here")
async def only_here() -> str:
    return "never on a worker"


@workflow(name="celery_blocked_unknown_to_workers")
async def unknown_to_workers() -> str:
    # Defined in the test process only: the workers import tests.celery.workflows, not this.
    return await only_here()


async def test_a_workflow_the_workers_lack_blocks_its_run_and_the_caller_hears_it(
    client: Client,
) -> None:
    run_id = await client.start(unknown_to_workers)

    async def blocked() -> object:
        return (await client.run(run_id)).blocked

    found = await until(blocked, "a worker to record the block")
    assert found.kind is BlockedKind.WORKFLOW_NOT_FOUND
    assert "celery_blocked_unknown_to_workers" in found.message
    assert "import the module" in found.message
    with pytest.raises(WorkflowNotFoundError, match="is blocked"):
        await get_workflow_result(run_id, timeout=60, storage=client.storage)
    run = await client.run(run_id)
    assert run.status.value == "suspended" and run.lease_owner is None  # not failed, not leased
