"""The root ``pyworkflow`` group: storage and runtime selection, the config file, ``--output``,
and the one place errors are answered (one line, exit 2 for usage and 1 for the rest, a traceback
only with ``-v``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pyworkflow.cli import main
from pyworkflow.cli import runs as runs_module
from tests.servers import free_port
from tests.unit.cli_support import MODULE, Cli, one_line_error


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def run_ids(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [row["run_id"] for row in json.loads(result.stdout)]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_storage_type_and_path_select_the_storage(cli: Cli, tmp_path: Path) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]
    as_type = invoke(
        "--storage", "sqlite", "--storage-path", str(cli.db), "-o", "json", "runs", "list"
    )
    assert run_ids(as_type) == [run_id]
    path_alone = invoke("--storage-path", str(cli.db), "-o", "json", "runs", "list")
    assert run_ids(path_alone) == [run_id]
    folder = tmp_path / "files"
    made = invoke(
        "--storage",
        "file",
        "--storage-path",
        str(folder),
        "--module",
        MODULE,
        "-o",
        "json",
        "workflows",
        "run",
        "cli_sum",
        "--arg",
        "x=2",
    )
    assert made.exit_code == 0, made.output and folder.is_dir()
    listed = invoke("--storage", f"file://{folder}", "-o", "json", "runs", "list")
    assert run_ids(listed) == [json.loads(made.stdout)["run_id"]]


def test_storage_path_alone_keeps_a_configured_file_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "files"
    monkeypatch.setenv("PYWORKFLOW_STORAGE_TYPE", "file")
    made = invoke(
        "--storage-path",
        str(folder),
        "--module",
        MODULE,
        "workflows",
        "run",
        "cli_sum",
        "--arg",
        "x=1",
    )
    assert made.exit_code == 0, made.output
    assert folder.is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "ftp://x"], "malformed storage URL"),
        (["--storage", "bogus"], "unknown storage 'bogus'"),
        (["--storage", "redis", "--storage-path", "x"], "applies to sqlite and file storage"),
        (["--storage", "sqlite:///x.db", "--storage-path", "y"], "not both"),
        (["--module", "no.such.module"], "cannot import module 'no.such.module'"),
        (["--runtime", "nowhere"], "'nowhere'"),
        (["--output", "yaml"], "'yaml'"),
        (["--config", "/no/such/file.yaml"], "does not exist"),
    ],
)
def test_bad_global_options_are_one_line_usage_errors(args: list[str], message: str) -> None:
    done = invoke(*args, "runs", "list")
    assert done.exit_code == 2, done.output
    assert message in one_line_error(done)


def test_the_config_file_sets_storage_and_module_and_flags_win(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]
    other = tmp_path / "other.db"
    config = tmp_path / "pyworkflow.config.yaml"
    config.write_text(f"storage:\n  type: sqlite\n  path: {other}\nmodule: {MODULE}\n")
    monkeypatch.chdir(tmp_path)
    # The config in the current directory: its module is imported, its storage used.
    started = invoke("-o", "json", "workflows", "run", "cli_sum", "--arg", "x=5")
    assert json.loads(started.stdout)["result"] == 6 and other.exists()
    assert run_ids(invoke("-o", "json", "runs", "list")) == [json.loads(started.stdout)["run_id"]]
    # --storage wins over the file; --config names another file.
    assert run_ids(invoke("--storage", cli.url, "-o", "json", "runs", "list")) == [run_id]
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(f"storage:\n  url: {cli.url}\n")
    assert run_ids(invoke("--config", str(elsewhere), "-o", "json", "runs", "list")) == [run_id]


def test_the_environment_names_the_storage(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]
    monkeypatch.setenv("PYWORKFLOW_STORAGE_URL", cli.url)
    assert run_ids(invoke("-o", "json", "runs", "list")) == [run_id]


def test_the_runtime_flag_wins_over_the_environment_for_one_command(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYWORKFLOW_RUNTIME", "celery")
    done = cli.json("--runtime", "local", "workflows", "run", "cli_sum", "--arg", "x=1")
    assert done["result"] == 2
    assert os.environ["PYWORKFLOW_RUNTIME"] == "celery"  # restored after the command


def test_the_global_output_applies_and_a_command_option_overrides_it(cli: Cli) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]
    as_json = cli("-o", "json", "runs", "list")
    assert [row["run_id"] for row in json.loads(as_json.stdout)] == [run_id]
    overridden = cli("-o", "json", "runs", "list", "-o", "plain").stdout
    assert overridden.split("\t")[0] == run_id
    legacy = cli("-o", "plain", "runs", "list", "--json").stdout
    assert json.loads(legacy.splitlines()[0])["run_id"] == run_id  # 0.4's one object per line


def test_an_unexpected_error_is_one_line_and_a_traceback_only_with_verbose(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]

    async def broken(run_id: str) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(runs_module, "get_workflow_chain", broken)
    quiet = cli("runs", "chain", run_id, code=1)
    assert one_line_error(quiet) == ("Error: RuntimeError: kaboom (run with -v for the traceback)")
    loud = CliRunner().invoke(main, ["-v", "--storage", cli.url, "runs", "chain", run_id])
    assert loud.exit_code == 1
    assert "Traceback (most recent call last)" in loud.stderr and "kaboom" in loud.stderr
    assert loud.stdout == ""


def test_an_unreachable_server_is_one_line() -> None:
    port = free_port()
    for url in (f"redis://127.0.0.1:{port}/0", f"postgresql://u:secret@127.0.0.1:{port}/db"):
        done = invoke("--storage", url, "runs", "list")
        assert done.exit_code == 1, done.output
        line = one_line_error(done)
        assert f"127.0.0.1:{port}" in line and "secret" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "list"],
        ["runs", "status", "r1"],
        ["runs", "show", "r1"],
        ["runs", "logs", "r1"],
        ["runs", "resume", "r1"],
        ["runs", "cancel", "r1"],
        ["runs", "children", "r1"],
        ["runs", "chain", "r1"],
        ["hooks", "list"],
        ["hooks", "info", "hook-1"],
        ["hooks", "resume", "r1:hook-1:s", "--payload", "1"],
        ["hooks", "run", "r1:hook-1:s", "--payload", "1"],
        ["schedules", "list"],
    ],
)
def test_reading_commands_never_create_storage(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo" / "runs.db"
    done = invoke("--storage", f"sqlite:///{typo}", *command)
    assert done.exit_code == 1, done.output
    assert f"no SQLite database at {typo}" in one_line_error(done)
    assert not typo.parent.exists()


def test_python_dash_m_runs_the_command() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pyworkflow.cli", "--version"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pyworkflow, version ")


def test_a_group_without_a_command_shows_its_help() -> None:
    for args, command in (([], "workflows"), (["runs"], "children")):
        done = invoke(*args)
        assert "Error:" not in done.output and "Traceback (most" not in done.output
        assert done.output.startswith("Usage: ") and command in done.output
