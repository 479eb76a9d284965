"""``pyworkflow workflows list|info|run``: what is registered, and running a workflow from the
shell, its output formats and its one-line answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli_support import Cli, one_line_error


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_list_shows_the_registered_workflows(cli: Cli) -> None:
    listed = {row["name"]: row for row in cli.json("workflows", "list")}
    assert {"cli_sum", "cli_approval", "cli_sleeper"} <= set(listed)
    summed = listed["cli_sum"]
    assert summed["description"] == "Add two numbers."
    assert summed["tags"] == ["math"] and summed["durable"] is None
    assert [p["name"] for p in summed["parameters"]] == ["x", "y"]
    table = cli("workflows", "list").stdout
    assert table.splitlines()[0].split()[:2] == ["name", "durable"]
    assert "Add two numbers." in table and "Traceback" not in table
    plain = [
        line.split("\t") for line in cli("workflows", "list", "-o", "plain").stdout.split("\n")
    ]
    assert ["cli_sum", "default", "-", "math", "x,y", "Add two numbers."] in plain


def test_info_describes_one_workflow(cli: Cli) -> None:
    info = cli.json("workflows", "info", "cli_sum")
    assert info["signature"] == "cli_sum(x: int, y: int = 1) -> int"
    assert info["parameters"][1] == {
        "name": "y",
        "kind": "positional or keyword",
        "annotation": "int",
        "required": False,
        "default": 1,
    }
    assert info["docstring"].startswith("Add two numbers.\n")
    table = cli("workflows", "info", "cli_sum").stdout
    assert "signature" in table and "(required)" in table
    plain = cli("workflows", "info", "cli_sum", "-o", "plain").stdout.splitlines()
    assert (
        "name\tcli_sum" in plain and "parameter\tx\tpositional or keyword\tint\t(required)" in plain
    )


def test_an_unknown_workflow_names_the_registered_ones(cli: Cli) -> None:
    for command in (["info", "nope"], ["run", "nope"]):
        line = one_line_error(cli("workflows", *command, code=1))
        assert line.startswith("Error: no workflow 'nope' (registered: ")
        assert "cli_sum" in line


def test_run_prints_one_json_document_with_the_result(cli: Cli) -> None:
    done = cli("workflows", "run", "cli_sum", "--arg", "x=3", "--arg", "y=4", "-o", "json")
    document = json.loads(done.stdout)
    assert set(document) == {"run_id", "workflow", "status", "result"}
    assert (document["workflow"], document["status"], document["result"]) == (
        "cli_sum",
        "completed",
        7,
    )
    assert "step.completed" in done.stderr  # the events go to stderr in json mode
    assert cli.json("runs", "status", document["run_id"])["result"] == 7


def test_run_shows_the_events_then_the_result(cli: Cli) -> None:
    done = cli("workflows", "run", "cli_sum", "--args-json", "[40, 2]")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("started run ") and lines[-1] == "result: 42"
    assert all(t in done.stdout for t in ("workflow.started", "step.completed", "cli_add"))
    assert done.stdout.index("step.started") < done.stdout.index("workflow.completed")
    plain = cli("workflows", "run", "cli_sum", "--args-json", '{"x": 1}', "-o", "plain")
    run_id, status, result = plain.stdout.strip().split("\t")
    assert (status, result) == ("completed", "2") and run_id.startswith("run_")


def test_arg_values_are_json_when_they_parse(cli: Cli) -> None:
    as_text = cli.json("workflows", "run", "cli_approval", "--arg", "order=bob", "--no-wait")
    shown = cli.json("runs", "status", as_text["run_id"])
    assert shown["kwargs"] == {"order": "bob"}
    as_int = cli.json("workflows", "run", "cli_sum", "--arg", "x=3")
    assert as_int["result"] == 4  # 3 + 1: an int, not the string "3"


def test_no_wait_prints_only_the_run_id(cli: Cli) -> None:
    plain = cli("workflows", "run", "cli_sleeper", "--no-wait").stdout
    run_id = plain.strip()
    assert plain == f"{run_id}\n"
    assert cli.json("runs", "status", run_id)["status"] == "suspended"
    assert set(cli.json("workflows", "run", "cli_sleeper", "--no-wait")) == {"run_id"}


def test_a_failed_run_prints_its_error_and_exits_1(cli: Cli) -> None:
    as_json = cli("workflows", "run", "cli_fail", "-o", "json", code=1)
    document = json.loads(as_json.stdout)
    assert (document["status"], document["error_type"]) == ("failed", "ValueError")
    assert document["error"] == "boom" and "result" not in document
    table = cli("workflows", "run", "cli_fail", "--arg", "message=bad input", code=1)
    assert table.stderr.strip().splitlines()[-1].endswith("failed: ValueError: bad input")


def test_a_run_waiting_on_a_hook_says_how_to_answer_it_until_the_timeout(cli: Cli) -> None:
    done = cli("workflows", "run", "cli_approval", "--timeout", "0.3", "-o", "json", code=1)
    document = json.loads(done.stdout)
    assert (document["status"], document["error_type"]) == ("suspended", "WorkflowTimeoutError")
    token = cli.json("hooks", "list", "--status", "pending")[0]["token"]
    assert f"pyworkflow hooks resume {token} --payload" in done.stderr
    table = cli("workflows", "run", "cli_answer", "--timeout", "0.2", code=1)
    assert "waiting on hook 'answer'" in table.stdout
    assert "did not finish within 0.2s (status: suspended); it goes on" in table.stderr


def test_the_same_idempotency_key_gives_the_same_run(cli: Cli) -> None:
    first = cli.json("workflows", "run", "cli_sum", "--arg", "x=1", "--idempotency-key", "k1")
    again = cli.json("workflows", "run", "cli_sum", "--arg", "x=1", "--idempotency-key", "k1")
    assert first["run_id"] == again["run_id"] and again["result"] == 2


def test_a_non_durable_run_leaves_nothing_in_storage(cli: Cli) -> None:
    cli("workflows", "run", "cli_sum", "--arg", "x=1")  # the database exists
    done = cli.json("workflows", "run", "cli_sum", "--arg", "x=5", "--no-durable")
    assert done["result"] == 6
    assert done["run_id"] not in {row["run_id"] for row in cli.json("runs", "list")}
    refused = cli(
        "workflows", "run", "cli_sum", "--no-durable", "--no-wait", "--arg", "x=1", code=2
    )
    assert "needs waiting for" in one_line_error(refused)


def test_a_continued_run_is_followed_to_the_end_of_its_chain(cli: Cli) -> None:
    done = cli("workflows", "run", "cli_chain")
    assert done.stdout.count("continued as new: run ") == 2
    assert done.stdout.splitlines()[-1] == "result: 2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--args-json", "{bad"], "is not JSON"),
        (["--args-json", "3"], "is not a JSON object or a JSON list"),
        (["--arg", "novalue"], "expected KEY=VALUE"),
        (["--arg", "x=1", "--arg", "z=2"], "unexpected keyword argument 'z'"),
        (["--args-json", "[1, 2, 3]"], "too many positional arguments"),
        ([], "missing a required argument: 'x'"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(cli: Cli, args: list[str], message: str) -> None:
    line = one_line_error(cli("workflows", "run", "cli_sum", *args, code=2))
    assert message in line
