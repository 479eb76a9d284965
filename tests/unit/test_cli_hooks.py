"""``pyworkflow hooks list|info|resume|run``: finding a run's hook and answering it from the
shell, and every way an answer can be refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pyworkflow.cli import hooks as hooks_module
from tests.unit.cli_support import Cli, one_line_error


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def pending_token(cli: Cli, run_id: str) -> str:
    [hook] = cli.json("hooks", "list", "--run-id", run_id, "--status", "pending")
    token: str = hook["token"]
    return token


def test_list_shows_each_hook_with_its_token(cli: Cli) -> None:
    first = cli.start("cli_approval")
    second = cli.start("cli_answer")
    listed = cli.json("hooks", "list")
    assert [(h["run_id"], h["name"], h["status"]) for h in listed] == [
        (first, "approval", "pending"),
        (second, "answer", "pending"),
    ]
    assert listed[0]["token"].startswith(f"{first}:{listed[0]['hook_id']}:")
    assert listed[0]["payload_schema"] == "tests.unit.cli_support:Approval"
    assert [h["run_id"] for h in cli.json("hooks", "list", "--run-id", second)] == [second]
    assert cli.json("hooks", "list", "--status", "received") == []
    assert cli("hooks", "list", "--status", "received").stdout == "no hooks\n"
    table = cli("hooks", "list").stdout
    assert table.splitlines()[0].split()[:3] == ["run", "id", "hook"]
    assert listed[1]["token"] in table
    plain = [line.split("\t") for line in cli("hooks", "list", "-o", "plain").stdout.splitlines()]
    assert plain[1][:4] == [second, listed[1]["hook_id"], "answer", "pending"]


def test_info_by_token_or_hook_id_shows_the_payload_schema(cli: Cli) -> None:
    run_id = cli.start("cli_approval")
    token = pending_token(cli, run_id)
    info = cli.json("hooks", "info", token)
    assert (info["name"], info["run_id"], info["status"]) == ("approval", run_id, "pending")
    assert info["schema"]["required"] == ["approved"]
    by_id = cli.json("hooks", "info", info["hook_id"])
    assert by_id["token"] == token
    table = cli("hooks", "info", token).stdout
    assert "tests.unit.cli_support:Approval" in table and '"approved"' in table
    cli.start("cli_approval")  # a second run with a hook of the same id
    ambiguous = one_line_error(cli("hooks", "info", info["hook_id"], code=2))
    assert "names hooks of 2 runs" in ambiguous and "--run-id" in ambiguous
    assert cli.json("hooks", "info", info["hook_id"], "--run-id", run_id)["token"] == token


def test_resume_delivers_the_payload_and_advances_the_run(cli: Cli) -> None:
    run_id = cli.start("cli_approval", "--arg", "order=o7")
    token = pending_token(cli, run_id)
    done = cli.json("hooks", "resume", token, "--payload", '{"approved": true, "by": "ada"}')
    assert done == {
        "run_id": run_id,
        "hook_id": token.split(":")[1],
        "status": "received",
        "run_status": "completed",
    }
    assert cli.json("runs", "status", run_id)["result"] == "o7: approved by ada"
    assert cli.json("hooks", "info", token)["payload"] == {"approved": True, "by": "ada"}


def test_resume_reads_the_payload_from_a_file_or_stdin(cli: Cli, tmp_path: Path) -> None:
    first = cli.start("cli_answer")
    payload = tmp_path / "payload.json"
    payload.write_text('{"answer": 42}')
    table = cli("hooks", "resume", pending_token(cli, first), "--payload-file", str(payload))
    assert table.stdout.strip().endswith(f"of run {first} received; run completed")
    assert cli.json("runs", "status", first)["result"] == {"answer": 42}
    second = cli.start("cli_answer")
    token = pending_token(cli, second)
    cli("hooks", "resume", token, "--payload-file", "-", input="[1, 2]")
    assert cli.json("runs", "status", second)["result"] == [1, 2]


def test_refused_answers_are_one_line(cli: Cli) -> None:
    run_id = cli.start("cli_approval")
    token = pending_token(cli, run_id)
    refused = cli("hooks", "resume", token, "--payload", '{"approved": "perhaps"}', code=1)
    assert "does not match Approval" in one_line_error(refused)
    assert cli.json("hooks", "info", token)["status"] == "pending"  # nothing was recorded
    malformed = cli("hooks", "resume", token, "--payload", "{oops", code=2)
    assert "is not JSON" in one_line_error(malformed)
    cli("hooks", "resume", token, "--payload", '{"approved": false}')
    again = cli("hooks", "resume", token, "--payload", '{"approved": true}', code=1)
    assert one_line_error(again) == "Error: hook 'approval' already has its payload"
    forged = token.rsplit(":", 1)[0] + ":not-the-secret"
    assert "does not match" in one_line_error(
        cli("hooks", "resume", forged, "--payload", "1", code=1)
    )
    unknown = cli("hooks", "resume", "run-x:hook-1:secret", "--payload", "1", code=1)
    assert "no hook 'hook-1' in run 'run-x'" in one_line_error(unknown)
    malformed_token = one_line_error(cli("hooks", "resume", "nonsense", "--payload", "1", code=1))
    assert "malformed hook token" in malformed_token
    both = cli("hooks", "resume", token, "--payload", "1", "--payload-file", "-", code=2)
    assert "not both" in one_line_error(both)
    missing = cli("hooks", "resume", token, code=2)
    assert "give the payload" in one_line_error(missing)
    assert "no hook 'hook-9'" in one_line_error(cli("hooks", "info", "hook-9", code=1))


def test_an_expired_hook_is_refused(cli: Cli) -> None:
    run_id = cli.start("cli_expiring")
    [hook] = cli.json("hooks", "list", "--run-id", run_id)
    expires_at = datetime.fromisoformat(hook["expires_at"])  # 0.5 s after it was created
    deadline = time.monotonic() + 5
    while datetime.now(UTC) <= expires_at and time.monotonic() < deadline:
        time.sleep(0.002)
    expired = cli("hooks", "resume", hook["token"], "--payload", "1", code=1)
    assert "Error: hook 'soon' expired at" in one_line_error(expired)


def test_run_with_a_token_and_a_payload_is_resume(cli: Cli) -> None:
    run_id = cli.start("cli_answer")
    done = cli.json("hooks", "run", pending_token(cli, run_id), "--payload", '"yes"')
    assert done["run_status"] == "completed"
    assert cli.json("runs", "status", run_id)["result"] == "yes"


def test_run_never_prompts_in_a_script(cli: Cli) -> None:
    run_id = cli.start("cli_answer")
    no_token = cli("hooks", "run", code=2)
    assert "missing TOKEN (prompting needs a terminal" in one_line_error(no_token)
    no_payload = cli("hooks", "run", pending_token(cli, run_id), code=2)
    assert "give the payload" in one_line_error(no_payload)
    assert cli.json("runs", "status", run_id)["status"] == "suspended"


def test_run_at_a_terminal_offers_the_pending_hooks_and_asks_for_the_payload(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.start("cli_answer")
    second = cli.start("cli_approval")
    monkeypatch.setattr(hooks_module, "interactive", lambda: True)
    answered = cli("hooks", "run", input='2\n{"approved": "maybe"\n{"approved": true}\n')
    assert "approval" in answered.stdout and "answer" in answered.stdout  # the choices
    assert '"approved"' in answered.stdout  # the schema, shown before the prompt
    assert "is not JSON" in answered.output  # asked again after malformed JSON
    assert cli.json("runs", "status", second)["result"] == "o1: approved by someone"
    statuses = {h["run_id"]: h["status"] for h in cli.json("hooks", "list")}
    assert list(statuses.values()).count("pending") == 1


def test_run_at_a_terminal_with_nothing_pending_says_so(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("workflows", "run", "cli_sum", "--arg", "x=1")  # the database exists
    monkeypatch.setattr(hooks_module, "interactive", lambda: True)
    assert one_line_error(cli("hooks", "run", code=1)) == "Error: no hook is waiting for a payload"
