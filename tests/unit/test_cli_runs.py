"""``pyworkflow runs ...``: status, show, logs (and --follow), cancel, children, chain, and the
blocked runs (``WorkflowRun.blocked``) in every view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli_support import VERSION, Cli, one_line_error


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(autouse=True)
def _version_1() -> None:
    VERSION["v"] = 1


def test_status_of_a_completed_and_of_a_waiting_run(cli: Cli) -> None:
    done = cli.json("workflows", "run", "cli_sum", "--arg", "x=2")
    status = cli.json("runs", "status", done["run_id"])
    assert (status["status"], status["result"], status["blocked"]) == ("completed", 3, None)
    assert status["kwargs"] == {"x": 2} and status["completed_at"]
    sleeping = cli.start("cli_sleeper")
    waiting = cli.json("runs", "status", sleeping)
    assert waiting["status"] == "suspended" and waiting["waiting"]["wake_at"]
    hooked = cli.start("cli_approval")
    token = cli.json("runs", "status", hooked)["waiting"]["hooks"][0]["token"]
    table = cli("runs", "status", hooked).stdout
    assert f"approval  token {token}" in table
    plain = cli("runs", "status", done["run_id"], "-o", "plain").stdout.splitlines()
    assert "status\tcompleted" in plain and "result\t3" in plain


def test_status_of_a_failed_run_names_the_error(cli: Cli) -> None:
    failed = json.loads(cli("workflows", "run", "cli_fail", "-o", "json", code=1).stdout)
    status = cli.json("runs", "status", failed["run_id"])
    assert (status["status"], status["error"], status["error_type"]) == (
        "failed",
        "boom",
        "ValueError",
    )


def test_a_blocked_run_shows_why_in_every_view(cli: Cli) -> None:
    blocked_run = cli.start("cli_sleeper")
    other = cli.start("cli_sleeper")
    cli.block(blocked_run)

    listed = {row["run_id"]: row for row in cli.json("runs", "list")}
    assert listed[blocked_run]["status"] == "suspended"
    assert listed[blocked_run]["blocked"]["kind"] == "non_determinism"
    assert listed[other]["blocked"] is None
    table = cli("runs", "list").stdout
    row = next(line for line in table.splitlines() if line.startswith(blocked_run))
    assert row.split()[2] == "blocked"
    plain = [line.split("\t") for line in cli("runs", "list", "-o", "plain").stdout.splitlines()]
    assert [r[2] for r in plain if r[0] == blocked_run] == ["blocked"]

    only = cli.json("runs", "list", "--status", "blocked")
    assert [r["run_id"] for r in only] == [blocked_run]
    suspended = {r["run_id"] for r in cli.json("runs", "list", "--status", "suspended")}
    assert {blocked_run, other} <= suspended

    status = cli("runs", "status", blocked_run).stdout
    lines = status.splitlines()
    assert lines[2].split() == ["status", "blocked", "(status", "suspended)"]
    assert lines[3].split()[:3] == ["blocked", "non_determinism:", "NonDeterminismError"]
    divergence = [line.split()[0] for line in lines[7:11]]
    assert divergence == ["position", "expected", "actual", "location"]
    for expected in ("sleep (sleep:1)", "step 'cli_add' (step:cli_add:1)", "flows.py:12"):
        assert expected in status
    shown = cli("runs", "show", blocked_run).stdout
    assert "non_determinism" in shown and "sleep.started" in shown
    as_json = cli.json("runs", "status", blocked_run)
    assert as_json["blocked"]["detail"]["position"] == 2 and as_json["error"] is None


def test_a_run_that_diverges_from_its_history_is_blocked_until_the_code_is_fixed(
    cli: Cli,
) -> None:
    run_id = cli.start("cli_evolving")
    VERSION["v"] = 2  # a deploy changed the workflow under the sleeping run
    refused = one_line_error(cli("runs", "resume", run_id, code=1))
    assert "expected: step 'cli_add' (step:cli_add:1)" in refused
    assert [r["run_id"] for r in cli.json("runs", "list", "--status", "blocked")] == [run_id]
    blocked = cli.json("runs", "status", run_id)["blocked"]
    assert (blocked["kind"], blocked["detail"]["position"]) == ("non_determinism", 1)
    assert blocked["detail"]["actual"] == "sleep (sleep:1)"
    VERSION["v"] = 1  # the fix is deployed
    assert cli("runs", "resume", run_id).stdout == f"{run_id}: suspended\n"
    assert cli.json("runs", "list", "--status", "blocked") == []


def test_waiting_on_a_blocked_run_ends_at_once_with_its_reason(cli: Cli) -> None:
    run_id = cli.start("cli_sleeper", "--idempotency-key", "order-1")
    cli.block(run_id)
    again = ["workflows", "run", "cli_sleeper", "--idempotency-key", "order-1"]
    document = json.loads(cli(*again, "-o", "json", code=1).stdout)
    assert (document["run_id"], document["status"]) == (run_id, "suspended")
    assert document["blocked"]["kind"] == "non_determinism"
    assert document["error_type"] == "NonDeterminismError"
    table = cli(*again, code=1)
    assert f"run {run_id} is blocked (non_determinism)" in table.stderr


def test_show_prints_the_run_and_its_log(cli: Cli) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]
    shown = cli("runs", "show", run_id).stdout
    assert "step:cli_add:1" in shown and "workflow.completed" in shown
    for flag in (["--json"], ["-o", "json"]):
        document = json.loads(cli("runs", "show", run_id, *flag).stdout)
        assert [e["type"] for e in document["log"]][-1] == "workflow.completed"
        assert document["result"] == 2


def test_logs_one_line_per_event_and_by_type(cli: Cli) -> None:
    run_id = cli.json("workflows", "run", "cli_sum", "--arg", "x=1")["run_id"]
    plain = [
        line.split("\t") for line in cli("runs", "logs", run_id, "-o", "plain").stdout.splitlines()
    ]
    assert [row[0] for row in plain] == ["1", "2", "3", "4"]
    assert plain[2][2:4] == ["step.completed", "step:cli_add:1"]
    assert "step_name=cli_add" in plain[2][4] and "result=2" in plain[2][4]
    only = cli.json("runs", "logs", run_id, "--type", "step.completed")
    assert [e["type"] for e in only] == ["step.completed"]
    table = cli("runs", "logs", run_id).stdout.splitlines()
    assert table[0].split() == ["seq", "time", "type", "command", "data"]
    assert len(table) == 2 + 4


def test_logs_follow_prints_new_events_until_the_run_ends(cli: Cli) -> None:
    run_id = cli.start("cli_nap")
    followed = cli("runs", "logs", run_id, "--follow", "-o", "json").stdout.splitlines()
    types = [json.loads(line)["type"] for line in followed]
    assert types[-2:] == ["sleep.completed", "workflow.completed"]
    assert [json.loads(line)["sequence"] for line in followed] == list(range(1, len(types) + 1))
    assert cli.json("runs", "status", run_id)["result"] == "rested"


def test_cancel_records_the_request_and_reports_a_finished_run(cli: Cli) -> None:
    run_id = cli.start("cli_sleeper")
    cancelled = cli.json("runs", "cancel", run_id, "--reason", "no longer needed", "--wait")
    assert (cancelled["recorded"], cancelled["status"]) == (True, "cancelled")
    again = cli("runs", "cancel", run_id).stdout
    assert again.strip() == f"run {run_id} had already finished (cancelled): nothing to cancel"
    other = cli.start("cli_sleeper")
    recorded = cli("runs", "cancel", other, "--timeout", "5", "--wait").stdout
    assert recorded.strip() == f"cancellation of run {other} recorded; status: cancelled"
    logged = cli.json("runs", "logs", run_id, "--type", "cancellation.requested")
    assert logged[0]["data"]["reason"] == "no longer needed"


def test_children_and_chain(cli: Cli) -> None:
    parent = cli.json("workflows", "run", "cli_parent", "--arg", "n=2")
    assert parent["result"] == [10, 11]
    children = cli.json("runs", "children", parent["run_id"])
    assert [c["workflow"] for c in children] == ["cli_sum", "cli_sum"]
    assert all(c["run_id"].startswith(parent["run_id"] + ".c") for c in children)
    assert cli.json("runs", "children", children[0]["run_id"]) == []
    assert cli("runs", "children", children[0]["run_id"]).stdout == "no runs\n"

    chained = cli.json("workflows", "run", "cli_chain")
    chain = cli.json("runs", "chain", chained["run_id"])
    assert [r["status"] for r in chain] == ["continued_as_new", "continued_as_new", "completed"]
    assert chain[0]["run_id"] == chained["run_id"]
    from_the_end = cli("runs", "chain", chain[-1]["run_id"], "-o", "plain").stdout.splitlines()
    assert [line.split("\t")[0] for line in from_the_end] == [r["run_id"] for r in chain]


@pytest.mark.parametrize(
    "command",
    [["status"], ["show"], ["logs"], ["resume"], ["cancel"], ["children"], ["chain"]],
)
def test_an_unknown_run_is_one_line(cli: Cli, command: list[str]) -> None:
    cli("workflows", "run", "cli_sum", "--arg", "x=1")  # the database exists
    line = one_line_error(cli("runs", *command, "nope", code=1))
    assert "no workflow run with id 'nope'" in line


def test_list_rejects_an_unknown_status(cli: Cli) -> None:
    cli("workflows", "run", "cli_sum", "--arg", "x=1")
    assert "'gone'" in one_line_error(cli("runs", "list", "--status", "gone", code=2))


def test_a_blocked_run_can_be_ended_failed_by_an_operator(cli: Cli) -> None:
    blocked_run = cli.start("cli_sleeper")
    cli.block(blocked_run)
    ended = cli.json("runs", "fail", blocked_run, "--reason", "the log cannot be repaired")
    assert (ended["status"], ended["blocked"]) == ("failed", None)
    status = cli.json("runs", "status", blocked_run)
    assert status["status"] == "failed" and "the log cannot be repaired" in status["error"]
    events = [e["type"] for e in cli.json("runs", "show", blocked_run)["log"]]
    assert events[-1] == "workflow.failed"
    # a run that can still run its code is cancelled, not failed from outside
    running = cli.start("cli_sleeper")
    refused = one_line_error(cli("runs", "fail", running, code=1))
    assert refused == (
        f"Error: run {running} is not blocked (suspended): 'runs cancel' stops a run that can"
        " still run its code"
    )
