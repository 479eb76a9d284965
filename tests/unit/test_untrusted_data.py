"""Stored data is data: reading it never runs code unless pickling was asked for.

Whoever can write to the database must not be able to run code on the workers that read it:
pickling is opt-in (``configure(allow_pickle=True)``), an exception record never makes the
decoder import a module it names, a run's arguments come from its ``workflow.started`` event
(an edited run row is ignored), and ``pyworkflow simulate --history FILE`` never unpickles the
file unless ``--allow-pickle`` is given.
"""

from __future__ import annotations

import base64
import json
import pickle
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyworkflow import BlockedKind, api, configure, sleep, step, workflow
from pyworkflow.model.exceptions import CorruptHistoryError, SerializationError
from pyworkflow.serialization import dumps, loads, pickle_allowed
from pyworkflow.serialization.codec import RemoteError
from pyworkflow.storage.memory import InMemoryStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.conftest import HandDrivenRuntime, ManualClock


class Opaque:
    """A value the codec has no JSON form for."""

    def __init__(self, n: int) -> None:
        self.n = n


class _Planted:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).touch, ())


def _pickled(marker: Path) -> str:
    data = base64.b64encode(pickle.dumps(_Planted(str(marker)))).decode()
    return json.dumps({"__pw__": "pickle", "v": data})


def test_pickling_is_off_by_default() -> None:
    assert pickle_allowed() is False
    with pytest.raises(SerializationError, match="allow_pickle=True"):
        dumps(Opaque(1))
    configure(allow_pickle=True)
    assert loads(dumps(Opaque(2))).n == 2


def test_a_pickle_planted_in_storage_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(SerializationError):
        loads(_pickled(marker))
    assert not marker.exists()


def test_an_exception_record_never_imports_the_module_it_names(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted_module_xyz.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "class Boom(Exception):\n    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        record = {
            "__pw__": "exception",
            "cls": "planted_module_xyz:Boom",
            "message": "boom",
            "args": ["boom"],
        }
        decoded = loads(json.dumps(record))
        assert isinstance(decoded, RemoteError) and decoded.type_name == "planted_module_xyz:Boom"
        assert not marker.exists()
        assert "planted_module_xyz" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


@step(name="untrusted_echo")
async def echo(value: Any) -> Any:
    return value


@workflow(name="untrusted_greeter")
async def greeter(name: str) -> str:
    await sleep("1h")
    return await echo(f"hello {name}")


@workflow(name="untrusted_direct")
async def direct() -> Any:
    return await echo("x")


async def test_a_run_takes_its_arguments_from_its_log_not_its_row(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    storage = SQLiteStorageBackend(db)
    clock = ManualClock()
    runtime = HandDrivenRuntime(clock=clock, poll_interval=3600)
    run_id = await api.start(greeter, "alice", runtime=runtime, storage=storage)
    # Someone with write access to the database edits the run's row while it sleeps.
    with sqlite3.connect(db) as conn:
        changed = conn.execute(
            "UPDATE runs SET input_args = ? WHERE run_id = ?", ('["mallory"]', run_id)
        ).rowcount
    assert changed == 1
    engine = runtime.engine_for(storage)
    engine.evict()  # the next activation loads the run from storage
    clock.advance(3600)
    assert await engine.fire_due_timers() == [run_id]
    await runtime.drain(storage)
    assert await api.get_workflow_result(run_id, storage=storage) == "hello alice"
    await runtime.shutdown()
    await storage.close()


def test_simulate_history_never_unpickles_unless_asked(tmp_path: Path) -> None:
    from pyworkflow.cli import main

    marker = tmp_path / "ran"
    started = {
        "run_id": "r",
        "sequence": 1,
        "type": "workflow.started",
        "timestamp": "2030-01-01T00:00:00+00:00",
        "data": {"workflow_name": "untrusted_direct", "args": "[]", "kwargs": "{}"},
    }
    step_done = {
        "run_id": "r",
        "sequence": 2,
        "type": "step.completed",
        "timestamp": "2030-01-01T00:00:01+00:00",
        "data": {"command_id": "step:untrusted_echo:1", "result": _pickled(marker)},
    }
    history = tmp_path / "history.json"
    history.write_text(json.dumps([started, step_done]))
    command = ["simulate", "tests.unit.test_untrusted_data:direct", "--history", str(history)]
    done = CliRunner().invoke(main, command)
    assert not marker.exists(), done.output
    assert "Traceback" not in done.output
    # Asked for, it is unpickled (the file is trusted): the test's planted value does run.
    configure(allow_pickle=False)
    CliRunner().invoke(main, [*command, "--allow-pickle"])
    assert marker.exists()


@step(name="untrusted_fetch")
async def fetch() -> int:
    return 41


@workflow(name="untrusted_careful")
async def careful() -> str:
    try:
        value = await fetch()
    except Exception as exc:  # noqa: BLE001 - what a user might write
        return f"caught {type(exc).__name__}"
    await sleep("1h")
    return f"value {value}"


async def _careful_run_with_result(text: str) -> tuple[Any, Any, str]:
    """A run of ``careful`` whose recorded step result is replaced by ``text``, then replayed
    from storage: (storage, runtime, run id)."""
    storage = InMemoryStorageBackend()
    clock = ManualClock()
    runtime = HandDrivenRuntime(clock=clock, poll_interval=3600)
    run_id = await api.start(careful, runtime=runtime, storage=storage)
    for event in await storage.get_events(run_id):  # the memory store shares its events
        if event.type.value == "step.completed":
            event.data["result"] = text
    engine = runtime.engine_for(storage)
    engine.evict()  # replay reads the changed log
    clock.advance(3600)
    await engine.fire_due_timers()
    await runtime.drain(storage)
    return storage, runtime, run_id


async def test_a_damaged_recorded_result_blocks_the_run_and_never_reaches_its_code() -> None:
    storage, runtime, run_id = await _careful_run_with_result('{"__pw__": "pick')
    run = await storage.get_run(run_id)
    assert run is not None and run.status.value == "suspended"  # stopped, not "caught ..."
    blocked = run.blocked
    assert blocked is not None and blocked.kind is BlockedKind.CORRUPT_HISTORY
    assert (
        f"corrupt history: run {run_id}, event 3 (step.completed), field 'result'"
        in blocked.message
    )
    events = await storage.get_events(run_id)
    assert events[-1].type.value == "sleep.started"  # nothing recorded past the damage
    with pytest.raises(CorruptHistoryError, match="event 3"):
        await api.get_workflow_result(run_id, timeout=3600, storage=storage)
    await runtime.shutdown()


async def test_a_value_unreadable_only_here_leaves_the_run_to_a_process_that_can() -> None:
    """A pickled result read with pickling off (this process's configuration) is not damage:
    the activation fails, the run stays as it was, and the code never sees the error."""
    storage, runtime, run_id = await _careful_run_with_result('{"__pw__":"pickle","v":"AAAA"}')
    run = await storage.get_run(run_id)
    assert run is not None and not run.status.is_terminal  # not failed, not "caught ..."
    assert run.blocked is not None and run.blocked.kind is BlockedKind.UNDECODABLE
    events = await storage.get_events(run_id)
    assert [e.type.value for e in events][-1] == "sleep.started"
    await runtime.shutdown()
