"""Workflows and a small command line for the crash-recovery tests, run in real subprocesses.

``test_crash_recovery.py`` starts ``python -c "...main(argv)"`` processes that import this module,
kills them with SIGKILL and starts new ones. The workflows take the ledger file and the "go" file
as arguments, so every process that replays a run finds them in the log itself.

Every step body appends one JSON line to the ledger *when it starts*, so the ledger counts
executions, including one killed half-way. ``crash_pack`` then blocks until the go file exists:
a test that sees its line in the ledger knows the process is parked inside that step, with the
steps before it committed, and can kill it at exactly that point.

Commands (all take the SQLite path first):
``start DB WORKFLOW LEDGER GO [LEASE_TTL]`` starts a run and then serves timers until killed;
``resume DB RUN_ID`` calls ``resume`` and prints the result as JSON;
``result DB RUN_ID [LEASE_TTL]`` only waits with ``get_workflow_result`` and prints the result.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pyworkflow import (
    FatalError,
    configure,
    get_step_info,
    get_workflow_result,
    resume,
    sleep,
    start,
    step,
    workflow,
)
from pyworkflow.storage import SQLiteStorageBackend

PARK_LIMIT_SECONDS = 30.0
SLEEP_SECONDS = 3


def _note(ledger: str) -> None:
    info = get_step_info()
    line = {
        "run_id": info.run_id,
        "step": info.step_name,
        "attempt": info.attempt,
        "pid": os.getpid(),
    }
    with open(ledger, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


@step()
async def crash_reserve(ledger: str, order: str) -> str:
    _note(ledger)
    return f"reserved {order}"


@step()
async def crash_charge(ledger: str, order: str) -> str:
    _note(ledger)
    return f"charged {order}"


@step()
async def crash_pack(ledger: str, order: str, go_file: str) -> str:
    """Blocks until ``go_file`` exists: the point where tests kill the process."""
    _note(ledger)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PARK_LIMIT_SECONDS
    while not Path(go_file).exists():
        if loop.time() > deadline:
            raise FatalError(f"{go_file} did not appear within {PARK_LIMIT_SECONDS}s")
        await asyncio.sleep(0.02)
    return f"packed {order}"


@step()
async def crash_ship(ledger: str, order: str) -> str:
    _note(ledger)
    return f"shipped {order}"


@workflow()
async def crash_pipeline(ledger: str, go_file: str) -> str:
    """Four steps; the third parks until the go file exists."""
    order = "order-7"
    done = [
        await crash_reserve(ledger, order),
        await crash_charge(ledger, order),
        await crash_pack(ledger, order, go_file),
        await crash_ship(ledger, order),
    ]
    return "; ".join(done)


@workflow()
async def crash_sleeper(ledger: str, go_file: str) -> str:  # noqa: ARG001 - same CLI shape
    """A step, a durable sleep of ``SLEEP_SECONDS``, a step."""
    order = "order-8"
    reserved = await crash_reserve(ledger, order)
    await sleep(SLEEP_SECONDS)
    return f"{reserved}; {await crash_ship(ledger, order)}"


WORKFLOWS = {"crash_pipeline": crash_pipeline, "crash_sleeper": crash_sleeper}


def _configure(db: str, lease_ttl: str | None) -> None:
    configure(storage=SQLiteStorageBackend(db))
    if lease_ttl is not None:
        configure(lease_ttl=float(lease_ttl), timer_poll_interval=0.1)


async def _start(db: str, name: str, ledger: str, go_file: str, lease_ttl: str | None) -> None:
    _configure(db, lease_ttl)
    run_id = await start(WORKFLOWS[name], ledger, go_file)
    print(json.dumps({"run_id": run_id}), flush=True)
    await get_workflow_result(run_id, timeout=PARK_LIMIT_SECONDS)


async def _resume(db: str, run_id: str) -> None:
    _configure(db, None)
    print(json.dumps({"result": await resume(run_id)}), flush=True)


async def _result(db: str, run_id: str, lease_ttl: str | None) -> None:
    _configure(db, lease_ttl)
    result = await get_workflow_result(run_id, timeout=PARK_LIMIT_SECONDS)
    print(json.dumps({"result": result}), flush=True)


def main(argv: list[str]) -> None:
    command, db, *rest = argv
    commands: dict[str, Any] = {
        "start": lambda: _start(db, rest[0], rest[1], rest[2], rest[3] if len(rest) > 3 else None),
        "resume": lambda: _resume(db, rest[0]),
        "result": lambda: _result(db, rest[0], rest[1] if len(rest) > 1 else None),
    }
    asyncio.run(commands[command]())
