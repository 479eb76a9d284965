"""A workflow and a small command line for ``test_double_execution.py``, run in real subprocesses.

``flaky_then_long`` has a step that fails its first attempt and asks to be retried a second
later, then a step that runs for several lease_ttls. Every step body appends one line
``run_id step_id attempt pid`` to the ledger file (a workflow argument, so any process that
replays the run finds it in the log) *before* doing its work: the ledger counts how many times
each (run, step, attempt) body really started, in which process.

Commands (all take the SQLite path, the lease_ttl and the timer poll interval first; each process
runs its own ``LocalRuntime``, inline steps, and serves the storage until killed or until
``SERVE_LIMIT_SECONDS`` pass):
``serve DB LEASE_TTL POLL READY`` only serves (timer loop, sweeper, lease renewal) and creates
the file READY once it does;
``start DB LEASE_TTL POLL LEDGER COUNT`` starts COUNT runs, prints ``{"run_ids": [...]}`` and
serves them.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pyworkflow import RetryableError, get_step_info, start, step, workflow
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage import SQLiteStorageBackend

RETRY_AFTER = "1s"
LONG_STEP_SECONDS = 3.5  # several lease_ttls of the tests (1s)
# Runs start apart, and not with the service: see ``test_double_execution.py``.
START_GAP_SECONDS = 0.137
SERVE_LIMIT_SECONDS = 60.0  # a process the test forgot to kill does not outlive it for long


def _note(ledger: str) -> None:
    info = get_step_info()
    with open(ledger, "a", encoding="utf-8") as file:
        file.write(f"{info.run_id} {info.step_id} {info.attempt} {os.getpid()}\n")
        file.flush()


@step()
async def double_flaky(ledger: str) -> str:
    """Fails attempt 1 with a retry one second later; attempt 2 succeeds."""
    _note(ledger)
    if get_step_info().attempt == 1:
        raise RetryableError("not yet", retry_after=RETRY_AFTER)
    return "flaky ok"


@step()
async def double_long(ledger: str) -> str:
    """Runs for several lease_ttls."""
    _note(ledger)
    await asyncio.sleep(LONG_STEP_SECONDS)
    return "long ok"


@workflow()
async def flaky_then_long(ledger: str) -> str:
    return f"{await double_flaky(ledger)}; {await double_long(ledger)}"


def _runtime(lease_ttl: str, poll: str) -> LocalRuntime:
    return LocalRuntime(dispatch_steps=False, lease_ttl=float(lease_ttl), poll_interval=float(poll))


async def _serve(db: str, lease_ttl: str, poll: str, ready: str) -> None:
    storage = SQLiteStorageBackend(db)
    await storage.connect()  # creates the schema before the other process starts
    await _runtime(lease_ttl, poll).ensure_running(storage)
    Path(ready).touch()
    await asyncio.sleep(SERVE_LIMIT_SECONDS)


async def _start(db: str, lease_ttl: str, poll: str, ledger: str, count: str) -> None:
    storage = SQLiteStorageBackend(db)
    runtime = _runtime(lease_ttl, poll)
    await runtime.ensure_running(storage)
    run_ids = []
    for _ in range(int(count)):
        await asyncio.sleep(START_GAP_SECONDS)
        run_ids.append(await start(flaky_then_long, ledger, runtime=runtime, storage=storage))
    print(json.dumps({"run_ids": run_ids}), flush=True)
    await asyncio.sleep(SERVE_LIMIT_SECONDS)  # the runtime's service runs the runs meanwhile


def main(argv: list[str]) -> None:
    command, db, lease_ttl, poll, *rest = argv
    commands: dict[str, Any] = {
        "serve": lambda: _serve(db, lease_ttl, poll, rest[0]),
        "start": lambda: _start(db, lease_ttl, poll, rest[0], rest[1]),
    }
    asyncio.run(commands[command]())
