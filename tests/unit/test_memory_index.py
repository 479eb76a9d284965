"""The memory store's timer and lease heaps answer exactly what a scan of its tables would.

Random sequences of the operations that move timers and leases (commits with timers, leases and
statuses, claims, renewals, expiries) run against a ``MemoryStore``; after every operation its
``next_wakeup`` and each claim's answer are compared with a plain scan of the same tables.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.schemas import UNSET, Commit, RunStatus, WorkflowRun
from pyworkflow.storage.memory import MemoryStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASABLE = (RunStatus.PENDING, RunStatus.RUNNING)


def _claimable_timers(store: MemoryStore, now: datetime) -> list[tuple[datetime, str]]:
    return sorted(
        (fire_at, run_id)
        for run_id, (fire_at, claimed_until) in store._timers.items()
        if fire_at <= now and (claimed_until is None or claimed_until <= now)
    )


def _expired_leases(store: MemoryStore, now: datetime) -> list[str]:
    runs = [
        log.run
        for log in store._runs.values()
        if log.run.status in LEASABLE
        and (
            log.run.lease_owner is None
            or (log.run.lease_expires_at is not None and log.run.lease_expires_at <= now)
        )
    ]
    return [run.run_id for run in sorted(runs, key=lambda r: (r.updated_at, r.run_id))]


def _scanned_wakeup(store: MemoryStore) -> datetime | None:
    times = [
        fire_at if claimed_until is None else max(fire_at, claimed_until)
        for fire_at, claimed_until in store._timers.values()
    ]
    for log in store._runs.values():
        run = log.run
        if run.status not in LEASABLE:
            continue
        if run.lease_expires_at is not None:
            times.append(run.lease_expires_at)
        if run.lease_owner is None:
            times.append(run.updated_at or T0)
    return min(times, default=None)


@pytest.mark.parametrize("seed", range(25))
def test_heaps_agree_with_a_scan(seed: int) -> None:
    rng = random.Random(seed)
    store = MemoryStore()
    now = T0
    run_ids = [f"run-{i}" for i in range(12)]
    for run_id in run_ids[:6]:
        run = WorkflowRun(run_id=run_id, workflow_name="wf", status=RunStatus.RUNNING)
        store.create_run(run, [Event(run_id, EventType.WORKFLOW_STARTED)], now)

    def some_time() -> datetime:
        return now + timedelta(seconds=rng.choice([-5, 0, 1, 3, 10, 30]))

    for _ in range(300):
        now += timedelta(seconds=rng.choice([0, 0, 1, 2, 7]))
        live = [r for r in store._runs if not store._runs[r].run.status.is_terminal]
        op = rng.randrange(8)
        if op == 0 and len(store._runs) < len(run_ids):
            run_id = run_ids[len(store._runs)]
            owner = rng.choice([None, "a", "b"])
            run = WorkflowRun(
                run_id=run_id,
                workflow_name="wf",
                status=rng.choice(LEASABLE),
                lease_owner=owner,
                lease_expires_at=None if owner is None else some_time(),
            )
            store.create_run(run, [Event(run_id, EventType.WORKFLOW_STARTED)], now)
        elif op == 1 and live:
            run_id = rng.choice(live)
            status = rng.choice([None, RunStatus.RUNNING, RunStatus.SUSPENDED, RunStatus.COMPLETED])
            lease = rng.choice([UNSET, None, ("a", some_time()), ("b", some_time())])
            timer = rng.choice([UNSET, None, some_time()])
            store.commit(Commit(run_id, status=status, lease=lease, timer=timer), now)
        elif op == 2:
            limit = rng.choice([1, 2, 100])
            expected = _claimable_timers(store, now)[:limit]
            claimed = store.claim_due_timers(now, limit, timedelta(seconds=rng.choice([5, 30])))
            assert [(t.fire_at, t.run_id) for t in claimed] == expected
        elif op == 3:
            limit = rng.choice([1, 3, 100])
            expected = _expired_leases(store, now)[:limit]
            claimed = store.claim_expired_leases(now, "sweeper", now + timedelta(seconds=30), limit)
            assert claimed == expected
        elif op == 4 and store._runs:
            owner = rng.choice(["a", "b", "sweeper"])
            store.renew_leases(rng.sample(list(store._runs), 2), owner, some_time())
        elif op == 5 and store._runs:
            run_id = rng.choice(list(store._runs))
            store.set_leases([run_id], rng.choice(["a", "b"]), some_time())
        elif op == 6 and store._runs:
            store.schedule_timer(rng.choice(list(store._runs)), some_time())
        assert store.next_wakeup() == _scanned_wakeup(store)


def test_stale_entries_do_not_pile_up() -> None:
    store = MemoryStore()
    run = WorkflowRun(run_id="r", workflow_name="wf", status=RunStatus.RUNNING)
    store.create_run(run, [Event("r", EventType.WORKFLOW_STARTED)], T0)
    for i in range(5_000):
        at = T0 + timedelta(seconds=i)
        store.commit(Commit("r", timer=at, lease=("a", at)), T0)
    assert len(store._timer_heap) <= 2 * len(store._timers) + 1_000
    assert len(store._lease_heap) <= 2 * len(store._runs) + 1_000
    assert store.next_wakeup() == T0 + timedelta(seconds=4_999)
