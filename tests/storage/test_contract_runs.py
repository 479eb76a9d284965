"""The storage contract for writes that reach more than one run: ``Commit.runs_created``,
``Commit.continued_to_run_id`` and ``Commit.notices`` (children and chains), on every backend.

What the engine relies on: a run created by a commit exists exactly when the commit's events do;
a notice is appended together with the commit that causes it, at most once per completion key,
never to a run that has ended, and follows a chain to the run that carries it on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import (
    SequenceConflictError,
    WorkflowAlreadyRunningError,
)
from pyworkflow.model.schemas import Commit, HookStatus, Notice, RunStatus, Timer
from pyworkflow.storage.base import StorageBackend
from tests.storage.conftest import BACKENDS, Backends
from tests.storage.test_contract import (
    a_hook,
    a_run,
    at,
    hook_received,
    new_run,
    snapshot,
    started,
)


def child_started(run_id: str, position: int, child_id: str) -> Event:
    data = {
        "command_id": f"child:report:{position}",
        "child_run_id": child_id,
        "child_workflow_name": "report",
    }
    return Event(run_id, EventType.CHILD_WORKFLOW_STARTED, data, timestamp=at(1))


def child_completed(parent_id: str, position: int, child_id: str, result: str = "7") -> Event:
    data = {"command_id": f"child:report:{position}", "child_run_id": child_id, "result": result}
    return Event(parent_id, EventType.CHILD_WORKFLOW_COMPLETED, data, timestamp=at(2))


def a_child(child_id: str, parent_id: str = "run-1", **changes: Any) -> tuple[Any, list[Event]]:
    run = a_run(
        child_id,
        workflow_name="report",
        status=RunStatus.RUNNING,
        parent_run_id=parent_id,
        nesting_depth=1,
        context={"parent_command_id": "child:report:1"},
        lease_owner="pyworkflow:starting",
        lease_expires_at=at(30),
        **changes,
    )
    return run, [started(child_id)]


async def test_a_commit_creates_runs_with_its_events(backend: StorageBackend) -> None:
    await new_run(backend)
    head = await backend.commit(
        Commit(
            "run-1",
            [child_started("run-1", 1, "run-1.c1")],
            expected_sequence=1,
            now=at(1),
            runs_created=[a_child("run-1.c1")],
        )
    )
    assert head == 2
    child = await backend.get_run("run-1.c1")
    assert child is not None
    assert (child.parent_run_id, child.nesting_depth, child.workflow_name) == ("run-1", 1, "report")
    assert child.context == {"parent_command_id": "child:report:1"}
    assert child.status is RunStatus.RUNNING and child.last_sequence == 1
    assert child.lease_owner == "pyworkflow:starting"
    events = await backend.get_events("run-1.c1")
    assert [(e.sequence, e.type) for e in events] == [(1, EventType.WORKFLOW_STARTED)]
    # The new run is a run like any other: its lease can be taken over once it runs out.
    assert "run-1.c1" in await backend.claim_expired_leases(at(60), "sweeper", at(90))


async def test_a_taken_run_id_fails_the_whole_commit(backend: StorageBackend) -> None:
    await new_run(backend)
    await new_run(backend, "run-1.c1")
    before = await snapshot(backend)
    with pytest.raises(WorkflowAlreadyRunningError):
        await backend.commit(
            Commit(
                "run-1",
                [child_started("run-1", 1, "run-1.c1")],
                expected_sequence=1,
                now=at(1),
                runs_created=[a_child("run-1.c1")],
            )
        )
    assert await snapshot(backend) == before
    child = await backend.get_run("run-1.c1")
    assert child is not None and child.parent_run_id is None


async def test_a_refused_commit_creates_no_run(backend: StorageBackend) -> None:
    await new_run(backend)
    with pytest.raises(SequenceConflictError):
        await backend.commit(
            Commit(
                "run-1",
                [child_started("run-1", 1, "run-1.c1")],
                expected_sequence=5,
                now=at(1),
                runs_created=[a_child("run-1.c1")],
                notices=[Notice("run-2", child_completed("run-2", 1, "x"), wake_at=at(1))],
            )
        )
    assert await backend.get_run("run-1.c1") is None


async def test_continued_to_run_id_is_set_with_the_next_run(backend: StorageBackend) -> None:
    await new_run(backend)
    ended = Event("run-1", EventType.WORKFLOW_CONTINUED_AS_NEW, {"continued_to_run_id": "run-2"})
    nxt = a_run("run-2", status=RunStatus.RUNNING, continued_from_run_id="run-1")
    await backend.commit(
        Commit(
            "run-1",
            [ended],
            expected_sequence=1,
            now=at(3),
            status=RunStatus.CONTINUED_AS_NEW,
            completed_at=at(3),
            continued_to_run_id="run-2",
            runs_created=[(nxt, [started("run-2")])],
        )
    )
    old, new = await backend.get_run("run-1"), await backend.get_run("run-2")
    assert old is not None and new is not None
    assert old.status is RunStatus.CONTINUED_AS_NEW and old.continued_to_run_id == "run-2"
    assert new.continued_from_run_id == "run-1" and new.continued_to_run_id is None


async def test_a_notice_is_appended_to_its_run_and_wakes_it(backend: StorageBackend) -> None:
    await new_run(backend, "parent")
    await new_run(backend, "child")
    ended = Event("child", EventType.WORKFLOW_COMPLETED, {"result": "7"})
    await backend.commit(
        Commit(
            "child",
            [ended],
            expected_sequence=1,
            now=at(4),
            status=RunStatus.COMPLETED,
            result="7",
            completed_at=at(4),
            notices=[Notice("parent", child_completed("parent", 1, "child"), wake_at=at(4))],
        )
    )
    events = await backend.get_events("parent")
    assert [(e.sequence, e.type) for e in events] == [
        (1, EventType.WORKFLOW_STARTED),
        (2, EventType.CHILD_WORKFLOW_COMPLETED),
    ]
    assert events[1].data["result"] == "7" and events[1].run_id == "parent"
    parent = await backend.get_run("parent")
    assert parent is not None and parent.last_sequence == 2
    assert await backend.get_timer("parent") == Timer("parent", at(4))
    # The parent's next conditional commit must see the notice: its old head conflicts.
    with pytest.raises(SequenceConflictError):
        await backend.commit(Commit("parent", [], expected_sequence=1, now=at(5)))


async def test_a_notice_is_delivered_at_most_once(backend: StorageBackend) -> None:
    await new_run(backend, "parent")
    await new_run(backend, "child")
    notice = Notice("parent", child_completed("parent", 1, "child"), wake_at=at(4))
    await backend.commit(Commit("child", [], now=at(4), notices=[notice]))
    again = Notice("parent", child_completed("parent", 1, "child", result="8"), wake_at=at(9))
    head = await backend.commit(Commit("child", [], now=at(5), notices=[again]))
    assert head == 1  # the child's own head: the commit itself succeeded
    events = await backend.get_events("parent")
    assert [e.data.get("result") for e in events] == [None, "7"]
    assert await backend.get_timer("parent") == Timer("parent", at(4))


async def test_a_notice_to_an_ended_or_unknown_run_is_skipped(backend: StorageBackend) -> None:
    await new_run(backend, "parent")
    await new_run(backend, "child")
    ended = Event("parent", EventType.WORKFLOW_COMPLETED, {"result": "1"})
    await backend.commit(
        Commit("parent", [ended], now=at(1), status=RunStatus.COMPLETED, timer=None)
    )
    cancel = Event("parent", EventType.CANCELLATION_REQUESTED, {"reason": "x"})
    head = await backend.commit(
        Commit(
            "child",
            [],
            now=at(2),
            notices=[
                Notice("parent", cancel, wake_at=at(2)),
                Notice("nobody", cancel.copy_for("nobody"), wake_at=at(2)),
            ],
        )
    )
    assert head == 1
    assert [e.type for e in await backend.get_events("parent")] == [
        EventType.WORKFLOW_STARTED,
        EventType.WORKFLOW_COMPLETED,
    ]
    assert await backend.get_timer("parent") is None
    assert await backend.get_run("nobody") is None


async def test_events_without_a_completion_key_may_arrive_twice(backend: StorageBackend) -> None:
    await new_run(backend, "child")
    await new_run(backend, "parent")
    cancel = Event("child", EventType.CANCELLATION_REQUESTED, {"reason": "parent ended"})
    for _ in range(2):
        await backend.commit(
            Commit("parent", [], now=at(1), notices=[Notice("child", cancel, wake_at=None)])
        )
    events = await backend.get_events("child")
    assert [e.type for e in events].count(EventType.CANCELLATION_REQUESTED) == 2
    assert await backend.get_timer("child") is None  # no wake_at: the timer is left alone


async def test_a_notice_follows_a_chain_to_its_live_run(backend: StorageBackend) -> None:
    await new_run(backend, "parent")
    await new_run(backend, "gen-1")
    for old, new in (("gen-1", "gen-2"), ("gen-2", "gen-3")):
        ended = Event(old, EventType.WORKFLOW_CONTINUED_AS_NEW, {"continued_to_run_id": new})
        nxt = a_run(new, status=RunStatus.RUNNING, continued_from_run_id=old)
        await backend.commit(
            Commit(
                old,
                [ended],
                now=at(2),
                status=RunStatus.CONTINUED_AS_NEW,
                continued_to_run_id=new,
                runs_created=[(nxt, [started(new)])],
            )
        )
    ended = Event("gen-1", EventType.CHILD_WORKFLOW_COMPLETED, {"command_id": "c:1", "result": "1"})
    await backend.commit(  # not following the chain, a continued run counts as ended
        Commit("parent", [], now=at(3), notices=[Notice("gen-1", ended, wake_at=at(3))])
    )
    assert [e.type for e in await backend.get_events("gen-3")] == [EventType.WORKFLOW_STARTED]
    cancel = Event("gen-1", EventType.CANCELLATION_REQUESTED, {"reason": "parent ended"})
    follow = Notice("gen-1", cancel, wake_at=at(3), follow_chain=True)
    await backend.commit(Commit("parent", [], now=at(3), notices=[follow]))
    delivered = await backend.get_events("gen-3")
    assert [e.type for e in delivered] == [
        EventType.WORKFLOW_STARTED,
        EventType.CANCELLATION_REQUESTED,
    ]
    assert delivered[1].run_id == "gen-3" and delivered[1].sequence == 2
    assert await backend.get_timer("gen-3") == Timer("gen-3", at(3))
    assert len(await backend.get_events("gen-1")) == 2  # started, continued


async def test_several_notices_and_runs_in_one_commit(backend: StorageBackend) -> None:
    await new_run(backend, "run-1")
    for name in ("a", "b"):
        await new_run(backend, name)
    cancel = Event("a", EventType.CANCELLATION_REQUESTED, {"reason": None})
    await backend.commit(
        Commit(
            "run-1",
            [child_started("run-1", 1, "run-1.c1"), child_started("run-1", 2, "run-1.c2")],
            expected_sequence=1,
            now=at(1),
            runs_created=[a_child("run-1.c1"), a_child("run-1.c2")],
            notices=[
                Notice("a", cancel, wake_at=at(1)),
                Notice("b", cancel.copy_for("b"), wake_at=at(1)),
            ],
        )
    )
    for name in ("run-1.c1", "run-1.c2"):
        assert await backend.get_run(name) is not None
    for name in ("a", "b"):
        assert [e.sequence for e in await backend.get_events(name)] == [1, 2]


async def test_runs_and_notices_survive_a_restart(durable: Backends) -> None:
    first = durable.open()
    await new_run(first, "parent")
    await new_run(first, "other")
    await first.commit(
        Commit(
            "parent",
            [child_started("parent", 1, "parent.c1")],
            expected_sequence=1,
            now=at(1),
            runs_created=[a_child("parent.c1", "parent")],
            notices=[Notice("other", child_completed("other", 3, "z"), wake_at=at(1))],
        )
    )
    await first.close()
    second = durable.open()
    child = await second.get_run("parent.c1")
    assert child is not None and child.parent_run_id == "parent"
    assert [e.type for e in await second.get_events("other")][-1] is (
        EventType.CHILD_WORKFLOW_COMPLETED
    )


async def test_an_ending_disposes_the_hooks_still_pending(backend: StorageBackend) -> None:
    await new_run(backend)
    hooks = [a_hook("run-1", hook_id) for hook_id in ("h1", "h2", "h3")]
    await backend.commit(Commit("run-1", now=at(1), hooks_created=hooks))
    await backend.commit(hook_received("run-1", "h2"))
    ended = Event("run-1", EventType.WORKFLOW_CANCELLED, {"reason": "x"})
    await backend.commit(
        Commit(
            "run-1",
            [ended],
            now=at(9),
            status=RunStatus.CANCELLED,
            hooks_disposed=["h1", "h2", "h3", "never-created"],
        )
    )
    statuses = {h.hook_id: h.status for h in await backend.list_hooks("run-1")}
    assert statuses == {
        "h1": HookStatus.DISPOSED,
        "h2": HookStatus.RECEIVED,
        "h3": HookStatus.DISPOSED,
    }
    assert [h.hook_id for h in await backend.list_hooks(status=HookStatus.PENDING)] == []
    disposed = await backend.list_hooks(status=HookStatus.DISPOSED)
    assert sorted(h.hook_id for h in disposed) == ["h1", "h3"]


# -- commit_many: a child's first write joined to the parent's write that creates it ----------


def _family_writes(child_ending: RunStatus = RunStatus.COMPLETED) -> list[Commit]:
    """What the engine writes for a child awaited in its parent's activation: the parent's
    commit creating it (the parent keeps its lease), then the child's first commit (it takes
    the run and ends it, telling the parent without a timer)."""
    parent = Commit(
        "run-1",
        [child_started("run-1", 1, "run-1.c1")],
        expected_sequence=1,
        now=at(1),
        status=RunStatus.RUNNING,
        lease=("worker-a", at(31)),
        runs_created=[a_child("run-1.c1")],
    )
    ended = Event("run-1.c1", EventType.WORKFLOW_COMPLETED, {"result": "7"}, timestamp=at(2))
    child = Commit(
        "run-1.c1",
        [ended],
        expected_sequence=1,
        now=at(2),
        status=child_ending,
        result="7",
        error="",
        completed_at=at(2),
        lease=None,
        timer=None,
        owner="worker-a",
        notices=[Notice("run-1", child_completed("run-1", 1, "run-1.c1"))],
    )
    return [parent, child]


async def _state(backend: StorageBackend) -> dict[str, Any]:
    return {run_id: await snapshot(backend, run_id) for run_id in ("run-1", "run-1.c1")}


@pytest.fixture(params=BACKENDS, ids=str)
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[StorageBackend, StorageBackend]]:
    """Two separate stores of one kind."""
    first = Backends.for_test(request, tmp_path / "first")
    second = Backends.for_test(request, tmp_path / "second")
    yield first.open(), second.open()
    await first.close()
    await second.close()


async def test_commit_many_writes_what_the_commits_write_one_by_one(
    two_stores: tuple[StorageBackend, StorageBackend],
) -> None:
    """The joined write (one transaction where the backend has ``joint_commits``) leaves the
    runs exactly as the same commits applied one after another: rows, logs, timers, hooks."""
    joined, one_by_one = two_stores
    for backend in (joined, one_by_one):
        await new_run(backend)
    heads = await joined.commit_many(_family_writes())
    assert heads == [2, 2]
    for commit in _family_writes():
        await one_by_one.commit(commit)
    assert await _state(joined) == await _state(one_by_one)
    parent = await joined.get_run("run-1")
    child = await joined.get_run("run-1.c1")
    assert parent is not None and child is not None
    assert (parent.last_sequence, parent.lease_owner) == (3, "worker-a")
    assert (child.status, child.result, child.lease_owner) == (RunStatus.COMPLETED, "7", None)
    assert await joined.get_timer("run-1") is None  # (the notice asked for no wake-up)
    events = await joined.get_events("run-1")
    assert [e.type for e in events][1:] == [
        EventType.CHILD_WORKFLOW_STARTED,
        EventType.CHILD_WORKFLOW_COMPLETED,
    ]


async def test_a_notice_says_where_storage_put_it(backend: StorageBackend) -> None:
    await new_run(backend)
    [parent, child] = _family_writes()
    await backend.commit(parent)
    await backend.commit(child)
    [notice] = child.notices
    stored = (await backend.get_events("run-1"))[-1]
    if notice.placed is not None:  # (a backend may leave it unset: the engine reads the log)
        assert (notice.placed.sequence, notice.placed.type) == (stored.sequence, stored.type)
        assert notice.placed.data == stored.data


async def test_a_joined_write_that_fails_writes_nothing(backend: StorageBackend) -> None:
    """With ``joint_commits`` a refused part refuses the whole write: no child, no event."""
    if not backend.joint_commits:
        pytest.skip(f"{type(backend).__name__} writes commit_many one commit at a time")
    await new_run(backend)
    before = await snapshot(backend)
    parent, child = _family_writes()
    child.expected_sequence = 7  # the child's part is refused (its head is 1)
    with pytest.raises(SequenceConflictError):
        await backend.commit_many([parent, child])
    assert await snapshot(backend) == before
    assert await backend.get_run("run-1.c1") is None


async def test_a_joined_write_with_a_taken_child_id_writes_nothing(backend: StorageBackend) -> None:
    if not backend.joint_commits:
        pytest.skip(f"{type(backend).__name__} writes commit_many one commit at a time")
    await new_run(backend)
    await new_run(backend, "run-1.c1")
    before = await _state(backend)
    with pytest.raises(WorkflowAlreadyRunningError):
        await backend.commit_many(_family_writes())
    assert await _state(backend) == before


async def test_commit_many_of_a_child_that_continues_as_new_at_once(
    two_stores: tuple[StorageBackend, StorageBackend],
) -> None:
    """The child's first write ends it by continuing as new: the next run is created in the
    same write, and the child's row names it (``continued_to_run_id``)."""
    joined, one_by_one = two_stores

    def writes() -> list[Commit]:
        parent, _ = _family_writes()
        data = {"continued_to_run_id": "run-1.c1.n"}
        ended = Event("run-1.c1", EventType.WORKFLOW_CONTINUED_AS_NEW, data, timestamp=at(2))
        nxt = a_run(
            "run-1.c1.n",
            workflow_name="report",
            status=RunStatus.RUNNING,
            continued_from_run_id="run-1.c1",
            parent_run_id="run-1",
            nesting_depth=1,
        )
        child = Commit(
            "run-1.c1",
            [ended],
            expected_sequence=1,
            now=at(2),
            status=RunStatus.CONTINUED_AS_NEW,
            completed_at=at(2),
            lease=None,
            owner="worker-a",
            runs_created=[(nxt, [started("run-1.c1.n")])],
            continued_to_run_id="run-1.c1.n",
        )
        return [parent, child]

    for backend in (joined, one_by_one):
        await new_run(backend)
    await joined.commit_many(writes())
    for commit in writes():
        await one_by_one.commit(commit)
    assert await _state(joined) == await _state(one_by_one)
    assert await snapshot(joined, "run-1.c1.n") == await snapshot(one_by_one, "run-1.c1.n")
    child = await joined.get_run("run-1.c1")
    assert child is not None and child.continued_to_run_id == "run-1.c1.n"
