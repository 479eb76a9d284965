"""``pyworkflow setup`` (a config file that loads back) and ``pyworkflow quickstart`` (a project
that runs as it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from pyworkflow.cli import main
from pyworkflow.cli import setup as setup_command
from pyworkflow.config import configure_from_yaml, get_config, get_storage
from pyworkflow.storage.file import FileStorageBackend
from pyworkflow.storage.sqlite import SQLiteStorageBackend
from tests.unit.cli_support import one_line_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def test_setup_with_flags_writes_a_config_that_loads_back(tmp_path: Path) -> None:
    db = tmp_path / "data" / "runs.db"
    done = invoke(
        "setup", "--storage", "sqlite", "--storage-path", str(db), "--module", "app.flows"
    )
    assert done.exit_code == 0, done.output
    written = yaml.safe_load((tmp_path / "pyworkflow.config.yaml").read_text())
    assert written == {
        "runtime": "local",
        "storage": {"type": "sqlite", "path": str(db)},
        "module": "app.flows",
    }
    configure_from_yaml(tmp_path / "pyworkflow.config.yaml")
    storage = get_storage()
    assert isinstance(storage, SQLiteStorageBackend) and storage.db_path == str(db)
    assert get_config().extra["module"] == "app.flows"


def test_setup_celery_with_a_url_and_two_modules(tmp_path: Path) -> None:
    done = invoke(
        "setup",
        "--storage",
        "redis://cache:6379/2",
        "--runtime",
        "celery",
        "--broker",
        "redis://broker:6379/0",
        "--module",
        "a.flows",
        "--module",
        "b.flows",
        "--config-file",
        "conf/pw.yaml",
        "-o",
        "json",
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["config_file"] == "conf/pw.yaml"
    written = yaml.safe_load((tmp_path / "conf" / "pw.yaml").read_text())
    assert written == {
        "runtime": "celery",
        "storage": {"url": "redis://cache:6379/2"},
        "module": ["a.flows", "b.flows"],
        "celery": {"broker": "redis://broker:6379/0"},
    }
    configure_from_yaml(tmp_path / "conf" / "pw.yaml")
    assert get_config().default_runtime == "celery"
    assert get_config().extra["celery_broker"] == "redis://broker:6379/0"


def test_setup_yes_takes_the_defaults(tmp_path: Path) -> None:
    assert invoke("setup", "--yes").exit_code == 0
    written = yaml.safe_load((tmp_path / "pyworkflow.config.yaml").read_text())
    assert written == {
        "runtime": "local",
        "storage": {"type": "sqlite", "path": "./pyworkflow_data/pyworkflow.db"},
    }


def test_setup_in_a_script_never_prompts(tmp_path: Path) -> None:
    missing = invoke("setup")
    assert missing.exit_code == 2
    assert "give --storage, or --yes for the defaults" in one_line_error(missing)
    no_broker = invoke("setup", "--storage", "memory", "--runtime", "celery")
    assert no_broker.exit_code == 2 and "--broker" in one_line_error(no_broker)
    bad = invoke("setup", "--storage", "ftp://x")
    assert bad.exit_code == 2 and "malformed storage URL" in one_line_error(bad)
    assert not (tmp_path / "pyworkflow.config.yaml").exists()


def test_setup_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    config = tmp_path / "pyworkflow.config.yaml"
    config.write_text("runtime: local\n")
    kept = invoke("setup", "--storage", "memory")
    assert kept.exit_code == 1
    assert one_line_error(kept) == (
        "Error: pyworkflow.config.yaml already exists (--force overwrites it)"
    )
    assert config.read_text() == "runtime: local\n"
    assert invoke("setup", "--storage", "memory", "--force").exit_code == 0
    assert yaml.safe_load(config.read_text())["storage"] == {"type": "memory"}


def test_setup_at_a_terminal_asks_for_what_is_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(setup_command, "interactive", lambda: True)
    done = invoke("setup", "--runtime", "local", input="file\nstate\nmy.flows\n")
    assert done.exit_code == 0, done.output
    assert "storage" in done.output and "file path" in done.output  # the questions asked
    assert "runtime [" not in done.output  # given as an option: not asked
    written = yaml.safe_load((tmp_path / "pyworkflow.config.yaml").read_text())
    assert written == {
        "runtime": "local",
        "storage": {"type": "file", "path": "state"},
        "module": "my.flows",
    }
    configure_from_yaml(tmp_path / "pyworkflow.config.yaml")
    assert isinstance(get_storage(), FileStorageBackend)


def test_setup_does_not_read_a_broken_config_it_is_asked_to_replace(tmp_path: Path) -> None:
    (tmp_path / "pyworkflow.config.yaml").write_text("module: no.such.module\n")
    assert invoke("runs", "list").exit_code == 2  # other commands import the module
    done = invoke("setup", "--storage", "memory", "--force")
    assert done.exit_code == 0, done.output


def test_quickstart_creates_a_project_that_runs(tmp_path: Path) -> None:
    made = invoke("quickstart", "demo", "-o", "json")
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["package"] == "demo"
    assert sorted(created["files"]) == [
        "README.md",
        "demo/__init__.py",
        "demo/workflows.py",
        "pyworkflow.config.yaml",
    ]
    project = tmp_path / "demo"
    assert "pyworkflow workflows run hello" in (project / "README.md").read_text()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env = {k: v for k, v in env.items() if not k.startswith("PYWORKFLOW_")}
    command = [sys.executable, "-m", "pyworkflow.cli"]
    ran = subprocess.run(
        [*command, "workflows", "run", "hello", "--arg", "name=Ada", "--output", "json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    document = json.loads(ran.stdout)
    assert (document["status"], document["result"]) == ("completed", "Hello, Ada!")
    assert (project / "pyworkflow_data" / "pyworkflow.db").exists()
    listed = subprocess.run(
        [*command, "-o", "json", "workflows", "list"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [w["name"] for w in json.loads(listed.stdout)] == ["approve_order", "hello", "remind"]


def test_quickstart_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    refused = invoke("quickstart", "busy")
    assert refused.exit_code == 1 and "busy is not empty" in one_line_error(refused)
    forced = invoke("quickstart", "busy", "--force", "--name", "shop")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "busy" / "shop" / "workflows.py").exists()
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    bad_name = invoke("quickstart", "other", "--name", "not-a-package")
    assert bad_name.exit_code == 2 and "not a Python package name" in one_line_error(bad_name)


def test_quickstart_defaults_to_its_own_folder(tmp_path: Path) -> None:
    done = invoke("quickstart")
    assert done.exit_code == 0, done.output
    config = yaml.safe_load((tmp_path / "pyworkflow_quickstart/pyworkflow.config.yaml").read_text())
    assert config["module"] == "pyworkflow_quickstart.workflows"
    assert config["storage"] == {"type": "sqlite", "path": "./pyworkflow_data/pyworkflow.db"}
