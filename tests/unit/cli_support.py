"""Workflows and a runner for the ``pyworkflow`` command's tests (``tests/unit/test_cli_*.py``).

The commands import this module with ``--module tests.unit.cli_support``; ``Cli`` invokes the real
``main`` through click's ``CliRunner`` on a SQLite file in the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from pydantic import BaseModel

from pyworkflow import (
    continue_as_new,
    hook,
    sleep,
    start_child_workflow,
    step,
    workflow,
)
from pyworkflow.cli import main
from pyworkflow.model.schemas import Blocked, BlockedKind, Commit, RunStatus
from pyworkflow.storage.sqlite import SQLiteStorageBackend

MODULE = "tests.unit.cli_support"


@step(name="cli_add")
async def add(x: int, y: int) -> int:
    return x + y


@workflow(name="cli_sum", tags=["math"])
async def cli_sum(x: int, y: int = 1) -> int:
    """Add two numbers.

    The second line of the docstring is not the description."""
    return await add(x, y)


@workflow(name="cli_fail")
async def cli_fail(message: str = "boom") -> None:
    raise ValueError(message)


class Approval(BaseModel):
    approved: bool
    by: str = "someone"


@workflow(name="cli_approval")
async def cli_approval(order: str = "o1") -> str:
    """Wait for a person's approval of ORDER."""
    decision = await hook("approval", payload_schema=Approval)
    return f"{order}: {'approved' if decision.approved else 'rejected'} by {decision.by}"


@workflow(name="cli_answer")
async def cli_answer() -> Any:
    return await hook("answer")


@workflow(name="cli_expiring")
async def cli_expiring() -> str:
    # Long enough that a busy machine reads the hook back before it expires (10 ms was not).
    await hook("soon", timeout=0.5)
    return "answered"


@workflow(name="cli_sleeper")
async def cli_sleeper() -> str:
    await sleep("1h")
    return "woke"


@workflow(name="cli_nap")
async def cli_nap() -> str:
    await sleep(0.2)
    return "rested"


VERSION = {"v": 1}  # a test "deploys" version 2 of cli_evolving under a running run


@workflow(name="cli_evolving")
async def cli_evolving() -> int:
    if VERSION["v"] == 1:
        total = await add(1, 1)
        await sleep("1h")
    else:  # version 2 sleeps first: a run recorded by version 1 diverges at its first call
        await sleep("1h")
        total = await add(1, 1)
    return total


@workflow(name="cli_parent")
async def cli_parent(n: int = 2) -> list[int]:
    return [await start_child_workflow(cli_sum, i, 10) for i in range(n)]


@workflow(name="cli_chain")
async def cli_chain(i: int = 0) -> int:
    if i < 2:
        await continue_as_new(i + 1)
    return i


class Cli:
    """``pyworkflow --storage sqlite:///<tmp>/cli.db --module tests.unit.cli_support ...``."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "cli.db"
        self.runner = CliRunner()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> Result:
        result = self.runner.invoke(
            main, ["--storage", self.url, "--module", MODULE, *args], input=input
        )
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--output", "json", code=code).stdout)

    def start(self, workflow_name: str, *args: str) -> str:
        """A run started with ``workflows run --no-wait``: its id."""
        run_id: str = self.json("workflows", "run", workflow_name, "--no-wait", *args)["run_id"]
        return run_id

    def block(self, run_id: str) -> Blocked:
        """Mark a suspended run blocked, as an activation hitting non-determinism does."""
        blocked = Blocked(
            kind=BlockedKind.NON_DETERMINISM,
            error_type="NonDeterminismError",
            message="workflow code issued other calls than its recorded history",
            since=datetime(2030, 1, 1, tzinfo=UTC),
            owner="worker-7",
            detail={
                "position": 2,
                "expected": "sleep (sleep:1)",
                "actual": "step 'cli_add' (step:cli_add:1)",
                "location": "flows.py:12",
            },
        )

        async def commit() -> None:
            storage = SQLiteStorageBackend(self.db)
            await storage.commit(
                Commit(run_id=run_id, error=blocked.to_text(), status=RunStatus.SUSPENDED)
            )
            await storage.close()

        asyncio.run(commit())
        return blocked


def one_line_error(result: Result) -> str:
    """The single line a failing command printed (stdout and stderr together)."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines
    return lines[0]
