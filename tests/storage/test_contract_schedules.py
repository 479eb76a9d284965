"""The storage contract for schedules: ``create_schedule``, ``update_schedule`` (compare-and-set on
``Schedule.revision``), ``get_schedule``, ``list_schedules`` and ``claim_due_schedules``, on every
backend.

What the scheduler relies on: a schedule is created once; a write at a stale revision changes
nothing; the record comes back exactly as written; a due schedule is handed to one claimant at a
time, earliest first, and a claim moves only the poll time (never the record or its revision);
the "what is due" query stays cheap however many schedules there are.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pyworkflow.model.schedules import (
    CalendarSpec,
    OverlapPolicy,
    Schedule,
    ScheduleSpec,
    ScheduleStatus,
    schedule_to_json,
)
from pyworkflow.storage.base import StorageBackend
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.postgres import PostgresStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import namespace_for
from tests.storage.conftest import Backends
from tests.storage.test_contract import T0, at, new_run

EVERY_FIVE_MINUTES = ScheduleSpec(interval=timedelta(minutes=5))


def a_schedule(schedule_id: str = "sched-1", **changes: Any) -> Schedule:
    changes.setdefault("workflow_name", "report")
    changes.setdefault("spec", EVERY_FIVE_MINUTES)
    changes.setdefault("created_at", T0)
    return Schedule(schedule_id=schedule_id, **changes)


def a_full_schedule(schedule_id: str = "sched-1") -> Schedule:
    """A schedule with every field away from its default (times in several offsets)."""
    plus_two = timezone(timedelta(hours=2))
    spec = ScheduleSpec(
        cron="*/15 9-17 * * 1-5",
        interval=timedelta(hours=1, microseconds=250),
        calendar=[
            CalendarSpec(second=30, minute=[0, 30], hour=None, day_of_month=[1, 15]),
            CalendarSpec(hour=12, month=[1, 7], day_of_week=4),
        ],
        timezone="Europe/Paris",
        start_at=datetime(2025, 1, 1, 8, 0, tzinfo=plus_two),
        end_at=datetime(2030, 1, 1, tzinfo=UTC),
        jitter=timedelta(seconds=90),
        catchup_window=timedelta(days=1),
    )
    return a_schedule(
        schedule_id,
        workflow_name="nightly:report",
        spec=spec,
        status=ScheduleStatus.PAUSED,
        args='[1,"two",{"three":3}]',
        kwargs='{"region":"eu","ü":"ß"}',
        overlap_policy=OverlapPolicy.BUFFER_ALL,
        created_at=datetime(2025, 3, 1, 14, 0, 0, 999999, tzinfo=plus_two),
        updated_at=at(1),
        last_run_at=at(2),
        next_run_time=datetime(2025, 3, 1, 13, 15, tzinfo=plus_two),
        last_run_id="run-41",
        running_run_ids=["run-40", "run-41"],
        buffered_count=2,
        total_runs=41,
        successful_runs=38,
        failed_runs=2,
        skipped_runs=7,
        metadata={"owner": "ops", "tags": ["a", "b"], "nested": {"n": 1.5, "none": None}},
        poll_at=at(300),
        starting={"run-42": at(240).isoformat(), "run-43": at(270).isoformat()},
        buffered_slots=[at(180).isoformat(), at(210).isoformat()],
    )


def as_stored(schedule: Schedule, revision: int) -> Schedule:
    stored = schedule.copy()
    stored.revision = revision
    return stored


async def created(backend: StorageBackend, schedule: Schedule) -> Schedule:
    stored, was_created = await backend.create_schedule(schedule)
    assert was_created and stored.revision == 1
    return stored


def ids(schedules: list[Schedule]) -> list[str]:
    return [schedule.schedule_id for schedule in schedules]


# -- create and get -----------------------------------------------------------------------------


async def test_create_stores_revision_one_and_a_taken_id_writes_nothing(
    backend: StorageBackend,
) -> None:
    schedule = a_schedule(poll_at=at(10), revision=7)
    stored, was_created = await backend.create_schedule(schedule)
    assert was_created
    assert stored == as_stored(schedule, 1)
    assert schedule.revision == 7  # the caller's record is left as it was
    assert await backend.get_schedule("sched-1") == stored

    other = a_schedule(workflow_name="other", status=ScheduleStatus.PAUSED, poll_at=at(1))
    again, was_created = await backend.create_schedule(other)
    assert not was_created
    assert again == stored
    assert await backend.get_schedule("sched-1") == stored
    assert ids(await backend.list_schedules()) == ["sched-1"]
    assert await backend.list_schedules(workflow_name="other") == []
    # The poll time is the first one's too.
    assert await backend.claim_due_schedules(at(5)) == []
    assert await backend.claim_due_schedules(at(10)) == [stored]


async def test_get_of_an_unknown_schedule_is_none(backend: StorageBackend) -> None:
    assert await backend.get_schedule("nope") is None
    await created(backend, a_schedule())
    assert await backend.get_schedule("sched-") is None
    assert await backend.get_schedule("sched-1") is not None


async def test_every_field_round_trips_through_create_update_and_claim(
    backend: StorageBackend,
) -> None:
    schedule = a_full_schedule()
    stored = await created(backend, schedule)
    assert schedule_to_json(stored) == schedule_to_json(as_stored(schedule, 1))
    fetched = await backend.get_schedule("sched-1")
    assert fetched is not None
    assert schedule_to_json(fetched) == schedule_to_json(stored)

    changed = fetched.copy()
    changed.spec = ScheduleSpec(calendar=CalendarSpec(minute=5), timezone="America/New_York")
    changed.status = ScheduleStatus.ACTIVE
    changed.total_runs += 1
    changed.starting = {}
    changed.buffered_slots = [at(330).isoformat()]
    changed.next_run_time = at(600)
    changed.poll_at = at(400)
    updated = await backend.update_schedule(changed, 1)
    assert updated is not None and updated.revision == 2
    assert schedule_to_json(updated) == schedule_to_json(as_stored(changed, 2))
    fetched = await backend.get_schedule("sched-1")
    assert fetched is not None
    assert schedule_to_json(fetched) == schedule_to_json(updated)
    (claimed,) = await backend.claim_due_schedules(at(400))
    assert schedule_to_json(claimed) == schedule_to_json(updated)
    (listed,) = await backend.list_schedules()
    assert schedule_to_json(listed) == schedule_to_json(updated)


async def test_returned_schedules_are_copies(backend: StorageBackend) -> None:
    stored = await created(backend, a_schedule(metadata={"k": [1]}, poll_at=at(1)))
    stored.metadata["k"].append(2)
    stored.running_run_ids.append("run-x")
    fetched = await backend.get_schedule("sched-1")
    assert fetched is not None and fetched.metadata == {"k": [1]} and fetched.running_run_ids == []
    fetched.total_runs = 99
    (claimed,) = await backend.claim_due_schedules(at(1))
    assert claimed.total_runs == 0 and claimed.metadata == {"k": [1]}


# -- listing ------------------------------------------------------------------------------------


async def test_list_orders_by_creation_then_id_and_filters(backend: StorageBackend) -> None:
    # (created in an order unlike the listing's)
    for schedule_id, seconds, name, status in [
        ("e", 3, "report", ScheduleStatus.ACTIVE),
        ("b", 1, "sync", ScheduleStatus.PAUSED),
        ("d", 1, "report", ScheduleStatus.ACTIVE),
        ("a", 2, "report", ScheduleStatus.DELETED),
        ("c", 1, "sync", ScheduleStatus.ACTIVE),
        ("f", 0, "report", ScheduleStatus.PAUSED),
    ]:
        await created(
            backend,
            a_schedule(schedule_id, created_at=at(seconds), workflow_name=name, status=status),
        )

    assert ids(await backend.list_schedules()) == ["f", "b", "c", "d", "a", "e"]
    assert ids(await backend.list_schedules(workflow_name="report")) == ["f", "d", "a", "e"]
    assert ids(await backend.list_schedules(status=ScheduleStatus.ACTIVE)) == ["c", "d", "e"]
    assert ids(
        await backend.list_schedules(workflow_name="sync", status=ScheduleStatus.ACTIVE)
    ) == ["c"]
    assert await backend.list_schedules(workflow_name="unknown") == []
    assert await backend.list_schedules(workflow_name="repor") == []

    assert ids(await backend.list_schedules(limit=2)) == ["f", "b"]
    assert ids(await backend.list_schedules(limit=2, offset=2)) == ["c", "d"]
    assert ids(await backend.list_schedules(limit=2, offset=4)) == ["a", "e"]
    assert await backend.list_schedules(limit=2, offset=6) == []
    assert ids(await backend.list_schedules(workflow_name="report", limit=2, offset=1)) == [
        "d",
        "a",
    ]
    assert await backend.list_schedules(limit=0) == []


async def test_an_update_moves_a_schedule_between_filters(backend: StorageBackend) -> None:
    first = await created(backend, a_schedule("s1", created_at=at(1)))
    await created(backend, a_schedule("s2", created_at=at(2)))
    changed = first.copy()
    changed.status = ScheduleStatus.PAUSED
    changed.workflow_name = "renamed"
    changed.created_at = at(3)
    assert await backend.update_schedule(changed, 1) is not None

    assert ids(await backend.list_schedules()) == ["s2", "s1"]
    assert ids(await backend.list_schedules(status=ScheduleStatus.ACTIVE)) == ["s2"]
    assert ids(await backend.list_schedules(status=ScheduleStatus.PAUSED)) == ["s1"]
    assert ids(await backend.list_schedules(workflow_name="report")) == ["s2"]
    assert ids(
        await backend.list_schedules(workflow_name="renamed", status=ScheduleStatus.PAUSED)
    ) == ["s1"]
    assert await backend.list_schedules(workflow_name="report", status=ScheduleStatus.PAUSED) == []


async def test_ids_and_names_with_separators_stay_apart(backend: StorageBackend) -> None:
    for schedule_id in ("s", "s:x", "s2", "é", "s:poll"):
        await created(
            backend, a_schedule(schedule_id, workflow_name=f"flow:{schedule_id}", poll_at=at(1))
        )
    assert ids(await backend.list_schedules()) == ["s", "s2", "s:poll", "s:x", "é"]
    assert ids(await backend.list_schedules(workflow_name="flow:s")) == ["s"]
    assert ids(await backend.list_schedules(workflow_name="flow:s:x")) == ["s:x"]
    fetched = await backend.get_schedule("s:x")
    assert fetched is not None and fetched.workflow_name == "flow:s:x"
    assert ids(await backend.claim_due_schedules(at(1))) == ["s", "s2", "s:poll", "s:x", "é"]


# -- compare-and-set ----------------------------------------------------------------------------


async def test_update_is_compare_and_set_on_the_revision(backend: StorageBackend) -> None:
    stored = await created(backend, a_schedule(poll_at=at(10)))

    first = stored.copy()
    first.total_runs = 1
    first.poll_at = at(20)
    updated = await backend.update_schedule(first, 1)
    assert updated == as_stored(first, 2)

    stale = stored.copy()
    stale.total_runs = 99
    stale.poll_at = at(5)
    assert await backend.update_schedule(stale, 1) is None
    assert await backend.update_schedule(stale, 3) is None
    assert await backend.get_schedule("sched-1") == updated
    assert await backend.claim_due_schedules(at(10)) == []  # the stale poll time was not set

    second = updated.copy()
    second.total_runs = 2
    assert await backend.update_schedule(second, 2) == as_stored(second, 3)
    assert (await backend.get_schedule("sched-1") or stored).total_runs == 2


async def test_update_of_an_unknown_schedule_writes_nothing(backend: StorageBackend) -> None:
    assert await backend.update_schedule(a_schedule("ghost", poll_at=at(1)), 0) is None
    assert await backend.update_schedule(a_schedule("ghost", poll_at=at(1)), 1) is None
    assert await backend.get_schedule("ghost") is None
    assert await backend.list_schedules() == []
    assert await backend.claim_due_schedules(at(2)) == []


async def test_racing_updates_at_one_revision_have_one_winner(backend: StorageBackend) -> None:
    stored = await created(backend, a_schedule())
    attempts = []
    for i in range(8):
        attempt = stored.copy()
        attempt.total_runs = i
        attempts.append(attempt)
    results = await asyncio.gather(*(backend.update_schedule(a, 1) for a in attempts))
    winners = [result for result in results if result is not None]
    assert len(winners) == 1 and winners[0].revision == 2
    assert await backend.get_schedule("sched-1") == winners[0]


# -- claims -------------------------------------------------------------------------------------


async def test_claims_hand_out_due_schedules_earliest_first(backend: StorageBackend) -> None:
    # Ids in another order than poll times; one with no poll time, one not yet due.
    for schedule_id, poll_at in [
        ("a", at(30)),
        ("b", at(10)),
        ("c", at(20)),
        ("d", None),
        ("e", at(100)),
        ("f", at(20)),
    ]:
        await created(backend, a_schedule(schedule_id, poll_at=poll_at))

    assert await backend.claim_due_schedules(at(9)) == []
    assert ids(await backend.claim_due_schedules(at(40), limit=3)) == ["b", "c", "f"]
    assert ids(await backend.claim_due_schedules(at(40), limit=3)) == ["a"]
    assert await backend.claim_due_schedules(at(40)) == []
    assert await backend.claim_due_schedules(at(40), limit=0) == []


async def test_a_claim_holds_until_it_runs_out(backend: StorageBackend) -> None:
    stored = await created(backend, a_schedule(poll_at=at(10)))
    claim_for = timedelta(seconds=30)
    assert await backend.claim_due_schedules(at(15), claim_for=claim_for) == [stored]
    assert await backend.claim_due_schedules(at(15), claim_for=claim_for) == []
    assert await backend.claim_due_schedules(at(44.999999), claim_for=claim_for) == []
    # The claimant died: the schedule is handed out again once its claim ends, at the claim's
    # end (now + claim_for), earliest first among others due by then.
    await created(backend, a_schedule("later", poll_at=at(44)))
    assert ids(await backend.claim_due_schedules(at(45))) == ["later", "sched-1"]
    # The default claim lasts ten seconds.
    assert await backend.claim_due_schedules(at(54)) == []
    assert ids(await backend.claim_due_schedules(at(55))) == ["later", "sched-1"]


async def test_claiming_changes_neither_the_record_nor_its_revision(
    backend: StorageBackend,
) -> None:
    stored = await created(backend, a_full_schedule())
    (claimed,) = await backend.claim_due_schedules(at(300))
    assert schedule_to_json(claimed) == schedule_to_json(stored)
    fetched = await backend.get_schedule("sched-1")
    assert fetched is not None
    assert schedule_to_json(fetched) == schedule_to_json(stored)
    assert fetched.poll_at == at(300)  # the record's poll time, not the claim's
    # The claimant's write goes through at the revision it was handed.
    done = claimed.copy()
    done.total_runs += 1
    done.poll_at = at(600)
    assert await backend.update_schedule(done, claimed.revision) == as_stored(done, 2)


async def test_an_update_after_a_claim_sets_the_next_poll_time(backend: StorageBackend) -> None:
    await created(backend, a_schedule("later", poll_at=at(10)))
    await created(backend, a_schedule("never", poll_at=at(10)))
    await created(backend, a_schedule("sooner", poll_at=at(10)))
    claimed = {s.schedule_id: s for s in await backend.claim_due_schedules(at(10))}
    assert sorted(claimed) == ["later", "never", "sooner"]

    later = claimed["later"].copy()
    later.poll_at = at(100)  # past the claim's end
    never = claimed["never"].copy()
    never.poll_at = None
    sooner = claimed["sooner"].copy()
    sooner.poll_at = at(12)  # before the claim's end: the claim is replaced
    for schedule in (later, never, sooner):
        assert await backend.update_schedule(schedule, 1) is not None

    assert await backend.claim_due_schedules(at(11)) == []
    assert ids(await backend.claim_due_schedules(at(12))) == ["sooner"]  # claimed until at(22)
    assert await backend.claim_due_schedules(at(21)) == []
    assert ids(await backend.claim_due_schedules(at(99))) == ["sooner"]  # until at(109)
    assert ids(await backend.claim_due_schedules(at(100))) == ["later"]  # until at(110)
    assert ids(await backend.claim_due_schedules(at(10_000))) == ["sooner", "later"]
    assert ids(await backend.list_schedules()) == ["later", "never", "sooner"]

    # A schedule without a poll time is claimable again once an update gives it one.
    revived = (await backend.get_schedule("never") or never).copy()
    revived.poll_at = at(50)
    assert await backend.update_schedule(revived, 2) is not None
    assert ids(await backend.claim_due_schedules(at(10_000))) == ["never"]


async def test_concurrent_claims_hand_each_schedule_out_once(backend: StorageBackend) -> None:
    for i in range(20):
        await created(backend, a_schedule(f"s{i:02d}", poll_at=at(i)))
    batches = await asyncio.gather(
        *(backend.claim_due_schedules(at(30), limit=3) for _ in range(12))
    )
    claimed = [schedule_id for batch in batches for schedule_id in ids(batch)]
    assert sorted(claimed) == [f"s{i:02d}" for i in range(20)]


async def test_schedules_live_beside_runs(backend: StorageBackend) -> None:
    await new_run(backend)
    await created(backend, a_schedule(poll_at=at(1)))
    runs, _ = await backend.list_runs()
    assert [run.run_id for run in runs] == ["run-1"]
    assert await backend.claim_due_timers(at(2)) == []
    assert ids(await backend.claim_due_schedules(at(2))) == ["sched-1"]


async def test_the_due_query_finds_the_few_due_among_many_schedules(
    backend: StorageBackend,
) -> None:
    """2,000 schedules, most of them not due (or never): each tick claims exactly the due ones,
    earliest first. (How fast a tick is with 10,000 is measured in ``bench/schedules.py``.)"""
    count = 2_000
    schedules = [
        a_schedule(
            f"s{i:05d}",
            created_at=at(i),
            poll_at=None if i % 10 == 0 else at(1_000 + i),
        )
        for i in range(count)
    ]
    for start in range(0, count, 32):  # (a few at a time: as many connections at most)
        await asyncio.gather(*(backend.create_schedule(s) for s in schedules[start : start + 32]))
    assert await backend.claim_due_schedules(at(0)) == []

    claimed: list[str] = []
    claim_for = timedelta(hours=1)
    for tick in range(1, 41):
        batch = await backend.claim_due_schedules(at(1_000 + tick * 5), 100, claim_for)
        claimed += ids(batch)
    assert claimed == [f"s{i:05d}" for i in range(1, 201) if i % 10 != 0]


# -- durable backends: restarts and several processes -------------------------------------------


async def test_schedules_survive_reopening(durable: Backends) -> None:
    first = durable.open()
    full = await created(first, a_full_schedule("full"))
    plain = await created(first, a_schedule("plain", created_at=at(-1), poll_at=at(10)))
    await created(first, a_schedule("idle"))
    changed = plain.copy()
    changed.total_runs = 5
    changed.poll_at = at(20)
    updated = await first.update_schedule(changed, 1)
    assert updated is not None
    assert ids(await first.claim_due_schedules(at(20), claim_for=timedelta(seconds=60))) == [
        "plain"
    ]
    listed = [schedule_to_json(s) for s in await first.list_schedules()]
    await first.close()

    second = durable.open()
    assert [schedule_to_json(s) for s in await second.list_schedules()] == listed
    fetched = await second.get_schedule("full")
    assert fetched is not None and schedule_to_json(fetched) == schedule_to_json(full)
    assert await second.get_schedule("plain") == updated
    assert await second.update_schedule(changed, 1) is None  # the revision survived
    assert await second.claim_due_schedules(at(79)) == []  # the claim survived
    assert ids(await second.claim_due_schedules(at(80))) == ["plain"]  # until at(90)
    assert ids(await second.claim_due_schedules(at(300))) == ["plain", "full"]
    taken, was_created = await second.create_schedule(a_schedule("full"))
    assert not was_created and schedule_to_json(taken) == schedule_to_json(full)


async def test_two_backends_on_one_store_share_schedules(durable: Backends) -> None:
    a, b = durable.open(), durable.open()
    stored = await created(a, a_schedule(poll_at=at(5)))
    assert await b.get_schedule("sched-1") == stored
    taken, was_created = await b.create_schedule(a_schedule(workflow_name="other"))
    assert not was_created and taken == stored

    first = stored.copy()
    first.total_runs = 1
    second = stored.copy()
    second.total_runs = 2
    results = await asyncio.gather(a.update_schedule(first, 1), b.update_schedule(second, 1))
    assert sum(result is not None for result in results) == 1
    winner = next(result for result in results if result is not None)
    assert await a.get_schedule("sched-1") == winner == await b.get_schedule("sched-1")


async def test_concurrent_claimants_never_get_the_same_schedule(durable: Backends) -> None:
    a, b = durable.open(), durable.open()
    for i in range(30):
        await created(a, a_schedule(f"s{i:02d}", poll_at=at(i % 7)))
    await b.get_schedule("s00")  # both connected before the race

    batches = await asyncio.gather(
        *((a, b)[i % 2].claim_due_schedules(at(10), limit=4) for i in range(16))
    )
    claimed = [schedule_id for batch in batches for schedule_id in ids(batch)]
    assert sorted(claimed) == [f"s{i:02d}" for i in range(30)]
    for batch in batches:  # each batch earliest first
        polls = [(s.poll_at or T0, s.schedule_id) for s in batch]
        assert polls == sorted(polls)

    # Claimed until at(20): then everything is due again, and again handed out once.
    assert not any(
        await asyncio.gather(a.claim_due_schedules(at(19)), b.claim_due_schedules(at(19)))
    )
    batches = await asyncio.gather(
        *((a, b)[i % 2].claim_due_schedules(at(20), limit=7) for i in range(8))
    )
    claimed = [schedule_id for batch in batches for schedule_id in ids(batch)]
    assert sorted(claimed) == [f"s{i:02d}" for i in range(30)]


# -- what each durable backend keeps -------------------------------------------------------------


async def test_file_journals_schedules_and_compacts_them(tmp_path: Path) -> None:
    writer = FileStorageBackend(tmp_path, compact_after_bytes=6000)
    full = await created(writer, a_full_schedule("full"))
    stored = await created(writer, a_schedule(poll_at=at(1)))
    for i in range(1, 8):
        changed = stored.copy()
        changed.total_runs = i
        changed.poll_at = at(i)
        updated = await writer.update_schedule(changed, i)
        assert updated is not None
        stored = updated
        assert len(await writer.claim_due_schedules(at(i), claim_for=timedelta(seconds=60))) == 1
    assert int((tmp_path / "CURRENT").read_text()) >= 1  # compacted at least once
    await created(writer, a_schedule("after", poll_at=at(2)))
    await writer.close()

    fresh = FileStorageBackend(tmp_path)
    fetched = await fresh.get_schedule("full")
    assert fetched is not None and schedule_to_json(fetched) == schedule_to_json(full)
    assert await fresh.get_schedule("sched-1") == stored
    # The last claim (until at(67)) came through the snapshot or the journal.
    assert ids(await fresh.claim_due_schedules(at(66))) == ["after"]  # until at(76)
    assert ids(await fresh.claim_due_schedules(at(300))) == ["sched-1", "after", "full"]
    await fresh.close()


async def test_file_replays_schedule_lines_written_by_another_backend(tmp_path: Path) -> None:
    writer, reader = FileStorageBackend(tmp_path), FileStorageBackend(tmp_path)
    assert await reader.list_schedules() == []  # (loaded before the writes)
    stored = await created(writer, a_schedule(poll_at=at(1)))
    changed = stored.copy()
    changed.poll_at = at(2)
    assert await writer.update_schedule(changed, 1) is not None
    assert ids(await writer.claim_due_schedules(at(2))) == ["sched-1"]
    assert await reader.claim_due_schedules(at(11.9)) == []
    assert await reader.get_schedule("sched-1") == as_stored(changed, 2)
    lines = (tmp_path / "journal-0.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["op"] for line in lines] == [
        "create_schedule",
        "update_schedule",
        "claim_schedules",
    ]
    for backend in (writer, reader):
        await backend.close()


async def test_file_loads_a_snapshot_written_before_schedules(tmp_path: Path) -> None:
    writer = FileStorageBackend(tmp_path, compact_after_bytes=1)  # a snapshot after each write
    await new_run(writer)
    await writer.close()
    generation = (tmp_path / "CURRENT").read_text()
    snapshot_path = tmp_path / f"snapshot-{generation}.json"
    snapshot = json.loads(snapshot_path.read_bytes())
    assert snapshot.pop("schedules") == []
    snapshot_path.write_text(json.dumps(snapshot))

    old = FileStorageBackend(tmp_path)
    assert await old.get_run("run-1") is not None
    assert await old.list_schedules() == []
    await created(old, a_schedule(poll_at=at(1)))
    assert ids(await old.claim_due_schedules(at(1))) == ["sched-1"]
    await old.close()


async def test_sqlite_adds_the_schedules_table_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "db" / "pyworkflow.db"
    backend = SQLiteStorageBackend(path)
    await new_run(backend)
    await backend.close()
    db = sqlite3.connect(path)  # as a database made before schedules existed
    db.execute("DROP TABLE schedules")
    db.commit()
    db.close()

    again = SQLiteStorageBackend(path)
    assert await again.get_run("run-1") is not None
    await created(again, a_schedule(poll_at=at(1)))
    assert ids(await again.claim_due_schedules(at(1))) == ["sched-1"]
    await again.close()
    await SQLiteStorageBackend(path).close()  # connecting again changes nothing
    db = sqlite3.connect(path)
    indexes = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'schedules'"
        " AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    assert indexes == [("schedules_created",), ("schedules_poll_at",)]
    db.close()


async def test_sqlite_finds_due_schedules_through_the_poll_index(tmp_path: Path) -> None:
    backend = SQLiteStorageBackend(tmp_path / "db" / "pyworkflow.db")
    await backend.connect()
    db = sqlite3.connect(backend.db_path)
    for query in (
        "SELECT 1 FROM schedules WHERE poll_at <= ? LIMIT 1",
        "SELECT schedule_id, data FROM schedules WHERE poll_at <= ?"
        " ORDER BY poll_at, schedule_id LIMIT ?",
    ):
        plan = db.execute("EXPLAIN QUERY PLAN " + query, (0,) * query.count("?")).fetchall()
        details = " ".join(row[-1] for row in plan)
        assert "USING" in details and "schedules_poll_at" in details, details
        assert "TEMP B-TREE" not in details, details  # no sort: the index gives the order
    db.close()
    await backend.close()


async def test_postgres_adds_the_schedules_table_to_an_existing_schema(
    postgres_server: Any, tmp_path: Path
) -> None:
    schema = namespace_for(tmp_path)
    backend = PostgresStorageBackend(postgres_server.dsn, schema=schema)
    await new_run(backend)
    # As a schema made before schedules existed.
    await backend._run(lambda conn: conn.execute(f'DROP TABLE "{schema}".schedules'))
    await backend.close()

    again = PostgresStorageBackend(postgres_server.dsn, schema=schema)
    assert await again.get_run("run-1") is not None
    await created(again, a_schedule(poll_at=at(1)))
    assert ids(await again.claim_due_schedules(at(1))) == ["sched-1"]
    indexes = await again._run(
        lambda conn: conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'schedules'",
            schema,
        )
    )
    assert sorted(row[0] for row in indexes) == [
        "schedules_created",
        "schedules_pkey",
        "schedules_poll_at",
    ]
    await again.close()
