"""The storage contract: what the engine relies on from every ``StorageBackend``.

Every test in the first sections runs against each backend of ``conftest.BACKENDS``; the later
sections cover what only durable backends promise (restarts, several processes on one store),
then SQLite, file and configuration specifics.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    ConfigurationError,
    DuplicateCompletionError,
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    LeaseHeldError,
    RunFinishedError,
    SequenceConflictError,
    WorkflowAlreadyRunningError,
    WorkflowNotFoundError,
)
from pyworkflow.model.schemas import (
    RESERVED_LEASE_PREFIX,
    UNSET,
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage import config_to_storage, storage_to_config
from pyworkflow.storage.base import SCHEMA_VERSION, StorageBackend, StorageBusyError
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.storage.conftest import Backends

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- records ----------------------------------------------------------------------------------


def a_run(run_id: str = "run-1", **changes: Any) -> WorkflowRun:
    changes.setdefault("workflow_name", "checkout")
    changes.setdefault("created_at", T0)
    return WorkflowRun(run_id=run_id, **changes)


def started(run_id: str) -> Event:
    data = {"workflow_name": "checkout", "args": "[]", "kwargs": "{}"}
    return Event(run_id, EventType.WORKFLOW_STARTED, data, timestamp=T0)


def step_started(run_id: str, command_id: str, attempt: int = 1) -> Event:
    data = {"command_id": command_id, "step_name": "charge", "attempt": attempt}
    return Event(run_id, EventType.STEP_STARTED, data, timestamp=T0)


def step_completed(run_id: str, command_id: str, result: str = '"ok"') -> Event:
    data = {"command_id": command_id, "step_name": "charge", "attempt": 1, "result": result}
    return Event(run_id, EventType.STEP_COMPLETED, data, timestamp=T0)


def step_retrying(run_id: str, command_id: str, attempt: int) -> Event:
    data = {"command_id": command_id, "step_name": "charge", "attempt": attempt, "error": "x"}
    return Event(run_id, EventType.STEP_RETRYING, data, timestamp=T0)


def a_hook(run_id: str, hook_id: str = "h1", **changes: Any) -> Hook:
    return Hook(
        hook_id=hook_id,
        run_id=run_id,
        name="approval",
        token_hash=f"{run_id}:{hook_id}:secret",
        command_id=f"hook:approval:{hook_id}",
        created_at=changes.pop("created_at", T0),
        expires_at=changes.pop("expires_at", at(3600)),
        **changes,
    )


def hook_received(run_id: str, hook_id: str = "h1", payload: str = '{"ok":true}') -> Commit:
    data = {"command_id": f"hook:approval:{hook_id}", "hook_id": hook_id, "payload": payload}
    event = Event(run_id, EventType.HOOK_RECEIVED, data, timestamp=at(5))
    return Commit(run_id, [event], now=at(5), hook_received=(hook_id, payload))


async def new_run(backend: StorageBackend, run_id: str = "run-1", **changes: Any) -> WorkflowRun:
    run, created = await backend.create_run(a_run(run_id, **changes), [started(run_id)])
    assert created
    return run


async def set_timer(backend: StorageBackend, run_id: str, fire_at: datetime) -> None:
    """Set a run's timer the way the engine does: with a commit."""
    await backend.commit(Commit(run_id, now=T0, timer=fire_at))


async def with_hook(backend: StorageBackend, run_id: str = "run-1", hook_id: str = "h1") -> None:
    await new_run(backend, run_id)
    await backend.commit(Commit(run_id, now=at(1), hooks_created=[a_hook(run_id, hook_id)]))


async def snapshot(backend: StorageBackend, run_id: str = "run-1") -> dict[str, Any]:
    """Everything storage holds about one run, to check that a failed write changed nothing."""
    return {
        "run": await backend.get_run(run_id),
        "events": [event.to_dict() for event in await backend.get_events(run_id)],
        "timer": await backend.get_timer(run_id),
        "hooks": await backend.list_hooks(run_id),
    }


# -- runs -------------------------------------------------------------------------------------


async def test_create_run_numbers_events_from_one(backend: StorageBackend) -> None:
    later = Event("run-1", EventType.STEP_STARTED, {"command_id": "s1", "attempt": 1})
    run, created = await backend.create_run(a_run(), [started("run-1"), later])

    assert created
    assert run.last_sequence == 2
    assert run.created_at == T0 and run.updated_at == T0
    events = await backend.get_events("run-1")
    assert [(e.sequence, e.event_id, e.run_id) for e in events] == [
        (1, "run-1:1", "run-1"),
        (2, "run-1:2", "run-1"),
    ]
    assert events[0].timestamp == T0
    assert events[1].timestamp == T0  # no timestamp given: the run's creation time
    assert await backend.get_run("run-1") == run


async def test_create_run_defaults_created_at_to_now(backend: StorageBackend) -> None:
    before = datetime.now(UTC)
    run, _ = await backend.create_run(a_run(created_at=None), [])

    assert run.created_at is not None and before <= run.created_at <= datetime.now(UTC)
    assert run.created_at.utcoffset() == timedelta(0)
    assert run.last_sequence == 0
    assert await backend.get_events("run-1") == []


async def test_every_run_field_round_trips(backend: StorageBackend) -> None:
    run = WorkflowRun(
        run_id="run-1",
        workflow_name="checkout",
        status=RunStatus.RUNNING,
        created_at=T0,
        updated_at=at(1),
        started_at=at(0.000001),
        completed_at=at(2.5),
        input_args='[1, "x"]',
        input_kwargs='{"a": 1}',
        result='"done"',
        error="boom",
        idempotency_key="order-7",
        max_duration="1h",
        context={"nested": {"list": [1, 2.5, None, "é"]}},
        recovery_attempts=2,
        max_recovery_attempts=5,
        recover_on_worker_loss=False,
        parent_run_id="parent",
        nesting_depth=1,
        continued_from_run_id="before",
        continued_to_run_id="after",
        last_sequence=99,  # storage decides the head
        lease_owner="worker-1",
        lease_expires_at=at(30),
    )
    stored, _ = await backend.create_run(run, [started("run-1")])

    assert stored == run.copy(last_sequence=1)
    assert await backend.get_run("run-1") == stored
    assert await backend.get_run_by_idempotency_key("order-7") == stored


async def test_event_data_round_trips(backend: StorageBackend) -> None:
    data = {"command_id": "s1", "attempt": 3, "result": '{"x": [1, 2]}', "nested": {"é": [None]}}
    await new_run(backend)
    await backend.commit(Commit("run-1", [Event("run-1", EventType.STEP_STARTED, data)], now=at(1)))

    [_, event] = await backend.get_events("run-1")
    assert event.data == data
    assert event.type is EventType.STEP_STARTED
    assert event.timestamp == at(1)  # no timestamp given: the commit's time


async def test_returned_records_are_copies(backend: StorageBackend) -> None:
    await with_hook(backend)
    run = await backend.get_run("run-1")
    assert run is not None
    run.status = RunStatus.FAILED
    run.context["changed"] = True
    hook = await backend.get_hook("run-1", "h1")
    assert hook is not None
    hook.status = HookStatus.RECEIVED
    hook.metadata["changed"] = True

    again = await backend.get_run("run-1")
    assert again is not None and again.status is RunStatus.PENDING and again.context == {}
    hook_again = await backend.get_hook("run-1", "h1")
    assert hook_again is not None and hook_again.status is HookStatus.PENDING
    assert hook_again.metadata == {}


async def test_create_run_with_a_taken_run_id_fails(backend: StorageBackend) -> None:
    await new_run(backend)
    with pytest.raises(WorkflowAlreadyRunningError):
        await backend.create_run(a_run(workflow_name="other"), [started("run-1")])
    assert len(await backend.get_events("run-1")) == 1


async def test_idempotency_key_returns_the_existing_run(backend: StorageBackend) -> None:
    first = await new_run(backend, "run-1", idempotency_key="order-7")
    again, created = await backend.create_run(
        a_run("run-2", idempotency_key="order-7"), [started("run-2")]
    )

    assert not created
    assert again == first
    assert await backend.get_run("run-2") is None
    assert await backend.get_events("run-2") == []
    assert await backend.get_run_by_idempotency_key("order-7") == first
    assert await backend.get_run_by_idempotency_key("order-8") is None


async def test_concurrent_creates_with_one_idempotency_key_make_one_run(
    backend: StorageBackend,
) -> None:
    results = await asyncio.gather(
        *(
            backend.create_run(a_run(f"run-{i}", idempotency_key="k"), [started(f"run-{i}")])
            for i in range(20)
        )
    )

    assert sum(created for _, created in results) == 1
    assert len({run.run_id for run, _ in results}) == 1
    runs, _ = await backend.list_runs()
    assert [run.run_id for run in runs] == [results[0][0].run_id]


async def test_get_run_of_an_unknown_run_is_none(backend: StorageBackend) -> None:
    assert await backend.get_run("nope") is None


async def test_list_runs_orders_by_creation_and_filters(backend: StorageBackend) -> None:
    await new_run(backend, "c", created_at=at(3))
    await new_run(backend, "a", created_at=at(1), workflow_name="refund")
    await new_run(backend, "b", created_at=at(2))
    await backend.commit(Commit("b", now=at(4), status=RunStatus.RUNNING))

    async def ids(**filters: Any) -> list[str]:
        runs, cursor = await backend.list_runs(**filters)
        assert cursor is None
        return [run.run_id for run in runs]

    assert await ids() == ["a", "b", "c"]
    assert await ids(status=RunStatus.RUNNING) == ["b"]
    assert await ids(status=RunStatus.PENDING) == ["a", "c"]
    assert await ids(workflow_name="checkout") == ["b", "c"]
    assert await ids(workflow_name="checkout", status=RunStatus.PENDING) == ["c"]
    assert await ids(status=RunStatus.COMPLETED) == []


async def test_list_runs_pages_through_runs_created_at_one_instant(
    backend: StorageBackend,
) -> None:
    run_ids = [f"run-{i:02}" for i in range(25)]
    for run_id in random.Random(7).sample(run_ids, len(run_ids)):
        await new_run(backend, run_id)

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        page, cursor = await backend.list_runs(limit=7, cursor=cursor)
        pages += 1
        seen += [run.run_id for run in page]
        if cursor is None:
            break
    assert seen == run_ids
    assert pages == 4


async def test_list_runs_pages_with_a_filter(backend: StorageBackend) -> None:
    for i in range(10):
        await new_run(backend, f"run-{i}", created_at=at(i % 3))
        if i % 2:
            await backend.commit(Commit(f"run-{i}", now=at(5), status=RunStatus.RUNNING))

    first, cursor = await backend.list_runs(status=RunStatus.RUNNING, limit=3)
    assert cursor is not None
    second, cursor = await backend.list_runs(status=RunStatus.RUNNING, limit=3, cursor=cursor)
    assert cursor is None
    expected = sorted((at(i % 3), f"run-{i}") for i in range(1, 10, 2))
    assert [(r.created_at, r.run_id) for r in first + second] == expected


async def test_list_runs_exact_page_has_no_next_cursor(backend: StorageBackend) -> None:
    for i in range(3):
        await new_run(backend, f"run-{i}")
    page, cursor = await backend.list_runs(limit=3)
    assert len(page) == 3 and cursor is None


async def test_list_runs_rejects_a_malformed_cursor(backend: StorageBackend) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await backend.list_runs(cursor="not a cursor")


# -- the log ----------------------------------------------------------------------------------


async def test_commit_appends_events_and_updates_the_run(backend: StorageBackend) -> None:
    await new_run(backend)
    head = await backend.commit(
        Commit(
            "run-1",
            [step_started("run-1", "s1"), step_completed("run-1", "s1")],
            expected_sequence=1,
            now=at(10),
            status=RunStatus.RUNNING,
            started_at=at(9),
            recovery_attempts=1,
        )
    )

    assert head == 3
    events = await backend.get_events("run-1")
    assert [e.sequence for e in events] == [1, 2, 3]
    assert events[2].type is EventType.STEP_COMPLETED
    run = await backend.get_run("run-1")
    assert run is not None
    assert (run.status, run.started_at, run.updated_at) == (RunStatus.RUNNING, at(9), at(10))
    assert (run.last_sequence, run.recovery_attempts) == (3, 1)
    assert run.result is None and run.completed_at is None


async def test_commit_leaves_fields_it_does_not_set(backend: StorageBackend) -> None:
    await new_run(backend)
    await backend.commit(Commit("run-1", now=at(1), status=RunStatus.RUNNING, started_at=at(1)))
    await backend.commit(Commit("run-1", now=at(2), result='"r"', error="e", completed_at=at(2)))

    run = await backend.get_run("run-1")
    assert run is not None
    assert (run.status, run.started_at, run.result, run.error, run.completed_at) == (
        RunStatus.RUNNING,
        at(1),
        '"r"',
        "e",
        at(2),
    )
    assert run.updated_at == at(2) and run.last_sequence == 1


async def test_commit_without_expected_sequence_appends_at_the_head(
    backend: StorageBackend,
) -> None:
    await new_run(backend)
    assert await backend.commit(Commit("run-1", [step_started("run-1", "s1")], now=at(1))) == 2
    assert await backend.commit(Commit("run-1", [step_completed("run-1", "s1")], now=at(2))) == 3
    assert [e.sequence for e in await backend.get_events("run-1")] == [1, 2, 3]


async def test_commit_without_now_uses_the_wall_clock(backend: StorageBackend) -> None:
    await new_run(backend)
    before = datetime.now(UTC)
    await backend.commit(Commit("run-1", [step_started("run-1", "s1")]))
    run = await backend.get_run("run-1")
    assert run is not None and run.updated_at is not None
    assert before <= run.updated_at <= datetime.now(UTC)


async def test_commit_to_an_unknown_run_fails(backend: StorageBackend) -> None:
    with pytest.raises(WorkflowNotFoundError):
        await backend.commit(Commit("nope", [step_started("nope", "s1")], now=at(1)))
    assert await backend.get_events("nope") == []


async def test_commit_at_a_stale_sequence_conflicts_and_writes_nothing(
    backend: StorageBackend,
) -> None:
    await new_run(backend)
    await backend.commit(Commit("run-1", [step_started("run-1", "s1")], expected_sequence=1))
    before = await snapshot(backend)

    with pytest.raises(SequenceConflictError):
        await backend.commit(
            Commit(
                "run-1",
                [step_started("run-1", "s2")],
                expected_sequence=1,
                now=at(9),
                status=RunStatus.FAILED,
                timer=at(100),
            )
        )
    assert await snapshot(backend) == before


async def test_a_commit_without_events_is_conditional_too(backend: StorageBackend) -> None:
    """How an activation takes a run's lease before a step: no event, but the sequence checked."""
    await new_run(backend)
    await backend.commit(Commit("run-1", [step_started("run-1", "s1")], expected_sequence=1))
    before = await snapshot(backend)
    with pytest.raises(SequenceConflictError):
        await backend.commit(
            Commit("run-1", [], expected_sequence=1, now=at(5), lease=("b", at(35)))
        )
    assert await snapshot(backend) == before
    head = await backend.commit(
        Commit("run-1", [], expected_sequence=2, now=at(5), lease=("b", at(35)))
    )
    assert head == 2
    run = await backend.get_run("run-1")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == ("b", at(35))
    assert len(await backend.get_events("run-1")) == 2


async def test_a_commit_never_takes_a_live_lease_from_another_activation(
    backend: StorageBackend,
) -> None:
    """``Commit.owner``: the sequence check alone let an event-less commit take a run from an
    activation in the middle of a long step (and run the step again)."""
    await new_run(backend)
    await backend.commit(Commit("run-1", [], now=at(1), lease=("a", at(31)), owner="a"))
    before = await snapshot(backend)
    for now in (at(5), at(30)):  # live until it expires: event-less or not, the commit is refused
        with pytest.raises(LeaseHeldError) as refused:
            await backend.commit(
                Commit(
                    "run-1",
                    [step_started("run-1", "s1")],
                    expected_sequence=1,
                    now=now,
                    lease=("b", now + timedelta(seconds=30)),
                    owner="b",
                )
            )
        assert refused.value.holder == "a"
        assert await snapshot(backend) == before
    # The holder itself, a writer that names no owner (a step worker, a hook receipt), and
    # anyone once the lease ran out may commit.
    assert await backend.commit(Commit("run-1", [], now=at(6), owner="a")) == 1
    await backend.commit(Commit("run-1", [step_started("run-1", "s1")], now=at(7)))
    head = await backend.commit(
        Commit("run-1", [], expected_sequence=2, now=at(31), lease=("b", at(61)), owner="b")
    )
    assert head == 2
    run = await backend.get_run("run-1")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == ("b", at(61))


async def test_a_reserved_lease_is_taken_over_by_any_activation(backend: StorageBackend) -> None:
    """Reservations (``pyworkflow:`` owners: the creator that does not activate, the sweeper,
    the executors of dispatched steps) stand for nobody at work: anyone takes them over."""
    await new_run(backend)
    reserved = (f"{RESERVED_LEASE_PREFIX}step-executors", at(60))
    await backend.commit(Commit("run-1", [], now=at(1), lease=reserved))
    await backend.commit(Commit("run-1", [], now=at(2), lease=("b", at(32)), owner="b"))
    run = await backend.get_run("run-1")
    assert run is not None and run.lease_owner == "b"
    with pytest.raises(LeaseHeldError):
        await backend.commit(Commit("run-1", [], now=at(3), lease=("c", at(33)), owner="c"))


async def test_racing_commits_at_one_sequence_have_one_winner(backend: StorageBackend) -> None:
    await new_run(backend)
    results = await asyncio.gather(
        *(
            backend.commit(
                Commit("run-1", [step_started("run-1", f"s{i}")], expected_sequence=1, now=at(i))
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )

    assert results.count(2) == 1
    assert all(isinstance(r, SequenceConflictError) for r in results if r != 2)
    assert [e.sequence for e in await backend.get_events("run-1")] == [1, 2]


async def test_duplicate_completion_fails_and_writes_nothing(backend: StorageBackend) -> None:
    await new_run(backend)
    await backend.commit(
        Commit("run-1", [step_started("run-1", "s1"), step_completed("run-1", "s1")], now=at(1))
    )
    before = await snapshot(backend)

    with pytest.raises(DuplicateCompletionError):
        await backend.commit(
            Commit(
                "run-1",
                [step_started("run-1", "s2"), step_completed("run-1", "s1", result='"again"')],
                now=at(2),
                status=RunStatus.RUNNING,
                result='"x"',
                timer=at(50),
                lease=("worker", at(60)),
                hooks_created=[a_hook("run-1")],
            )
        )
    assert await snapshot(backend) == before
    assert await backend.get_hook("run-1", "h1") is None


async def test_duplicate_completion_within_one_commit_fails(backend: StorageBackend) -> None:
    await new_run(backend)
    with pytest.raises(DuplicateCompletionError):
        await backend.commit(
            Commit("run-1", [step_completed("run-1", "s1"), step_completed("run-1", "s1")])
        )
    assert len(await backend.get_events("run-1")) == 1


async def test_a_run_has_one_terminal_event(backend: StorageBackend) -> None:
    await new_run(backend)
    done = Event("run-1", EventType.WORKFLOW_COMPLETED, {"result": "1"})
    failed = Event("run-1", EventType.WORKFLOW_FAILED, {"error": "x"})
    await backend.commit(Commit("run-1", [done], status=RunStatus.COMPLETED))
    with pytest.raises(RunFinishedError):
        await backend.commit(Commit("run-1", [failed], status=RunStatus.FAILED))
    # nothing at all enters the log after its terminal event (a late step worker, say)
    with pytest.raises(RunFinishedError):
        await backend.commit(Commit("run-1", [step_completed("run-1", "late")]))
    run = await backend.get_run("run-1")
    assert run is not None and run.status is RunStatus.COMPLETED
    assert len(await backend.get_events("run-1")) == 2


async def test_each_retried_attempt_completes_once(backend: StorageBackend) -> None:
    await new_run(backend)
    await backend.commit(Commit("run-1", [step_retrying("run-1", "s1", 1)]))
    await backend.commit(Commit("run-1", [step_retrying("run-1", "s1", 2)]))
    with pytest.raises(DuplicateCompletionError):
        await backend.commit(Commit("run-1", [step_retrying("run-1", "s1", 2)]))
    await backend.commit(Commit("run-1", [step_completed("run-1", "s1")]))
    assert len(await backend.get_events("run-1")) == 4


async def test_a_failed_hook_move_writes_nothing(backend: StorageBackend) -> None:
    await new_run(backend)
    before = await snapshot(backend)
    with pytest.raises(HookNotFoundError):
        await backend.commit(
            Commit(
                "run-1",
                [step_started("run-1", "s1")],
                now=at(3),
                status=RunStatus.RUNNING,
                timer=at(10),
                lease=("worker", at(30)),
                hooks_created=[a_hook("run-1", "h2")],
                hook_received=("h1", "{}"),
            )
        )
    assert await snapshot(backend) == before


async def test_get_events_after_a_sequence_and_for_a_command(backend: StorageBackend) -> None:
    await new_run(backend)
    await backend.commit(
        Commit(
            "run-1",
            [
                step_started("run-1", "s1"),
                step_started("run-1", "s2"),
                step_completed("run-1", "s1"),
                step_completed("run-1", "s2"),
            ],
        )
    )

    assert [e.sequence for e in await backend.get_events("run-1", after_sequence=3)] == [4, 5]
    assert await backend.get_events("run-1", after_sequence=5) == []
    by_command = await backend.get_events("run-1", command_id="s1")
    assert [(e.sequence, e.type) for e in by_command] == [
        (2, EventType.STEP_STARTED),
        (4, EventType.STEP_COMPLETED),
    ]
    later = await backend.get_events("run-1", after_sequence=2, command_id="s1")
    assert [e.sequence for e in later] == [4]
    assert await backend.get_events("nope") == []


# -- timers -----------------------------------------------------------------------------------


async def test_commit_sets_clears_or_keeps_the_timer(backend: StorageBackend) -> None:
    await new_run(backend)
    await backend.commit(Commit("run-1", now=at(1), timer=at(10)))
    assert await backend.get_timer("run-1") == Timer("run-1", at(10))
    await backend.commit(Commit("run-1", now=at(2), timer=UNSET))
    assert await backend.get_timer("run-1") == Timer("run-1", at(10))
    await backend.commit(Commit("run-1", now=at(3), timer=None))
    assert await backend.get_timer("run-1") is None


async def test_claim_due_timers_in_fire_order_up_to_the_limit(backend: StorageBackend) -> None:
    for run_id, fire_at in (("a", 3), ("b", 1), ("c", 2), ("d", 10)):
        await new_run(backend, run_id)
        await set_timer(backend, run_id, at(fire_at))

    claim_for = timedelta(seconds=30)
    first = await backend.claim_due_timers(at(5), limit=2, claim_for=claim_for)
    assert first == [Timer("b", at(1)), Timer("c", at(2))]
    assert await backend.claim_due_timers(at(5), claim_for=claim_for) == [Timer("a", at(3))]
    assert await backend.claim_due_timers(at(6), claim_for=claim_for) == []
    # A claim runs out at ``now + claim_for``: then the timers are handed out again.
    assert await backend.claim_due_timers(at(34), claim_for=claim_for) == [Timer("d", at(10))]
    again = await backend.claim_due_timers(at(35), claim_for=claim_for)
    assert [timer.run_id for timer in again] == ["b", "c", "a"]


async def test_concurrent_claims_hand_each_timer_out_once(backend: StorageBackend) -> None:
    for i in range(10):
        await new_run(backend, f"run-{i}")
        await set_timer(backend, f"run-{i}", at(i))

    claims = await asyncio.gather(*(backend.claim_due_timers(at(20), limit=3) for _ in range(100)))

    claimed = sorted(timer.run_id for batch in claims for timer in batch)
    assert claimed == sorted(f"run-{i}" for i in range(10))


async def test_rescheduling_a_timer_drops_its_claim(backend: StorageBackend) -> None:
    await new_run(backend)
    await set_timer(backend, "run-1", at(1))
    assert len(await backend.claim_due_timers(at(2))) == 1
    await set_timer(backend, "run-1", at(2))
    assert await backend.claim_due_timers(at(3)) == [Timer("run-1", at(2))]
    await backend.commit(Commit("run-1", now=at(3), timer=at(3)))
    assert await backend.claim_due_timers(at(4)) == [Timer("run-1", at(3))]


# -- leases -----------------------------------------------------------------------------------


async def test_renew_leases_extends_only_the_owners(backend: StorageBackend) -> None:
    for run_id, owner in (("r1", "a"), ("r2", "b"), ("r3", "a")):
        await new_run(backend, run_id)
        await backend.commit(Commit(run_id, now=at(0), lease=(owner, at(30)), owner=owner))

    await backend.renew_leases(["r1", "r2", "nope"], "a", at(90))

    leases = {}
    for run_id in ("r1", "r2", "r3"):
        run = await backend.get_run(run_id)
        assert run is not None
        leases[run_id] = (run.lease_owner, run.lease_expires_at)
    assert leases == {"r1": ("a", at(90)), "r2": ("b", at(30)), "r3": ("a", at(30))}


async def test_claim_expired_leases_takes_over_stuck_runs(backend: StorageBackend) -> None:
    statuses = {
        "pending-free": RunStatus.PENDING,
        "running-expired": RunStatus.RUNNING,
        "running-held": RunStatus.RUNNING,
        "completed": RunStatus.COMPLETED,
        "suspended": RunStatus.SUSPENDED,
        "running-free": RunStatus.RUNNING,
    }
    leases = {"running-expired": ("dead", at(20)), "running-held": ("alive", at(100))}
    for i, (run_id, status) in enumerate(statuses.items()):
        await new_run(backend, run_id)
        lease = leases.get(run_id, UNSET)
        await backend.commit(Commit(run_id, now=at(10 - i), status=status, lease=lease))

    claimed = await backend.claim_expired_leases(at(50), "sweeper", at(80), limit=2)
    # Oldest update first: running-free (updated at 5) before running-expired (at 9).
    assert claimed == ["running-free", "running-expired"]
    assert await backend.claim_expired_leases(at(50), "sweeper", at(80)) == ["pending-free"]
    assert await backend.claim_expired_leases(at(60), "other", at(90)) == []
    run = await backend.get_run("running-expired")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == ("sweeper", at(80))
    assert await backend.claim_expired_leases(at(80), "other", at(90), limit=10) == [
        "running-free",
        "running-expired",
        "pending-free",
    ]


async def test_commit_sets_and_releases_the_lease(backend: StorageBackend) -> None:
    await new_run(backend)
    await backend.commit(Commit("run-1", now=at(1), lease=("w", at(30))))
    run = await backend.get_run("run-1")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == ("w", at(30))
    await backend.commit(Commit("run-1", now=at(2)))  # UNSET: kept
    run = await backend.get_run("run-1")
    assert run is not None and run.lease_owner == "w"
    await backend.commit(Commit("run-1", now=at(3), lease=None))
    run = await backend.get_run("run-1")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == (None, None)


# -- hooks ------------------------------------------------------------------------------------


async def test_hooks_are_created_by_commits_and_listed(backend: StorageBackend) -> None:
    await new_run(backend, "r1")
    await new_run(backend, "r2")
    hook = a_hook("r1", "h2", schema_path="app.Approval", metadata={"who": ["ops"]})
    await backend.commit(Commit("r1", now=at(1), hooks_created=[hook, a_hook("r1", "h1")]))
    await backend.commit(Commit("r2", now=at(1), hooks_created=[a_hook("r2", "h1")]))
    await backend.commit(hook_received("r2"))

    assert await backend.get_hook("r1", "h2") == hook
    assert await backend.get_hook("r1", "nope") is None
    ids = [(h.run_id, h.hook_id) for h in await backend.list_hooks()]
    assert ids == [("r1", "h1"), ("r1", "h2"), ("r2", "h1")]
    assert [h.hook_id for h in await backend.list_hooks("r1")] == ["h1", "h2"]
    pending = await backend.list_hooks(status=HookStatus.PENDING)
    assert [(h.run_id, h.hook_id) for h in pending] == [("r1", "h1"), ("r1", "h2")]
    assert [h.run_id for h in await backend.list_hooks("r2", HookStatus.RECEIVED)] == ["r2"]
    assert await backend.list_hooks("r2", HookStatus.PENDING) == []


async def test_creating_an_existing_hook_keeps_it(backend: StorageBackend) -> None:
    await with_hook(backend)
    await backend.commit(hook_received("run-1"))
    await backend.commit(Commit("run-1", now=at(9), hooks_created=[a_hook("run-1")]))
    hook = await backend.get_hook("run-1", "h1")
    assert hook is not None and hook.status is HookStatus.RECEIVED


async def test_a_hook_receives_one_payload(backend: StorageBackend) -> None:
    await with_hook(backend)
    head = await backend.commit(hook_received("run-1", payload='{"n":1}'))

    hook = await backend.get_hook("run-1", "h1")
    assert hook is not None
    assert (hook.status, hook.payload, hook.received_at) == (HookStatus.RECEIVED, '{"n":1}', at(5))
    with pytest.raises(HookAlreadyReceivedError):
        await backend.commit(hook_received("run-1", payload='{"n":2}'))
    with pytest.raises(HookAlreadyReceivedError):
        await backend.commit(Commit("run-1", now=at(9), hook_expired="h1"))
    assert (await backend.get_run("run-1") or a_run()).last_sequence == head
    hook = await backend.get_hook("run-1", "h1")
    assert hook is not None and hook.payload == '{"n":1}'


async def test_an_expired_hook_takes_no_payload(backend: StorageBackend) -> None:
    await with_hook(backend)
    expired = Event(
        "run-1", EventType.HOOK_EXPIRED, {"command_id": "hook:approval:h1", "hook_id": "h1"}
    )
    await backend.commit(Commit("run-1", [expired], now=at(7), hook_expired="h1"))

    hook = await backend.get_hook("run-1", "h1")
    assert hook is not None and hook.status is HookStatus.EXPIRED
    with pytest.raises(HookExpiredError):
        await backend.commit(hook_received("run-1"))
    with pytest.raises(HookExpiredError):
        await backend.commit(Commit("run-1", now=at(8), hook_expired="h1"))
    with pytest.raises(HookNotFoundError):
        await backend.commit(Commit("run-1", now=at(8), hook_expired="nope"))
    assert len(await backend.get_events("run-1")) == 2


async def test_concurrent_hook_receipts_have_one_winner(backend: StorageBackend) -> None:
    await with_hook(backend)
    results = await asyncio.gather(
        *(backend.commit(hook_received("run-1", payload=str(i))) for i in range(10)),
        return_exceptions=True,
    )

    assert sum(isinstance(r, int) for r in results) == 1
    assert all(isinstance(r, HookAlreadyReceivedError) for r in results if not isinstance(r, int))
    received = [e for e in await backend.get_events("run-1") if e.type is EventType.HOOK_RECEIVED]
    assert len(received) == 1
    hook = await backend.get_hook("run-1", "h1")
    assert hook is not None and hook.payload == received[0].data["payload"]


# -- step checkpoints -------------------------------------------------------------------------


async def test_checkpoints(backend: StorageBackend) -> None:
    assert await backend.get_checkpoint("run-1", "s1") is None
    await backend.put_checkpoint("run-1", "s1", '{"page": 1}')
    await backend.put_checkpoint("run-1", "s2", "two")
    await backend.put_checkpoint("run-1", "s1", '{"page": 2}')
    assert await backend.get_checkpoint("run-1", "s1") == '{"page": 2}'
    await backend.delete_checkpoint("run-1", "s1")
    await backend.delete_checkpoint("run-1", "s1")  # deleting twice is fine
    assert await backend.get_checkpoint("run-1", "s1") is None
    assert await backend.get_checkpoint("run-1", "s2") == "two"


async def test_list_children_finds_a_parent_s_runs_by_their_parent_run_id(
    backend: StorageBackend,
) -> None:
    await new_run(backend, "parent")
    await new_run(backend, "other")
    await new_run(backend, "kid-2", parent_run_id="parent", created_at=at(2))
    await new_run(backend, "kid-1", parent_run_id="parent", created_at=at(1))
    await new_run(backend, "stranger", parent_run_id="other", created_at=at(1))
    done = Event("kid-2", EventType.WORKFLOW_COMPLETED, {"result": "1"}, timestamp=at(3))
    await backend.commit(Commit("kid-2", [done], status=RunStatus.COMPLETED))
    assert [r.run_id for r in await backend.list_children("parent")] == ["kid-1", "kid-2"]
    assert [r.run_id for r in await backend.list_children("parent", open_only=True)] == ["kid-1"]
    [kid] = await backend.list_children("parent", open_only=True)
    assert kid.input_args == "[]"  # a whole record: its arguments read back from its log
    assert await backend.list_children("nobody") == []


async def test_keep_secret_stores_the_first_candidate_only(backend: StorageBackend) -> None:
    """The storage-kept hook key: every caller, concurrent or later, gets the first one."""
    kept = await asyncio.gather(*(backend.keep_secret("key", f"candidate-{i}") for i in range(6)))
    assert len(set(kept)) == 1 and kept[0].startswith("candidate-")
    assert await backend.keep_secret("key", "later") == kept[0]
    assert await backend.keep_secret("other", "second") == "second"
    await backend.close()  # (and it is durable)
    assert await backend.keep_secret("key", "after-reopen") == kept[0]


# -- lifecycle --------------------------------------------------------------------------------


async def test_connect_is_idempotent_and_close_allows_reuse(backend: StorageBackend) -> None:
    await backend.connect()
    await backend.connect()
    await new_run(backend)
    await backend.close()
    await backend.close()
    assert await backend.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2
    assert len(await backend.get_events("run-1")) == 2


# -- durable backends: restarts and several processes -----------------------------------------


async def test_a_fresh_backend_sees_everything(durable: Backends) -> None:
    first = durable.open()
    run, _ = await first.create_run(
        a_run(idempotency_key="k", context={"tenant": "t1"}), [started("run-1")]
    )
    await first.commit(
        Commit(
            "run-1",
            [step_started("run-1", "s1"), step_completed("run-1", "s1")],
            expected_sequence=1,
            now=at(1),
            status=RunStatus.SUSPENDED,
            timer=at(60),
            lease=("w", at(30)),
            hooks_created=[a_hook("run-1", "h1"), a_hook("run-1", "h2")],
        )
    )
    await first.commit(hook_received("run-1", "h1"))
    await first.claim_due_timers(at(61), claim_for=timedelta(seconds=30))
    await first.put_checkpoint("run-1", "s2", "cp")
    before = await snapshot(first)
    await first.close()

    second = durable.open()
    assert await snapshot(second) == before
    assert await second.get_run_by_idempotency_key("k") == before["run"]
    assert await second.get_checkpoint("run-1", "s2") == "cp"
    assert await second.claim_due_timers(at(62)) == []  # the claim survived
    assert await second.claim_due_timers(at(91)) == [Timer("run-1", at(60))]
    with pytest.raises(DuplicateCompletionError):  # the completion index survived
        await second.commit(Commit("run-1", [step_completed("run-1", "s1")]))
    assert await second.commit(Commit("run-1", [step_started("run-1", "s3")])) == 5


async def test_two_backends_on_one_store_see_each_other(durable: Backends) -> None:
    a, b = durable.open(), durable.open()
    await new_run(a, idempotency_key="k")
    assert (await b.get_run("run-1") or a_run()).last_sequence == 1

    assert await b.commit(Commit("run-1", [step_started("run-1", "s1")], expected_sequence=1)) == 2
    with pytest.raises(SequenceConflictError):
        await a.commit(Commit("run-1", [step_started("run-1", "s2")], expected_sequence=1))
    assert await a.commit(Commit("run-1", [step_completed("run-1", "s1")], expected_sequence=2))
    with pytest.raises(DuplicateCompletionError):
        await b.commit(Commit("run-1", [step_completed("run-1", "s1")]))
    assert [e.sequence for e in await b.get_events("run-1")] == [1, 2, 3]

    again, created = await b.create_run(a_run("run-2", idempotency_key="k"), [])
    assert not created and again.run_id == "run-1"

    await set_timer(a, "run-1", at(1))
    claims = await asyncio.gather(*(x.claim_due_timers(at(2)) for x in (a, b, a, b)))
    assert sum(len(batch) for batch in claims) == 1
    await a.commit(Commit("run-1", now=at(0), lease=("a", at(30)), owner="a"))
    with pytest.raises(LeaseHeldError):
        await b.commit(Commit("run-1", now=at(1), lease=("b", at(31)), owner="b"))


async def test_races_between_backends_on_one_store_have_one_winner(durable: Backends) -> None:
    """The races of the engine, run by several backend objects at once (separate connections,
    as separate processes would hold them): each contested write has exactly one winner."""
    racers = [durable.open() for _ in range(4)]
    await with_hook(racers[0])
    for i in range(10):
        await new_run(racers[0], f"timer-{i}")
        await set_timer(racers[0], f"timer-{i}", at(i))

    appends = await asyncio.gather(
        *(
            racers[i % 4].commit(
                Commit("run-1", [step_started("run-1", f"s{i}")], expected_sequence=1, now=at(i))
            )
            for i in range(12)
        ),
        return_exceptions=True,
    )
    assert appends.count(2) == 1
    assert all(isinstance(r, SequenceConflictError) for r in appends if r != 2)

    receipts = await asyncio.gather(
        *(racers[i % 4].commit(hook_received("run-1", payload=str(i))) for i in range(12)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in receipts) == 1
    assert all(isinstance(r, HookAlreadyReceivedError) for r in receipts if not isinstance(r, int))

    starts = await asyncio.gather(
        *(
            racers[i % 4].create_run(a_run(f"new-{i}", idempotency_key="k"), [started(f"new-{i}")])
            for i in range(12)
        )
    )
    assert sum(created for _, created in starts) == 1
    assert len({run.run_id for run, _ in starts}) == 1

    claims = await asyncio.gather(
        *(racers[i % 4].claim_due_timers(at(20), limit=3) for i in range(100))
    )
    claimed = sorted(timer.run_id for batch in claims for timer in batch)
    assert claimed == sorted(f"timer-{i}" for i in range(10))

    events = await racers[3].get_events("run-1")
    assert [e.sequence for e in events] == [1, 2, 3]
    assert [e.type for e in events[1:]] == [EventType.STEP_STARTED, EventType.HOOK_RECEIVED]


_WORKER = """
import asyncio, sys
from pyworkflow.model.events import Event, EventType
from pyworkflow.storage.config import config_to_storage
from pyworkflow.model.schemas import Commit

async def main(config, worker):
    backend = config_to_storage(config)
    claimed = []
    for i in range(40):
        event = Event("run-1", EventType.STEP_STARTED, {"command_id": f"w{worker}-{i}"})
        await backend.commit(Commit("run-1", [event]))
        claimed += [t.run_id for t in await backend.claim_due_timers(NOW, limit=1)]
    print(" ".join(claimed))
    await backend.close()
"""


async def test_processes_share_one_store(durable: Backends) -> None:
    backend = durable.open()
    await new_run(backend)
    for i in range(30):
        await new_run(backend, f"timer-{i}")
        await set_timer(backend, f"timer-{i}", at(i))
    config = storage_to_config(backend)
    script = textwrap.dedent(_WORKER) + textwrap.dedent(f"""
        from datetime import datetime
        NOW = datetime.fromisoformat({at(100).isoformat()!r})
        asyncio.run(main({config!r}, int(sys.argv[1])))
        """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, str(n), stdout=subprocess.PIPE, env=env
        )
        for n in range(4)
    ]
    outputs = [await worker.communicate() for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0, 0]
    claimed = sorted(run_id for out, _ in outputs for run_id in out.decode().split())
    assert claimed == sorted(f"timer-{i}" for i in range(30))
    events = await backend.get_events("run-1")
    assert [e.sequence for e in events] == list(range(1, 162))
    assert len({e.data["command_id"] for e in events[1:]}) == 160


# -- SQLite -----------------------------------------------------------------------------------


def sqlite_at(tmp_path: Path, **options: Any) -> SQLiteStorageBackend:
    return SQLiteStorageBackend(tmp_path / "db" / "pyworkflow.db", **options)


def hold_write_lock(backend: SQLiteStorageBackend) -> sqlite3.Connection:
    """Another process's connection in the middle of a write transaction."""
    other = sqlite3.connect(backend.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_sqlite_waits_for_another_writer_without_blocking(tmp_path: Path) -> None:
    backend = sqlite_at(tmp_path)
    await new_run(backend)
    other = hold_write_lock(backend)
    commit = asyncio.create_task(backend.commit(Commit("run-1", [step_started("run-1", "s1")])))
    ticks = 0
    for _ in range(20):  # the loop keeps running while the commit waits
        await asyncio.sleep(0.001)
        ticks += 1
    assert not commit.done() and ticks == 20
    other.execute("COMMIT")
    other.close()
    assert await commit == 2
    await backend.close()


async def test_sqlite_gives_up_on_a_lock_held_too_long(tmp_path: Path) -> None:
    backend = sqlite_at(tmp_path, lock_timeout=0.05)
    await new_run(backend)
    other = hold_write_lock(backend)
    try:
        with pytest.raises(StorageBusyError, match="locked by another process"):
            await backend.commit(Commit("run-1", [step_started("run-1", "s1")]))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await backend.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2
    await backend.close()


async def test_sqlite_records_its_schema_version_and_uses_wal(tmp_path: Path) -> None:
    backend = sqlite_at(tmp_path)
    await backend.connect()
    await backend.close()
    await backend.connect()  # migrating an up-to-date database changes nothing
    db = sqlite3.connect(backend.db_path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    await backend.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    backend = sqlite_at(tmp_path)
    await backend.connect()
    await backend.close()
    db = sqlite3.connect(backend.db_path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(ConfigurationError, match="schema version 99"):
        await sqlite_at(tmp_path).connect()


async def test_sqlite_stores_instants_in_utc(tmp_path: Path) -> None:
    backend = sqlite_at(tmp_path)
    plus_two = datetime(2025, 3, 1, 14, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2)))
    await new_run(backend, created_at=plus_two)
    run = await backend.get_run("run-1")
    assert run is not None and run.created_at == plus_two
    assert run.created_at.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        await backend.commit(Commit("run-1", now=T0, timer=datetime(2025, 1, 1)))
    await backend.close()


# -- file -------------------------------------------------------------------------------------


async def test_file_ignores_and_repairs_a_torn_journal_line(tmp_path: Path) -> None:
    writer = FileStorageBackend(tmp_path)
    await new_run(writer)
    await writer.close()
    with (tmp_path / "journal-0.jsonl").open("ab") as journal:
        journal.write(b'{"op": "commit", "commit": {"run_')  # a writer died mid-line

    reader = FileStorageBackend(tmp_path)
    assert len(await reader.get_events("run-1")) == 1
    assert await reader.commit(Commit("run-1", [step_started("run-1", "s1")])) == 2
    await reader.close()
    lines = (tmp_path / "journal-0.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["op"] for line in lines] == ["create_run", "commit"]


async def test_file_compaction_keeps_every_record(tmp_path: Path) -> None:
    early = FileStorageBackend(tmp_path, compact_after_bytes=4000)
    await new_run(early)  # holds generation 0 while the writer compacts
    writer = FileStorageBackend(tmp_path, compact_after_bytes=4000)
    for i in range(40):
        await writer.commit(Commit("run-1", [step_started("run-1", f"s{i}")], now=at(i)))
    await writer.commit(Commit("run-1", now=at(50), timer=at(60), hooks_created=[a_hook("run-1")]))
    await writer.put_checkpoint("run-1", "s1", "cp")

    generation = int((tmp_path / "CURRENT").read_text())
    assert generation >= 2
    assert sorted(p.name for p in tmp_path.glob("*-*")) == [
        f"journal-{generation}.jsonl",
        f"snapshot-{generation}.json",
    ]
    expected = await snapshot(writer)
    assert len(expected["events"]) == 41
    assert await snapshot(early) == expected
    fresh = FileStorageBackend(tmp_path)
    assert await snapshot(fresh) == expected
    assert await fresh.get_checkpoint("run-1", "s1") == "cp"
    for backend in (early, writer, fresh):
        await backend.close()


async def test_file_waits_for_another_process_lock(tmp_path: Path) -> None:
    backend = FileStorageBackend(tmp_path)
    await new_run(backend)
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    commit = asyncio.create_task(backend.commit(Commit("run-1", [step_started("run-1", "s1")])))
    await asyncio.sleep(0.02)
    assert not commit.done()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    assert await commit == 2
    await backend.close()


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "kind", "where"),
    [
        ({"type": "memory"}, InMemoryStorageBackend, None),
        ({"url": "memory://"}, InMemoryStorageBackend, None),
        ({"type": "file", "base_path": "data"}, FileStorageBackend, "data"),
        ({"type": "file", "path": "data"}, FileStorageBackend, "data"),
        ({"url": "file://some/dir"}, FileStorageBackend, "some/dir"),
        ({"url": "file:///abs/dir"}, FileStorageBackend, "/abs/dir"),
        ({"type": "sqlite", "db_path": "x.db"}, SQLiteStorageBackend, "x.db"),
        ({"type": "SQLite", "path": "x.db"}, SQLiteStorageBackend, "x.db"),
        ({"url": "sqlite:///rel/x.db"}, SQLiteStorageBackend, "rel/x.db"),
        ({"url": "sqlite:////abs/x.db"}, SQLiteStorageBackend, "/abs/x.db"),
        ({"type": "sqlite", "url": "sqlite:///x.db"}, SQLiteStorageBackend, "x.db"),
    ],
)
def test_config_to_storage(config: dict[str, Any], kind: type, where: str | None) -> None:
    backend = config_to_storage(config)
    assert type(backend) is kind
    if isinstance(backend, FileStorageBackend):
        assert backend.base_path == Path(str(where))
    if isinstance(backend, SQLiteStorageBackend):
        assert backend.db_path == where
    assert type(config_to_storage(storage_to_config(backend))) is kind
    assert storage_to_config(config_to_storage(storage_to_config(backend))) == storage_to_config(
        backend
    )


def test_default_paths() -> None:
    file_backend = config_to_storage({"type": "file"})
    sqlite_backend = config_to_storage({"type": "sqlite"})
    assert storage_to_config(file_backend) == {"type": "file", "base_path": "pyworkflow_data"}
    assert storage_to_config(sqlite_backend) == {
        "type": "sqlite",
        "db_path": "./pyworkflow_data/pyworkflow.db",
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "mongo"}, "unknown storage type 'mongo'"),
        ({}, "needs a 'type' or a 'url'"),
        ({"url": "mongo://u:hunter2@host/db"}, "malformed storage URL"),
        ({"url": "not a url"}, "malformed storage URL 'not a url'"),
        ({"url": "sqlite://x.db"}, "sqlite:///relative"),
        ({"url": "postgresql://u:hunter2@host:port/db"}, "bad port"),
        ({"type": "redis", "url": "sqlite:///x.db"}, "does not match"),
    ],
)
def test_bad_config_is_a_configuration_error(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        config_to_storage(config)
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "module", "driver", "extra"),
    [
        (
            "postgresql://u:hunter2@localhost/db",
            "pyworkflow.storage.postgres",
            "asyncpg",
            "postgres",
        ),
        ("redis://:hunter2@localhost:6379/0", "pyworkflow.storage.redis", "redis", "redis"),
    ],
)
def test_server_backends_without_their_driver_name_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, driver: str, extra: str
) -> None:
    # As if the extra were not installed: importing the driver fails.
    for name in list(sys.modules):
        if name in (module, driver) or name.startswith((module + ".", driver + ".")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(ConfigurationError, match=f"'{extra}' extra") as error:
        config_to_storage({"url": url})
    assert "hunter2" not in str(error.value)


def test_server_backends_are_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyworkflow.storage as storage

    monkeypatch.delitem(sys.modules, "pyworkflow.storage.postgres", raising=False)
    monkeypatch.delattr(storage, "PostgresStorageBackend", raising=False)
    assert "PostgresStorageBackend" not in vars(storage)
    from pyworkflow.storage.postgres import PostgresStorageBackend

    assert storage.PostgresStorageBackend is PostgresStorageBackend  # the access imports it
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "pyworkflow.storage.postgres")
    monkeypatch.delattr(storage, "PostgresStorageBackend")
    with pytest.raises(ImportError, match="'postgres' extra"):
        storage.PostgresStorageBackend  # noqa: B018 - the access is the test
    with pytest.raises(AttributeError):
        storage.NoSuchBackend  # noqa: B018
