"""Answers, not tracebacks: damaged or wrong inputs give one clear error naming what is wrong."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyworkflow import api, sleep, start_child_workflow, step, workflow
from pyworkflow.model.exceptions import ConfigurationError, CorruptHistoryError
from pyworkflow.model.schemas import RunStatus
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import HandDrivenRuntime, ManualClock


async def test_a_file_that_is_not_a_sqlite_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    storage = SQLiteStorageBackend(path)
    with pytest.raises(ConfigurationError, match=f"{path} cannot be used as a SQLite database"):
        await storage.get_run("x")


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    from pyworkflow.cli import main

    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    done = CliRunner().invoke(main, ["--storage", f"sqlite:///{path}", "runs", "list"])
    assert done.exit_code == 1
    assert "cannot be used as a SQLite database" in done.output
    assert "Traceback" not in done.output


def test_deeply_nested_json_arguments_are_a_usage_error() -> None:
    from pyworkflow.cli import main

    deep = "[" * 5000 + "]" * 5000
    done = CliRunner().invoke(main, ["simulate", "examples.onboarding:onboarding", "--args", deep])
    assert done.exit_code == 2
    assert "nested too deeply" in done.output


@step(name="clear_note")
async def note() -> str:
    return "ok"


@workflow(name="clear_sleeper")
async def sleeper() -> str:
    await note()
    await sleep("1h")
    return "done"


@dataclass
class DamagedDisk:
    """A SQLite database on a hand-driven runtime whose event rows a test damages by hand."""

    db: Path
    storage: SQLiteStorageBackend
    clock: ManualClock
    runtime: HandDrivenRuntime

    @classmethod
    def at(cls, tmp_path: Path) -> DamagedDisk:
        db, clock = tmp_path / "runs.db", ManualClock()
        return cls(
            db, SQLiteStorageBackend(db), clock, HandDrivenRuntime(clock=clock, poll_interval=3600)
        )

    def damage(self, run_id: str, sequence: int, data: str = '{"comm') -> str:
        """Overwrite one event row's data; returns what it held."""
        with sqlite3.connect(self.db) as conn:
            key = (run_id, sequence)
            select = "SELECT data FROM events WHERE run_id = ? AND sequence = ?"
            (good,) = conn.execute(select, key).fetchone()
            conn.execute(
                "UPDATE events SET data = ? WHERE run_id = ? AND sequence = ?", (data, *key)
            )
        return str(good)

    async def wake_an_hour_later(self) -> Any:
        """Forget the cached runs, move an hour on and fire what is due: replays from the log."""
        engine = self.runtime.engine_for(self.storage)
        engine.evict()
        self.clock.advance(3600)
        await engine.fire_due_timers()
        await self.runtime.drain(self.storage)
        return engine

    async def close(self) -> None:
        await self.runtime.shutdown()
        await self.storage.close()


async def test_a_truncated_event_row_names_the_run_and_event_and_blocks_the_run(
    tmp_path: Path,
) -> None:
    disk = DamagedDisk.at(tmp_path)
    storage = disk.storage
    run_id = await api.start(sleeper, runtime=disk.runtime, storage=storage)
    good = disk.damage(run_id, 3)  # a disk or a hand damages one row
    with pytest.raises(CorruptHistoryError, match=f"run {run_id}, event 3"):
        await storage.get_events(run_id)
    await disk.wake_an_hour_later()
    run = await storage.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUSPENDED
    assert run.blocked is not None and run.blocked.kind.value == "corrupt_history"
    assert f"corrupt history: run {run_id}, event 3" in run.blocked.message
    disk.damage(run_id, 3, good)  # the row is repaired: the run goes on where it stopped
    assert await api.resume(run_id, runtime=disk.runtime, storage=storage) == "done"
    assert (await storage.get_run(run_id)).blocked is None
    await disk.close()


@workflow(name="clear_kid")
async def kid() -> str:
    await sleep("1d")
    return "grown"


@workflow(name="clear_parent")
async def parent_of_one() -> str:
    await start_child_workflow(kid, wait_for_completion=False)
    await note()
    await sleep("1h")
    return "done"


async def test_failing_a_parent_whose_log_is_damaged_still_cancels_its_children(
    tmp_path: Path,
) -> None:
    """``runs fail`` of a run whose log cannot name its children: they are found by their
    parent_run_id and cancelled, not left running for a parent that is gone."""
    disk = DamagedDisk.at(tmp_path)
    storage = disk.storage
    run_id = await api.start(parent_of_one, runtime=disk.runtime, storage=storage)
    await disk.runtime.drain(storage)
    [child] = await storage.list_children(run_id)
    assert child.status is RunStatus.SUSPENDED  # asleep for a day
    disk.damage(run_id, 2)  # its child_workflow.started
    engine = await disk.wake_an_hour_later()
    blocked = await storage.get_run(run_id)
    assert blocked is not None and blocked.blocked is not None
    assert await engine.impose_failure(
        run_id,
        RuntimeError("the log cannot be repaired"),
        expected_sequence=blocked.last_sequence,
        require_blocked=True,
    )
    await disk.runtime.drain(storage)
    assert (await storage.get_run(run_id)).status is RunStatus.FAILED
    assert (await storage.get_run(child.run_id)).status is RunStatus.CANCELLED
    await disk.close()


def test_names_with_control_characters_are_refused_on_every_backend() -> None:
    with pytest.raises(ValueError, match="a workflow name 'bad\\\\x00name' contains a control"):

        @workflow(name="bad\x00name")
        async def bad() -> None:
            return None

    with pytest.raises(ValueError, match="a step name"):

        @step(name="tab\there")
        async def tabbed() -> None:
            return None


async def test_an_idempotency_key_with_nul_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    storage = SQLiteStorageBackend(tmp_path / "runs.db")
    runtime = HandDrivenRuntime(clock=ManualClock(), poll_interval=3600)
    with pytest.raises(ValueError, match="an idempotency key"):
        await api.start(sleeper, runtime=runtime, storage=storage, idempotency_key="a\x00b")
    assert (await storage.list_runs())[0] == []
    await storage.close()
