"""File storage housekeeping: private files, no orphans left by a compaction that was killed, and
a format marker that an older release refuses."""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
from pathlib import Path

import pytest

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.model.schemas import RunStatus, WorkflowRun
from pyworkflow.storage.file import FILE_FORMAT, FileStorageBackend


def _run(run_id: str) -> tuple[WorkflowRun, list[Event]]:
    run = WorkflowRun(run_id=run_id, workflow_name="w", status=RunStatus.RUNNING)
    return run, [Event(run_id, EventType.WORKFLOW_STARTED, {"args": "[]", "kwargs": "{}"})]


async def test_files_are_private_and_not_executable(tmp_path: Path) -> None:
    storage = FileStorageBackend(tmp_path / "data", compact_after_bytes=1)
    for n in range(3):  # (a compaction after every write: snapshots and new journals)
        await storage.create_run(*_run(f"r{n}"))
    await storage.close()
    files = [p for p in (tmp_path / "data").iterdir() if p.is_file()]
    names = {p.name.split("-")[0] for p in files}
    assert names >= {"lock", "FORMAT", "CURRENT", "journal", "snapshot"}
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0 and mode & 0o111 == 0, f"{path.name}: {oct(mode)}"


async def test_a_killed_compaction_leaves_nothing_behind(tmp_path: Path) -> None:
    base = tmp_path / "data"
    storage = FileStorageBackend(base)
    await storage.create_run(*_run("r1"))
    await storage.close()
    # What compactions killed at various points leave: other generations' files, temp files.
    for name in ("snapshot-7.json", "journal-7.jsonl", "journal-3.jsonl", "CURRENT.tmp"):
        (base / name).write_text("{}")
    again = FileStorageBackend(base)
    await again.create_run(*_run("r2"))  # the first write of a process tidies up
    left = sorted(p.name for p in base.iterdir())
    assert "snapshot-7.json" not in left and "journal-7.jsonl" not in left
    assert "journal-3.jsonl" not in left and "CURRENT.tmp" not in left
    runs, _ = await again.list_runs()
    assert [run.run_id for run in runs] == ["r1", "r2"]
    await again.close()


async def test_a_folder_says_its_format_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "data"
    storage = FileStorageBackend(base)
    await storage.create_run(*_run("r1"))
    await storage.close()
    assert (base / "FORMAT").read_text().strip() == str(FILE_FORMAT)
    # A folder written before the marker existed is format 1: it opens, and gets the marker.
    (base / "FORMAT").unlink()
    older = FileStorageBackend(base)
    assert (await older.get_run("r1")) is not None
    await older.close()
    assert (base / "FORMAT").read_text().strip() == str(FILE_FORMAT)
    # A newer release's folder is refused before anything is read or written.
    (base / "FORMAT").write_text(f"{FILE_FORMAT + 1}\n")
    before = sorted((p.name, p.stat().st_size) for p in base.iterdir())
    newer = FileStorageBackend(base)
    with pytest.raises(ConfigurationError, match=f"format {FILE_FORMAT + 1}.*newer release"):
        await newer.get_run("r1")
    with pytest.raises(ConfigurationError, match=str(base)):
        await newer.create_run(*_run("r2"))
    assert sorted((p.name, p.stat().st_size) for p in base.iterdir()) == before
    (base / "FORMAT").write_text("not a number")
    with pytest.raises(ConfigurationError, match="not a format number"):
        await FileStorageBackend(base).connect()


async def test_concurrent_first_calls_open_one_lock_file(tmp_path: Path) -> None:
    base = tmp_path / "data"
    storage = FileStorageBackend(base)
    await storage.create_run(*_run("r1"))
    await storage.close()

    def lock_fds() -> int:
        lock = str(base / "lock")
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == lock)

    before = lock_fds()
    holder = os.open(base / "lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process holds the lock: connects wait
    again = FileStorageBackend(base)
    reads = [asyncio.ensure_future(again.get_run("r1")) for _ in range(5)]
    await asyncio.sleep(0.05)  # (the holder keeps the lock a while: not a wait for a condition)
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    assert all(run is not None for run in await asyncio.gather(*reads))
    await again.close()
    assert lock_fds() == before
