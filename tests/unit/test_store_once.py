"""Each recorded value is stored once: a run's arguments in its ``workflow.started`` (the row
says ``IN_LOG`` and every backend fills them in on read), a hook's payload in its
``hook.received`` (not in the hook's row), a completed run's result in its record (the ending
event mentions a large one by digest), a child's arguments in the child's log, a dispatched
step's arguments in its first attempt's ``step.started``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pyworkflow import (
    EventType,
    RetryableError,
    configure,
    get_hook_token,
    get_workflow_events,
    get_workflow_result,
    get_workflow_run,
    hook,
    resume_hook,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow.api import start
from pyworkflow.model.events import INLINE_RESULT_LIMIT, mentions
from pyworkflow.model.schemas import HookStatus
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import Env

SIZE = 300_000
ARG = "argmark-" + "a" * SIZE
PAYLOAD = "paymark-" + "p" * SIZE
RESULT = "resmark-" + "r" * SIZE


@workflow(name="once_flow")
async def once_flow(value: str, *, tag: str = "t") -> str:
    received = await hook("bulk")
    assert received == PAYLOAD and value == ARG and tag == "t"
    return RESULT


async def _run_to_the_end(env_storage: Any, runtime: Any, drain: Any) -> str:
    run_id = await start(once_flow, ARG, tag="t", runtime=runtime, storage=env_storage)
    await drain()
    [pending] = await env_storage.list_hooks(run_id)
    token = await get_hook_token(run_id, pending.hook_id, storage=env_storage)
    await resume_hook(token, PAYLOAD, storage=env_storage)
    await drain()
    return run_id


async def test_every_backend_keeps_each_value_once_and_reads_them_back(env: Env) -> None:
    run_id = await _run_to_the_end(env.storage, env.runtime, env.settle)
    assert await get_workflow_result(run_id, storage=env.storage) == RESULT
    # What storage returns is whole: the arguments come back from the log.
    stored = await env.storage.get_run(run_id)
    assert json.loads(stored.input_args) == [ARG] and json.loads(stored.input_kwargs) == {
        "tag": "t"
    }
    assert json.loads(stored.result) == RESULT
    listed, _ = await env.storage.list_runs(limit=10)
    assert [json.loads(run.input_args) for run in listed if run.run_id == run_id] == [[ARG]]
    public = await get_workflow_run(run_id, storage=env.storage)
    assert public is not None and json.loads(public.input_args) == [ARG]
    # The log: arguments and payload in full, the result mentioned by its digest.
    events = await get_workflow_events(run_id, storage=env.storage)
    by_type = {event.type: event for event in events}
    assert ARG in by_type[EventType.WORKFLOW_STARTED].data["args"]
    assert PAYLOAD in by_type[EventType.HOOK_RECEIVED].data["payload"]
    ending = by_type[EventType.WORKFLOW_COMPLETED].data
    assert "result" not in ending and mentions(ending, "result", stored.result) is True
    assert mentions(ending, "result", '"something else"') is False
    # The hook's row says received, without a copy of the payload.
    [received] = await env.storage.list_hooks(run_id)
    assert received.status is HookStatus.RECEIVED and received.payload is None


async def test_a_small_result_is_still_in_the_ending_event(env: Env) -> None:
    @workflow(name="small_result")
    async def small() -> dict[str, int]:
        return {"n": 1}

    run_id = await env.start(small)
    await env.settle()
    events = await get_workflow_events(run_id, storage=env.storage)
    assert events[-1].data == {"result": '{"n":1}'} or json.loads(events[-1].data["result"]) == {
        "n": 1
    }
    assert len(events[-1].data["result"]) <= INLINE_RESULT_LIMIT


@pytest.mark.parametrize("kind", ["sqlite", "file"])
async def test_the_bytes_on_disk_hold_each_value_once(kind: str, tmp_path: Path) -> None:
    """What a 300 KB argument, payload and result cost on disk: one copy each (before: the
    argument in the row and the event, the payload in the hook row and the event, the result in
    the row and the event)."""
    configure(hook_key="k" * 32)
    storage: Any = (
        SQLiteStorageBackend(tmp_path / "db.sqlite")
        if kind == "sqlite"
        else FileStorageBackend(tmp_path / "files")
    )
    runtime = LocalRuntime()

    async def drain() -> None:
        await runtime.drain(storage)

    try:
        run_id = await _run_to_the_end(storage, runtime, drain)
        assert await get_workflow_result(run_id, storage=storage) == RESULT
    finally:
        await runtime.shutdown()
        await storage.close()
    if kind == "file":
        written = b"".join(p.read_bytes() for p in (tmp_path / "files").rglob("*") if p.is_file())
        counts = {m: written.count(m.encode()) for m in ("argmark-", "paymark-", "resmark-")}
        assert counts == {"argmark-": 1, "paymark-": 1, "resmark-": 1}
        return
    db = sqlite3.connect(tmp_path / "db.sqlite")
    columns = {
        "runs": "SELECT input_args || input_kwargs || coalesce(result, '') FROM runs",
        "events": "SELECT data FROM events",
        "hooks": "SELECT coalesce(payload, '') || token FROM hooks",
    }
    counts = {}
    for table, sql in columns.items():
        texts = [str(text) for (text,) in db.execute(sql).fetchall()]
        for marker in ("argmark-", "paymark-", "resmark-"):
            if found := sum(text.count(marker) for text in texts):
                counts[(table, marker)] = found
    assert counts == {
        ("events", "argmark-"): 1,
        ("events", "paymark-"): 1,
        ("runs", "resmark-"): 1,
    }
    db.execute("VACUUM")
    db.close()
    assert (tmp_path / "db.sqlite").stat().st_size < 3 * SIZE * 1.25


@workflow(name="once_child")
async def once_child(value: str) -> int:
    return len(value)


@workflow(name="once_parent")
async def once_parent() -> int:
    return int(await start_child_workflow(once_child, ARG))


async def test_a_child_s_arguments_live_in_the_child_s_log(env: Env) -> None:
    run_id = await env.start(once_parent)
    await env.run_until_done(run_id)
    assert await get_workflow_result(run_id, storage=env.storage) == len(ARG)
    parent_log = await get_workflow_events(run_id, storage=env.storage)
    [started] = [e for e in parent_log if e.type is EventType.CHILD_WORKFLOW_STARTED]
    assert "args" not in started.data and "args_sha256" in started.data
    child = await env.storage.get_run(started.data["child_run_id"])
    assert json.loads(child.input_args) == [ARG]
    child_log = await get_workflow_events(child.run_id, storage=env.storage)
    assert ARG in child_log[0].data["args"]


calls: list[int] = []


@step(max_retries=3, retry_delay=1)
async def flaky_bulk(value: str) -> int:
    calls.append(len(value))
    if len(calls) < 3:
        raise RetryableError("not yet")
    return len(value)


@workflow(name="once_steps")
async def once_steps() -> int:
    return int(await flaky_bulk(ARG))


async def test_a_dispatched_step_s_arguments_are_in_its_first_attempt_only(
    dispatched_env: Env,
) -> None:
    env = dispatched_env
    calls.clear()
    run_id = await env.start(once_steps)
    await env.run_until_done(run_id)
    assert await get_workflow_result(run_id, storage=env.storage) == len(ARG)
    assert calls == [len(ARG)] * 3  # every attempt got the arguments
    started = [
        e.data
        for e in await get_workflow_events(run_id, storage=env.storage)
        if e.type is EventType.STEP_STARTED
    ]
    assert len(started) == 3 and ARG in started[0]["args"]
    assert all("args" not in data and "args_sha256" in data for data in started[1:])


def test_a_later_attempt_takes_the_first_attempt_s_arguments_only_when_they_match() -> None:
    from pyworkflow.core.exceptions import CorruptHistoryError
    from pyworkflow.engine.attempts import step_inputs
    from pyworkflow.model.events import Event, mention

    big, other = json.dumps(["x" * 2000]), json.dumps(["y" * 2000])

    def started(attempt: int, **data: Any) -> Event:
        return Event("r", EventType.STEP_STARTED, {"attempt": attempt, **data}, sequence=attempt)

    first = started(1, args=big, kwargs="{}")
    later = started(2, **mention("args", big), **mention("kwargs", "{}"))
    assert step_inputs(first, [first, later]) == (big, "{}")
    assert step_inputs(later, [first, later]) == (big, "{}")
    changed = started(2, **mention("args", other), **mention("kwargs", "{}"))
    with pytest.raises(CorruptHistoryError, match="not the ones this attempt mentions"):
        step_inputs(changed, [first, changed])
    with pytest.raises(CorruptHistoryError, match="no attempt has them"):
        step_inputs(later, [later])
