"""A user onboarding workflow: the example the demo, the tests and the simulator all run.

``onboarding(user_id, email)`` creates an account, sends a welcome email (whose first attempt
fails on purpose, to show a retry), pauses durably, waits for the user to click an activation
link (a hook), activates the account and returns a one-line summary. If nobody clicks within
``ACTIVATION_TIMEOUT`` the hook expires and the account stays inactive.

Steps are cheap and touch no network. Each execution of a step body appends one JSON line to the
file named by the ``ONBOARDING_LEDGER`` environment variable (when it is set), so a demo or a test
can count how many times each step really ran. The deliberate failure is keyed on the attempt
number the engine hands the step, never on process state, so it behaves the same in a fresh
process, after a crash and under the simulator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pyworkflow import (
    HookExpiredError,
    RetryableError,
    get_step_info,
    hook,
    sleep,
    step,
    workflow,
)

LEDGER_ENV = "ONBOARDING_LEDGER"
WELCOME_PAUSE = "2s"  # short, so the demo stays quick; a real flow would wait a day
ACTIVATION_TIMEOUT = "1h"
EMAIL_RETRY_AFTER = "1s"


def _ledger_path() -> Path | None:
    path = os.environ.get(LEDGER_ENV)
    return Path(path) if path else None


def _record(outcome: str, **details: Any) -> None:
    """Append one line describing this step execution to the ledger, if there is one."""
    path = _ledger_path()
    if path is None:
        return
    info = get_step_info()
    line = {
        "run_id": info.run_id,
        "step": info.step_name,
        "step_id": info.step_id,
        "attempt": info.attempt,
        "outcome": outcome,
        "pid": os.getpid(),
        **details,
    }
    with path.open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(line) + "\n")


def _remember_activation_token(token: str) -> None:
    """``on_created`` of the activation hook: a real app would email the link; we note it."""
    path = _ledger_path()
    if path is None:
        return
    with path.open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps({"activation_token": token, "pid": os.getpid()}) + "\n")


@step()
async def create_account(user_id: str, email: str) -> str:
    """Create the account (idempotent: the account id is derived from the user id)."""
    account_id = f"acct-{user_id}"
    _record("completed", account_id=account_id, email=email)
    return account_id


@step(max_retries=3, retry_delay=EMAIL_RETRY_AFTER)
async def send_welcome_email(user_id: str, email: str) -> str:
    """Send the welcome email; the first attempt of every run fails as a busy mail server."""
    if get_step_info().attempt == 1:
        _record("failed")
        raise RetryableError("mail server busy, try again", retry_after=EMAIL_RETRY_AFTER)
    _record("completed")
    return f"welcome email sent to {email} for {user_id}"


@step()
async def activate_account(user_id: str, payload: dict[str, Any]) -> str:
    """Mark the account active (idempotent: activating twice leaves it active)."""
    via = str(payload.get("via", "unknown"))
    _record("completed", via=via)
    return f"account of {user_id} activated via {via}"


@workflow()
async def onboarding(user_id: str = "user-1", email: str = "user-1@example.com") -> str:
    """Onboard one user; returns a summary of what happened."""
    account_id = await create_account(user_id, email)
    await send_welcome_email(user_id, email)
    await sleep(WELCOME_PAUSE)
    try:
        payload = await hook(
            "activation", timeout=ACTIVATION_TIMEOUT, on_created=_remember_activation_token
        )
    except HookExpiredError:
        return f"{user_id}: account {account_id} created, activation link expired"
    activated = await activate_account(user_id, payload)
    return f"{user_id}: account {account_id} created, welcome email sent, {activated}"


__all__ = [
    "ACTIVATION_TIMEOUT",
    "LEDGER_ENV",
    "WELCOME_PAUSE",
    "activate_account",
    "create_account",
    "onboarding",
    "send_welcome_email",
]
