"""``pyworkflow worker status|list|queues`` over a stand-in for the broker's answer (the commands
against real workers: ``tests/celery/test_cli.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pyworkflow.celery import worker as celery_worker
from pyworkflow.cli import main
from tests.unit.cli_support import one_line_error

STATUS: dict[str, Any] = {
    "broker": "redis://***@broker:6379/0",
    "workers": [
        {
            "name": "a@host",
            "pid": 101,
            "pool": "prefork",
            "concurrency": 4,
            "processes": [1, 2, 3, 4],
            "active": 2,
            "queues": ["pyworkflow.steps", "pyworkflow.workflows"],
        },
        {
            "name": "b@host",
            "pid": 202,
            "pool": "solo",
            "concurrency": 1,
            "processes": [],
            "active": 0,
            "queues": ["pyworkflow.timers"],
        },
    ],
    "queues": {"pyworkflow.steps": 5, "pyworkflow.workflows": 0},
}


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    current = json.loads(json.dumps(STATUS))
    asked: list[float] = []

    def worker_status(timeout: float = 1.0) -> dict[str, Any]:
        asked.append(timeout)
        return current

    monkeypatch.setattr(celery_worker, "worker_status", worker_status)
    current["asked"] = asked
    return current


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["worker", *args])


def test_list_shows_each_worker(answer: dict[str, Any]) -> None:
    as_json = json.loads(invoke("list", "-o", "json", "--timeout", "0.5").stdout)
    assert [w["name"] for w in as_json] == ["a@host", "b@host"]
    assert answer["asked"] == [0.5]
    plain = invoke("list", "-o", "plain").stdout.splitlines()
    assert plain[0].split("\t") == [
        "a@host",
        "101",
        "prefork",
        "4",
        "2",
        "pyworkflow.steps,pyworkflow.workflows",
    ]
    table = invoke("list").stdout.splitlines()
    assert table[0].split() == ["name", "pid", "pool", "concurrency", "active", "queues"]


def test_queues_shows_each_queue_length(answer: dict[str, Any]) -> None:
    as_json = json.loads(invoke("queues", "-o", "json").stdout)
    assert as_json == [
        {"queue": "pyworkflow.steps", "waiting": 5},
        {"queue": "pyworkflow.workflows", "waiting": 0},
    ]
    assert (
        invoke("queues", "-o", "plain").stdout == "pyworkflow.steps\t5\npyworkflow.workflows\t0\n"
    )


def test_status_shows_broker_workers_and_queues(answer: dict[str, Any]) -> None:
    table = invoke("status").stdout
    assert table.splitlines()[0] == "broker redis://***@broker:6379/0"
    assert "a@host" in table and "pyworkflow.steps" in table
    legacy = json.loads(invoke("status", "--json").stdout)
    assert legacy["workers"][1]["pool"] == "solo"


def test_no_worker_answering_exits_1(answer: dict[str, Any]) -> None:
    answer["workers"] = []
    for command in ("list", "status"):
        done = invoke(command, "--timeout", "0.1")
        assert done.exit_code == 1
        assert done.stderr.strip() == "Error: no worker answered within 0.1s"
    assert invoke("queues").exit_code == 0


def test_an_unreachable_broker_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(timeout: float = 1.0) -> dict[str, Any]:
        raise celery_worker.WorkerStartupError("cannot reach the Celery broker at redis://x:1/0")

    monkeypatch.setattr(celery_worker, "worker_status", unreachable)
    done = invoke("queues")
    assert done.exit_code == 1
    assert one_line_error(done) == "Error: cannot reach the Celery broker at redis://x:1/0"
