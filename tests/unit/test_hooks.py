"""Hooks: tokens, payload validation before recording, expiry, and exactly one receipt."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from pyworkflow import (
    EventType,
    HookAlreadyReceivedError,
    HookExpiredError,
    HookNotFoundError,
    HookPayloadError,
    InvalidTokenError,
    RunStatus,
    define_hook,
    get_hook_token,
    get_workflow_events,
    get_workflow_result,
    hook,
    resume_hook,
    workflow,
)
from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.hooks import token_digest
from tests.conftest import Env

tokens: list[str] = []


class Approval(BaseModel):
    approved: bool
    by: str


@workflow()
async def approval_flow() -> str:
    decision = await hook("approval", payload_schema=Approval, on_created=tokens.append)
    return f"{decision.approved} by {decision.by}"


@workflow()
async def raw_hook_flow() -> object:
    return await hook("data", on_created=tokens.append)


@workflow()
async def expiring_flow() -> str:
    try:
        await hook("reply", timeout="1h", on_created=tokens.append)
    except HookExpiredError:
        return "expired"
    return "answered"


approval_hook = define_hook("typed_approval", Approval)


@workflow()
async def typed_flow() -> str:
    decision = await approval_hook(on_created=tokens.append)
    assert isinstance(decision, Approval)
    return decision.by


@pytest.fixture(autouse=True)
def _clear_tokens() -> None:
    tokens.clear()


async def events_of(env: Env, run_id: str) -> list[str]:
    return [e.type.value for e in await get_workflow_events(run_id, storage=env.storage)]


async def test_hook_payload_resumes_the_workflow(env: Env) -> None:
    run_id = await env.start(approval_flow)
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    assert await env.storage.get_timer(run_id) is None  # no guard left behind
    assert len(tokens) == 1
    token = tokens[0]
    assert token.startswith(f"{run_id}:") and len(token.rsplit(":", 1)[1]) >= 20
    result = await resume_hook(token, {"approved": True, "by": "ana"}, storage=env.storage)
    assert (result.run_id, result.status) == (run_id, "received")
    assert await get_workflow_result(run_id, timeout=5, storage=env.storage) == "True by ana"
    types = await events_of(env, run_id)
    assert types[-2:] == ["hook.received", "workflow.completed"]
    assert types.count("hook.created") == 1 and types.count("hook.received") == 1


async def test_typed_hook_returns_the_model(env: Env) -> None:
    run_id = await env.start(typed_flow)
    await resume_hook(tokens[0], Approval(approved=False, by="bo"), storage=env.storage)
    assert await get_workflow_result(run_id, timeout=5, storage=env.storage) == "bo"


async def test_malformed_payload_is_rejected_before_anything_is_recorded(env: Env) -> None:
    run_id = await env.start(approval_flow)
    before = await events_of(env, run_id)
    with pytest.raises(HookPayloadError, match="Approval"):
        await resume_hook(tokens[0], {"approved": "maybe"}, storage=env.storage)
    assert await events_of(env, run_id) == before
    hooks = await env.storage.list_hooks(run_id)
    assert hooks[0].status.value == "pending"
    # a correct payload still works afterwards
    await resume_hook(tokens[0], {"approved": True, "by": "cy"}, storage=env.storage)
    assert await get_workflow_result(run_id, timeout=5, storage=env.storage) == "True by cy"


async def test_non_serializable_payload_is_rejected(env: Env) -> None:
    from pyworkflow import SerializationError, configure

    configure(allow_pickle=False)
    run_id = await env.start(raw_hook_flow)
    with pytest.raises(SerializationError):
        await resume_hook(tokens[0], object(), storage=env.storage)
    assert "hook.received" not in await events_of(env, run_id)


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("garbage", InvalidTokenError),
        (12, InvalidTokenError),
        ("run_missing:hook-1:secret", HookNotFoundError),
    ],
)
async def test_bad_tokens_raise_clear_errors(env: Env, token: object, error: type) -> None:
    with pytest.raises(error):
        await resume_hook(token, {}, storage=env.storage)  # type: ignore[arg-type]


async def test_a_guessed_secret_is_rejected(env: Env) -> None:
    run_id = await env.start(raw_hook_flow)
    forged = tokens[0].rsplit(":", 1)[0] + ":guessed-secret"
    with pytest.raises(InvalidTokenError):
        await resume_hook(forged, {"x": 1}, storage=env.storage)
    assert "hook.received" not in await events_of(env, run_id)
    # the token is not just run_id:hook_id
    assert tokens[0] != f"{run_id}:hook-1"


async def test_second_receipt_raises(env: Env) -> None:
    run_id = await env.start(raw_hook_flow)
    await resume_hook(tokens[0], {"n": 1}, storage=env.storage)
    with pytest.raises(HookAlreadyReceivedError):
        await resume_hook(tokens[0], {"n": 2}, storage=env.storage)
    assert await get_workflow_result(run_id, timeout=5, storage=env.storage) == {"n": 1}


async def test_concurrent_receipts_exactly_one_wins(env: Env) -> None:
    run_id = await env.start(raw_hook_flow)
    results = await asyncio.gather(
        *(resume_hook(tokens[0], {"n": i}, storage=env.storage) for i in range(10)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, HookAlreadyReceivedError) for r in losses)
    await env.settle()
    received = [
        e
        for e in await get_workflow_events(run_id, storage=env.storage)
        if e.type is EventType.HOOK_RECEIVED
    ]
    assert len(received) == 1


async def test_hook_timeout_wakes_the_workflow_with_hook_expired_error(env: Env) -> None:
    run_id = await env.start(expiring_flow)
    run = await env.run_until_done(run_id)
    assert run.status is RunStatus.COMPLETED
    assert await get_workflow_result(run_id, storage=env.storage) == "expired"
    assert "hook.expired" in await events_of(env, run_id)
    with pytest.raises(HookExpiredError):
        await resume_hook(tokens[0], {"late": True}, storage=env.storage)


async def test_expired_hook_is_rejected_even_before_the_run_notices(env: Env) -> None:
    run_id = await env.start(expiring_flow)
    env.clock.advance(3601)
    with pytest.raises(HookExpiredError):
        await resume_hook(tokens[0], {"late": True}, storage=env.storage)
    assert "hook.received" not in await events_of(env, run_id)


async def test_hook_outside_a_workflow_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="inside a workflow"):
        await hook("nope")
    with pytest.raises(TypeError, match="pydantic"):
        define_hook("bad", dict)  # type: ignore[type-var]


async def test_on_created_is_called_once_with_the_stored_token_and_recorded(env: Env) -> None:
    run_id = await env.start(raw_hook_flow)
    await env.settle()
    assert len(tokens) == 1
    hooks = await env.storage.list_hooks(run_id)
    assert [hook.token for hook in hooks] == [None]  # storage keeps only the digest
    assert [token_digest(token) for token in tokens] == [hook.token_hash for hook in hooks]
    assert [await get_hook_token(run_id, hooks[0].hook_id, storage=env.storage)] == tokens
    events = await get_workflow_events(run_id, storage=env.storage)
    created = [e for e in events if e.type is EventType.HOOK_CREATED]
    announced = [e for e in events if e.type is EventType.HOOK_ANNOUNCED]
    assert created[0].data["announce"] is True
    assert [e.data["hook_id"] for e in announced] == [created[0].data["hook_id"]]
    assert (await env.storage.get_run(run_id)).status is RunStatus.SUSPENDED
    assert await env.storage.get_timer(run_id) is None  # no guard left behind


class _WorkerDied(BaseException):
    """The process running the activation died (what no ``except Exception`` stops)."""


announced_tokens: list[str] = []


def _die_the_first_time(token: str) -> None:
    announced_tokens.append(token)
    if len(announced_tokens) == 1:
        raise _WorkerDied


@workflow()
async def fragile_link_flow() -> object:
    return await hook("link", on_created=_die_the_first_time)


async def test_on_created_is_called_again_after_a_crash_before_it_was_recorded(env: Env) -> None:
    """The worker dies inside on_created (after the hook.created commit suspended the run):
    the run's timer, due within lease_ttl, wakes it, and that activation calls on_created
    again, same token."""
    announced_tokens.clear()
    engine = env.engine
    run, _ = await engine.start_run(workflow_definition_of(fragile_link_flow), (), {})
    with pytest.raises(_WorkerDied):
        await engine.advance(run.run_id)
    assert (await env.storage.get_run(run.run_id)).status is RunStatus.SUSPENDED
    assert "hook.announced" not in await events_of(env, run.run_id)
    guard = await env.storage.get_timer(run.run_id)
    assert guard is not None and guard.fire_at <= env.clock.now() + engine.options.lease_ttl
    env.clock.advance(engine.options.lease_ttl.total_seconds())
    assert await engine.fire_due_timers() == [run.run_id]
    await env.settle()
    assert len(announced_tokens) == 2 and announced_tokens[0] == announced_tokens[1]
    stored = (await env.storage.list_hooks(run.run_id))[0].token_hash
    assert stored == token_digest(announced_tokens[0])
    assert (await events_of(env, run.run_id)).count("hook.announced") == 1
    assert await env.storage.get_timer(run.run_id) is None  # the guard is gone: nothing due
    await resume_hook(announced_tokens[0], {"ok": True}, storage=env.storage)
    assert await get_workflow_result(run.run_id, timeout=5, storage=env.storage) == {"ok": True}
