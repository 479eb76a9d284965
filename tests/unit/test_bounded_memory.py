"""Memory that does not only grow: non-durable runs and per-storage services are bounded."""

from __future__ import annotations

from pyworkflow import api, step, workflow
from pyworkflow.api import TRANSIENT_KEEP_FINISHED, get_workflow_result
from pyworkflow.model.exceptions import WorkflowNotFoundError
from pyworkflow.runtime.local import MAX_STORAGES, LocalRuntime
from pyworkflow.storage.memory import InMemoryStorageBackend


@step(name="bounded_payload")
async def payload(n: int) -> str:
    return "x" * 1000 + str(n)


@workflow(name="bounded_wf", durable=False)
async def quick(n: int) -> int:
    return len(await payload(n))


async def test_only_the_latest_finished_non_durable_runs_are_kept() -> None:
    first = await api.start(quick, 0)
    for n in range(1, TRANSIENT_KEEP_FINISHED + 50):
        last = await api.start(quick, n)
    assert await get_workflow_result(last) == 1000 + len(str(TRANSIENT_KEEP_FINISHED + 49))
    store = api._transient_storage()
    runs, _ = await store.list_runs(limit=10 * TRANSIENT_KEEP_FINISHED)
    assert len(runs) == TRANSIENT_KEEP_FINISHED
    try:
        await get_workflow_result(first)
    except WorkflowNotFoundError:
        pass
    else:
        raise AssertionError("the oldest run was kept")


async def test_many_storage_objects_do_not_leave_a_service_each() -> None:
    runtime = LocalRuntime(poll_interval=3600)
    try:
        for n in range(MAX_STORAGES * 4):
            storage = InMemoryStorageBackend()
            await api.start(quick, n, runtime=runtime, storage=storage, durable=True)
        assert len(runtime._engines) <= MAX_STORAGES + 1
        assert len(runtime._services) <= MAX_STORAGES + 1
    finally:
        await runtime.shutdown()


def test_keep_finished_must_be_positive() -> None:
    import pytest

    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="keep_finished"):
            InMemoryStorageBackend(keep_finished=bad)  # type: ignore[arg-type]
