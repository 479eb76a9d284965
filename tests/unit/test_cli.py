"""The ``pyworkflow`` command: list, show and resume runs; clean usage errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from pyworkflow import start, step, workflow
from pyworkflow.cli import main
from pyworkflow.config import configure, reset_config
from pyworkflow.storage.sqlite import SQLiteStorageBackend


@step()
async def cli_step(x: int) -> int:
    return x + 1


@workflow()
async def cli_workflow(x: int) -> int:
    return await cli_step(x)


def make_run(db: Path) -> str:
    async def go() -> str:
        configure(storage=SQLiteStorageBackend(str(db)))
        return await start(cli_workflow, 41)

    run_id = asyncio.run(go())
    reset_config()
    return run_id


def test_list_and_show_runs(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = make_run(db)
    runner = CliRunner()
    url = f"sqlite:///{db}"
    listed = runner.invoke(main, ["--storage", url, "runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    row = json.loads(listed.output.splitlines()[0])
    assert (row["run_id"], row["status"], row["events"]) == (run_id, "completed", 4)
    shown = runner.invoke(main, ["--storage", url, "runs", "show", run_id])
    assert shown.exit_code == 0, shown.output
    assert "step.completed" in shown.output and "step:cli_step:1" in shown.output
    as_json = runner.invoke(main, ["--storage", url, "runs", "show", run_id, "--json"])
    assert [e["type"] for e in json.loads(as_json.output)["log"]][-1] == "workflow.completed"
    resumed = runner.invoke(
        main, ["--storage", url, "--module", "tests.unit.test_cli", "runs", "resume", run_id]
    )
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.splitlines() == [f"{run_id}: completed", "42"]


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    make_run(tmp_path / "x.db")
    missing = runner.invoke(main, ["--storage", url, "runs", "show", "nope"])
    assert missing.exit_code == 1 and "no workflow run with id 'nope'" in missing.output
    bad_module = runner.invoke(main, ["--module", "no.such.module", "runs", "list"])
    assert (
        bad_module.exit_code == 2 and "cannot import module 'no.such.module'" in bad_module.output
    )
    bad_url = runner.invoke(main, ["--storage", "ftp://x", "runs", "list"])
    assert bad_url.exit_code == 2 and "ftp" in bad_url.output
    assert bad_url.exception is None or isinstance(bad_url.exception, SystemExit)


def test_inspecting_runs_never_creates_storage(tmp_path: Path) -> None:
    runner = CliRunner()
    typo = tmp_path / "typo" / "runs.db"
    for command in (["list"], ["show", "r1"], ["resume", "r1"]):
        result = runner.invoke(main, ["--storage", f"sqlite:///{typo}", "runs", *command])
        assert result.exit_code == 1, result.output
        assert f"no SQLite database at {typo}" in result.output
        assert "sqlite:////absolute/path.db" in result.output
    assert not typo.parent.exists()
    folder = tmp_path / "no-such-folder"
    result = runner.invoke(main, ["--storage", f"file://{folder}", "runs", "list"])
    assert result.exit_code == 1 and f"no file storage at {folder}" in result.output
    assert not folder.exists()


def test_an_empty_listing_says_so(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"

    async def create() -> None:
        backend = SQLiteStorageBackend(str(db))
        await backend.connect()
        await backend.close()

    asyncio.run(create())
    runner = CliRunner()
    listed = runner.invoke(main, ["--storage", f"sqlite:///{db}", "runs", "list"])
    assert (listed.exit_code, listed.output) == (0, "no runs\n")
    as_json = runner.invoke(main, ["--storage", f"sqlite:///{db}", "runs", "list", "--json"])
    assert (as_json.exit_code, as_json.output) == (0, "")
