"""``pyworkflow schedules ...`` and ``pyworkflow scheduler run``: the commands, their three output
formats and their one-line errors, on a SQLite file through the real ``main``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pyworkflow import step, workflow
from pyworkflow.cli import main
from pyworkflow.cli._output import format_duration
from pyworkflow.cli.schedules import HEADERS

MODULE = "tests.unit.test_cli_schedules"


@step()
async def sched_cli_step(x: int) -> int:
    return x + 1


@workflow()
async def sched_cli_workflow(x: int = 0) -> int:
    return await sched_cli_step(x)


class Cli:
    """``pyworkflow --storage sqlite:///<tmp>/x.db --module <this module> ...``."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "x.db"
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(
            main, ["--storage", f"sqlite:///{self.db}", "--module", MODULE, *args]
        )
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--output", "json").stdout)

    def create(self, *args: str) -> Any:
        return self.json("schedules", "create", "sched_cli_workflow", *args)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_create_with_cron_and_with_interval(cli: Cli) -> None:
    daily = cli.create(
        "--cron", "0 9 * * *", "--timezone", "Europe/Paris", "--schedule-id", "daily"
    )
    assert [daily[key] for key in ("schedule_id", "status", "overlap_policy")] == [
        "daily",
        "active",
        "skip",
    ]
    shown = cli.json("schedules", "show", "daily")
    assert shown["spec"] == {"cron": "0 9 * * *", "timezone": "Europe/Paris"}
    assert shown["workflow_name"] == "sched_cli_workflow" and shown["next_run_time"]

    every = cli.create(
        "--interval", "5m", "--jitter", "30s", "--args", "[2]", "--overlap", "buffer_one"
    )
    shown = cli.json("schedules", "show", every["schedule_id"])
    assert shown["spec"] == {"interval": 300.0, "jitter": 30.0, "timezone": "UTC"}
    assert (shown["args"], shown["overlap_policy"]) == ("[2]", "buffer_one")

    both = cli.create("--cron", "0 * * * *", "--interval", "1h30m", "--kwargs", '{"x": 5}')
    assert both["spec"]["cron"] == "0 * * * *" and both["spec"]["interval"] == 5400.0
    assert json.loads(both["kwargs"]) == {"x": 5}

    table = cli("schedules", "show", "daily").stdout
    assert "cron 0 9 * * * (Europe/Paris)" in table and "Europe/Paris" in table
    again = ["--cron", "0 9 * * *", "--schedule-id", "daily"]
    taken = cli("schedules", "create", "sched_cli_workflow", *again, code=1)
    assert taken.output.strip().splitlines()[-1] == "Error: a schedule 'daily' already exists"


def test_list_refuses_missing_storage_and_lists_in_three_outputs(cli: Cli) -> None:
    missing = cli("schedules", "list", code=1)
    assert f"no SQLite database at {cli.db}" in missing.output and not cli.db.exists()
    cli.create("--cron", "0 9 * * *", "--timezone", "Europe/Paris", "--schedule-id", "a")
    cli.create("--interval", "90s", "--schedule-id", "b")

    as_json = cli.json("schedules", "list")
    assert [s["schedule_id"] for s in as_json] == ["a", "b"]

    plain = cli("schedules", "list", "--output", "plain").stdout.splitlines()
    rows = [line.split("\t") for line in plain]
    assert [len(row) for row in rows] == [len(HEADERS)] * 2
    assert rows[0][:5] == [
        "a",
        "sched_cli_workflow",
        "active",
        "cron 0 9 * * * (Europe/Paris)",
        "skip",
    ]
    assert rows[1][:5] == ["b", "sched_cli_workflow", "active", "every 1m30s (UTC)", "skip"]
    assert rows[1][6:] == ["-", "0", "0", "0", "0", "0"]

    table = cli("schedules", "list").stdout
    header = table.splitlines()[0].split()
    assert header[:3] == ["id", "workflow", "status"] and header[-1] == "buffered"
    assert "cron 0 9 * * * (Europe/Paris)" in table and "every 1m30s (UTC)" in table

    assert cli.json("schedules", "list", "--status", "paused") == []
    assert cli("schedules", "list", "--status", "paused").stdout == "no schedules\n"
    assert cli("schedules", "list", "--workflow", "other", "-o", "plain").stdout == ""
    assert [s["schedule_id"] for s in cli.json("schedules", "list", "--offset", "1")] == ["b"]
    assert [s["schedule_id"] for s in cli.json("schedules", "list", "--limit", "1")] == ["a"]


def test_pause_resume_delete_change_the_status(cli: Cli) -> None:
    cli.create("--cron", "0 9 * * *", "--schedule-id", "s")
    assert cli.json("schedules", "pause", "s")["status"] == "paused"
    assert [s["schedule_id"] for s in cli.json("schedules", "list", "--status", "paused")] == ["s"]
    resumed = cli.json("schedules", "resume", "s")
    assert resumed["status"] == "active" and resumed["next_run_time"]
    plain = cli("schedules", "delete", "s", "--output", "plain").stdout.split("\t")
    assert plain[:3] == ["s", "sched_cli_workflow", "deleted"]
    assert cli.json("schedules", "show", "s")["status"] == "deleted"
    again = cli("schedules", "pause", "s", code=1)
    assert again.output.strip() == "Error: schedule 's' was deleted"


def test_update_changes_cron_overlap_and_time_zone(cli: Cli) -> None:
    cli.create("--cron", "0 9 * * *", "--schedule-id", "u", "--jitter", "10s")
    updated = cli.json(
        "schedules", "update", "u", "--cron", "30 8 * * 1-5", "--overlap", "allow_all"
    )
    assert updated["spec"] == {"cron": "30 8 * * 1-5", "jitter": 10.0, "timezone": "UTC"}
    assert updated["overlap_policy"] == "allow_all"
    zoned = cli.json("schedules", "update", "u", "--timezone", "Asia/Tokyo")
    assert zoned["spec"] == {"cron": "30 8 * * 1-5", "jitter": 10.0, "timezone": "Asia/Tokyo"}
    assert zoned["overlap_policy"] == "allow_all"
    switched = cli.json("schedules", "update", "u", "--cron", "", "--interval", "10m")
    assert switched["spec"] == {"interval": 600.0, "jitter": 10.0, "timezone": "Asia/Tokyo"}
    assert cli.json("schedules", "update", "u", "--overlap", "skip")["spec"] == switched["spec"]

    nothing = cli("schedules", "update", "u", code=2)
    assert "nothing to change" in nothing.output
    emptied = cli("schedules", "update", "u", "--interval", "", code=2)
    assert "needs a cron expression, an interval or a calendar" in emptied.output
    unknown = cli("schedules", "update", "nope", "--cron", "0 1 * * *", code=1)
    assert unknown.output.strip() == "Error: no schedule 'nope'"


def test_trigger_starts_a_run_now(cli: Cli) -> None:
    cli.create("--cron", "0 9 * * *", "--schedule-id", "t", "--args", "[41]")
    run_id = cli("schedules", "trigger", "t").stdout.strip()
    assert run_id.startswith("sched-t-trigger-")
    run = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert run["run_id"] == run_id
    assert (run["workflow"], run["status"]) == ("sched_cli_workflow", "completed")
    second = cli.json("schedules", "trigger", "t")
    assert set(second) == {"run_id"} and second["run_id"] != run_id
    shown = cli.json("schedules", "show", "t")
    assert (shown["total_runs"], shown["last_run_id"]) == (2, second["run_id"])


def test_backfill_is_one_run_per_slot_and_idempotent(cli: Cli) -> None:
    cli.create("--cron", "0 * * * *", "--schedule-id", "hourly")
    window = ["--start", "2020-01-01T00:00", "--end", "2020-01-01T03:00:00+00:00"]
    first = cli.json("schedules", "backfill", "hourly", *window)["run_ids"]
    assert first == [f"sched-hourly-20200101T0{hour}0000000000Z" for hour in range(4)]
    assert cli.json("schedules", "backfill", "hourly", *window)["run_ids"] == first
    assert cli("schedules", "backfill", "hourly", *window).stdout.split() == first
    for run_id in first:
        assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "completed"
    assert cli.json("schedules", "show", "hourly")["total_runs"] == 4
    gap = ["--start", "2020-01-01T00:10", "--end", "2020-01-01T00:20"]
    empty = cli("schedules", "backfill", "hourly", *gap)
    assert empty.stdout == "" and "no slot" in empty.stderr
    reverse = ["--start", "2020-01-02", "--end", "2020-01-01"]
    backwards = cli("schedules", "backfill", "hourly", *reverse, code=2)
    assert "the end is before the start" in backwards.output


def test_scheduler_run_fires_due_schedules(cli: Cli) -> None:
    cli.create("--interval", "1s", "--schedule-id", "fast")
    served = cli("scheduler", "run", "--duration", "2.5", "--poll-interval", "0.2")
    assert "scheduler: stopped" in served.stderr
    runs = [json.loads(line) for line in cli("runs", "list", "--json").stdout.splitlines()]
    assert len(runs) >= 1
    assert {run["workflow"] for run in runs} == {"sched_cli_workflow"}
    printed = sorted(line.removeprefix("started ") for line in served.stdout.splitlines())
    assert printed == sorted(run["run_id"] for run in runs)
    assert cli.json("schedules", "show", "fast")["total_runs"] == len(runs)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "sched_cli_workflow", "--cron", "61 * * * *"], 2, "'61 * * * *'"),
        (
            ["create", "sched_cli_workflow", "--cron", "0 9 * * *", "--timezone", "Mars/Base"],
            2,
            "unknown time zone 'Mars/Base'",
        ),
        (["create", "sched_cli_workflow"], 2, "give --cron, --interval or both"),
        (["create", "sched_cli_workflow", "--interval", "5m", "--overlap", "never"], 2, "'never'"),
        (["create", "sched_cli_workflow", "--interval", "5x"], 2, "invalid duration '5x'"),
        (["create", "sched_cli_workflow", "--interval", "5m", "--args", "{}"], 2, "'{}'"),
        (["create", "sched_cli_workflow", "--interval", "5m", "--kwargs", "{"], 2, "'{'"),
        (["create", "sched_cli_workflow", "--interval", "5m", "--args", "[1, 2]"], 2, "too many"),
        (["create", "no_such_workflow", "--interval", "5m"], 2, "'no_such_workflow'"),
        (["create", "sched_cli_workflow", "--interval", "5m", "--start-at", "soon"], 2, "'soon'"),
        (["create", "sched_cli_workflow", "--interval", "5m", "--schedule-id", "a b"], 2, "'a b'"),
        (["show", "x"], 1, "Error: no schedule 'x'"),
        (["pause", "x"], 1, "Error: no schedule 'x'"),
        (["trigger", "x"], 1, "Error: no schedule 'x'"),
        (["backfill", "x", "--start", "2020-01-01", "--end", "2020-01-02"], 1, "no schedule 'x'"),
        (["list", "--status", "gone"], 2, "'gone'"),
        (["list", "--output", "yaml"], 2, "'yaml'"),
    ],
)
def test_usage_errors_are_one_line(cli: Cli, args: list[str], code: int, message: str) -> None:
    cli.create("--cron", "0 9 * * *", "--schedule-id", "existing")  # the database exists
    result = cli("schedules", *args, code=code)
    assert message in result.output.strip().splitlines()[-1]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_format_duration() -> None:
    cases = {0: "0s", 1.5: "1.5s", 90: "1m30s", 3600: "1h", 5400: "1h30m", 90061: "1d1h1m1s"}
    for seconds, text in cases.items():
        assert format_duration(timedelta(seconds=seconds)) == text
