"""The workflows the bug zoo runs: small, but each leans on one thing the engine must get right.

- ``zoo_order``: a step retried twice, a sleep, a hook carrying a payload, then two more steps
  and a second sleep. Every step body takes a second of (virtual) time, so activations overlap.
- ``zoo_fanout``: three steps in parallel (``asyncio.gather``) next to a local-only audit step,
  then a sleep and a flaky step (three failures). With dispatched steps the audit runs inline
  while workers finish the others and wake the run: activations of one run overlap.
- ``zoo_race``: a step and a local-only audit race (``asyncio.wait``, first completed); which
  step follows depends on the winner. The result does not, so faults may change the winner, but
  an instance that applied results in another order than the log holds issues other commands.
- ``zoo_long``: a step that fails once and is retried 30s later, then a 45s step: the retry's
  timer claim (30s) runs out while the long step still runs, so the timer fires again.
- ``zoo_stamps``: four steps in a row (the first two: the same step with the same arguments),
  a sleep, one more. Each result names the command that ran it: two calls never share one.
- ``zoo_twins``: three identical calls of one step in parallel (``asyncio.gather``), the later
  calls finishing first; each result names its command, so results matched to the wrong call
  show, inline and dispatched alike.
- ``zoo_onboard``: a step, a hook with a timeout whose token is handed out by ``on_created``
  (the only way the outside world learns it), then a step that says how the hook ended.
- ``zoo_fragile``: one step whose first executions take their worker down with them.
- ``zoo_checkout``: a step that fails for good (``FatalError``), caught by the workflow by type.
- ``zoo_shielded``: a sleep and a step inside ``shield()``, then one more step: cancelled during
  the shielded sleep, the run finishes the shield and ends cancelled at the step after it.
- ``zoo_family``: three children at once (two of them the same call), one more left waiting on a
  hook nobody answers (cancelled when the parent ends), then a step.
- ``zoo_tree``: two children sleeping a day under a parent sleeping a week; cancelling the
  parent cancels them, and each runs its shielded cleanup step once.
- ``zoo_chain``: continues as new ``CHAIN_LENGTH`` times, one step per generation.
- ``zoo_tick``: what schedules start: a sleep of ``TICK_SLEEP`` then a step (longer than some
  schedules' period, so overlap policies decide); ``zoo_tick_failing`` fails at its step.

Step bodies are plain ``*_body`` functions, so a scenario can wrap them in ``Simulation.mock_step``
to record every execution (see ``scenarios.Ledger``). Failures depend on the attempt number the
engine hands the step, never on process state: the same seed fails the same attempts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyworkflow import (
    CancellationError,
    ChildWorkflowFailedError,
    FatalError,
    HookExpiredError,
    RetryableError,
    continue_as_new,
    get_step_info,
    hook,
    shield,
    sleep,
    start_child_workflow,
    step,
    workflow,
)

STEP_TIME = 1.0  # seconds of virtual time every step body takes
RESERVE_FAILURES = 2  # zoo_reserve fails its first two attempts
FLAKY_FAILURES = 3  # zoo_flaky fails its first three attempts
FANOUT_WIDTH = 3
TWINS = 3
ACTIVATE_TIMEOUT = "10m"  # within the zoo's liveness bound
LONG_STEP_TIME = 45.0  # longer than a timer claim (lease_ttl, 30s)
CHAIN_LENGTH = 4


async def reserve_body(item: str) -> str:
    await asyncio.sleep(STEP_TIME)
    attempt = get_step_info().attempt
    if attempt <= RESERVE_FAILURES:
        raise RetryableError(f"inventory busy (attempt {attempt})", retry_after="5s")
    return f"reserved {item} on attempt {attempt}"


async def charge_body(item: str, amount: int) -> str:
    await asyncio.sleep(STEP_TIME)
    return f"charged {amount} for {item}"


async def ship_body(item: str) -> str:
    await asyncio.sleep(STEP_TIME)
    return f"shipped {item}"


async def price_body(index: int) -> int:
    await asyncio.sleep(STEP_TIME * (1 + index))
    return 10 * (index + 1)


async def audit_body(label: str) -> str:
    await asyncio.sleep(STEP_TIME * 2)
    return f"audited {label}"


async def flaky_body(label: str) -> str:
    await asyncio.sleep(STEP_TIME)
    attempt = get_step_info().attempt
    if attempt <= FLAKY_FAILURES:
        raise RetryableError(f"{label}: flaky (attempt {attempt})", retry_after="2s")
    return f"{label} done on attempt {attempt}"


async def warm_body(label: str) -> str:
    attempt = get_step_info().attempt
    if attempt == 1:
        raise RetryableError(f"{label}: cold start", retry_after="30s")
    return f"{label} warm"


async def slow_body(label: str) -> str:
    await asyncio.sleep(LONG_STEP_TIME)
    return f"{label} slow"


async def stamp_body(label: str) -> str:
    await asyncio.sleep(STEP_TIME)
    return f"{label}@{get_step_info().step_id}"


async def twin_body(label: str) -> str:
    position = int(get_step_info().step_id.rpartition(":")[2])
    await asyncio.sleep(STEP_TIME * (TWINS + 1 - position))  # the last call finishes first
    return f"{label}@{get_step_info().step_id}"


async def greet_body(user: str) -> str:
    await asyncio.sleep(STEP_TIME)
    return f"greeted {user}"


async def enroll_body(user: str, via: str) -> str:
    await asyncio.sleep(STEP_TIME)
    return f"enrolled {user} ({via})"


async def sturdy_body(label: str) -> str:
    await asyncio.sleep(STEP_TIME)
    return f"{label} sturdy"


@step(name="zoo_reserve", max_retries=3, retry_delay="5s")
async def reserve(item: str) -> str:
    return await reserve_body(item)


@step(name="zoo_charge")
async def charge(item: str, amount: int) -> str:
    return await charge_body(item, amount)


@step(name="zoo_ship")
async def ship(item: str) -> str:
    return await ship_body(item)


@step(name="zoo_price")
async def price(index: int) -> int:
    return await price_body(index)


@step(name="zoo_audit", force_local=True)
async def audit(label: str) -> str:
    return await audit_body(label)


@step(name="zoo_flaky", max_retries=5, retry_delay="2s")
async def flaky(label: str) -> str:
    return await flaky_body(label)


@step(name="zoo_stamp")
async def stamp(label: str) -> str:
    return await stamp_body(label)


@step(name="zoo_warm", max_retries=2, retry_delay="30s")
async def warm(label: str) -> str:
    return await warm_body(label)


@step(name="zoo_slow")
async def slow(label: str) -> str:
    return await slow_body(label)


@step(name="zoo_declined")
async def declined(item: str) -> str:
    raise FatalError(f"card declined for {item}")


@workflow(name="zoo_order")
async def order(item: str) -> dict[str, Any]:
    reservation = await reserve(item)
    await sleep("30s")
    approval = await hook("approval")
    receipt = await charge(item, int(approval["amount"]))
    await sleep("10s")
    shipment = await ship(item)
    return {"reservation": reservation, "receipt": receipt, "shipment": shipment}


@workflow(name="zoo_fanout")
async def fanout(label: str) -> dict[str, Any]:
    *prices, audited = await asyncio.gather(*(price(i) for i in range(FANOUT_WIDTH)), audit(label))
    await sleep("1m")
    settled = await flaky(label)
    return {"total": sum(prices), "audited": audited, "settled": settled}


@workflow(name="zoo_race")
async def race(label: str) -> dict[str, Any]:
    quote = asyncio.ensure_future(price(0))
    check = asyncio.ensure_future(audit(label))
    done, _ = await asyncio.wait({quote, check}, return_when=asyncio.FIRST_COMPLETED)
    if quote in done:
        await ship(label)  # the quote came first: ship at once
    else:
        await charge(label, 0)  # the audit came first: settle before shipping
    return {"total": await quote, "audited": await check}


@workflow(name="zoo_long", max_recovery_attempts=10)  # about the lease, not the budget
async def long(label: str) -> str:
    return f"{await warm(label)}, {await slow(label)}"


@workflow(name="zoo_stamps")
async def stamps() -> list[str]:
    results = [await stamp("x"), await stamp("x"), await stamp("y"), await stamp("z")]
    await sleep("5s")
    results.append(await stamp("w"))
    return results


@step(name="zoo_twin")
async def twin(label: str) -> str:
    return await twin_body(label)


@step(name="zoo_greet")
async def greet(user: str) -> str:
    return await greet_body(user)


@step(name="zoo_enroll")
async def enroll(user: str, via: str) -> str:
    return await enroll_body(user, via)


@step(name="zoo_sturdy")
async def sturdy(label: str) -> str:
    return await sturdy_body(label)


@workflow(name="zoo_twins")
async def twins(label: str) -> list[str]:
    return list(await asyncio.gather(*(twin(label) for _ in range(TWINS))))


def send_link(token: str) -> None:
    """The user code's on_created: mails the token (the simulator records what it is handed)."""
    del token


@workflow(name="zoo_onboard")
async def onboard(user: str, timeout: str | None = None) -> dict[str, str]:
    greeting = await greet(user)
    try:
        answer = await hook("activate", timeout=timeout, on_created=send_link)
        via = str(answer["via"])
    except HookExpiredError:
        via = "expired"
    return {"greeting": greeting, "enrolled": await enroll(user, via)}


@workflow(name="zoo_fragile")
async def fragile(label: str) -> str:
    return await sturdy(label)


@workflow(name="zoo_shielded")
async def shielded(label: str) -> list[str]:
    async with shield():
        await sleep("5m")
        inside = await stamp(f"{label}-in")
    return [inside, await stamp(f"{label}-after")]


@workflow(name="zoo_kid")
async def kid(label: str) -> str:
    await sleep("1m")
    return await stamp(f"{label}-kid")


@workflow(name="zoo_waiting_kid")
async def waiting_kid(label: str) -> Any:
    """Waits on a hook nobody answers: only its parent's end stops it."""
    return await hook(f"{label}-never")


@workflow(name="zoo_family")
async def family(label: str) -> list[Any]:
    """Two identical children and one more at once, a child left waiting, a step, and a sum."""
    waiting = await start_child_workflow(waiting_kid, label, wait_for_completion=False)
    together = await asyncio.gather(
        start_child_workflow(kid, label),
        start_child_workflow(kid, label),  # the same call twice: two children
        start_child_workflow(kid, f"{label}-b"),
    )
    return [*together, await stamp(f"{label}-parent"), await waiting.get_status()]


@workflow(name="zoo_square")
async def square(n: int) -> int:
    """Ends in its first activation: runs in its parent's (``Engine._child_here``)."""
    return n * n


@workflow(name="zoo_refuses")
async def refuses(n: int) -> int:
    raise FatalError(f"kid {n} refuses")


@workflow(name="zoo_once_more")
async def once_more(n: int, again: bool = True) -> int:
    if again:
        await continue_as_new(n + 1, again=False)
    return n


@workflow(name="zoo_here")
async def here(label: str) -> list[Any]:
    """Children awaited one at a time: some end in their first activation (returning, failing,
    continuing as new), one stamps (left to the queue), one sleeps first."""
    got: list[Any] = [await start_child_workflow(square, n) for n in range(3)]
    try:
        await start_child_workflow(refuses, 7)
    except ChildWorkflowFailedError:
        got.append("refused")
    got.append(await start_child_workflow(once_more, 10))
    got.append(await start_child_workflow(kid, label))
    got.append(await start_child_workflow(square, 4))
    return got


@workflow(name="zoo_tree")
async def tree(label: str) -> str:
    """Children sleeping a day: cancelled with their parent, which sleeps a week."""
    for i in range(2):
        await start_child_workflow(kid_sleeps_a_day, f"{label}-{i}", wait_for_completion=False)
    await sleep("7d")
    return "woke"


@workflow(name="zoo_kid_sleeps_a_day")
async def kid_sleeps_a_day(label: str) -> str:
    try:
        await sleep("1d")
    except CancellationError:
        async with shield():
            await stamp(f"{label}-cleanup")  # cleanup, once
        raise
    return label


@workflow(name="zoo_chain")
async def chain(generation: int, total: int = 0) -> int:
    """Continues as new CHAIN_LENGTH times, a step each generation; returns the sum."""
    if generation == CHAIN_LENGTH:
        return total
    value = await price(generation)
    await continue_as_new(generation + 1, total=total + value)
    raise AssertionError("continue_as_new returned")


@workflow(name="zoo_checkout")
async def checkout(item: str) -> str:
    try:
        return await declined(item)
    except FatalError as exc:
        return f"declined: {exc}"


@workflow(name="zoo_doomed")
async def doomed(item: str) -> list[Any]:
    """Fails at once while a slower parallel step is still running on a worker."""
    return list(await asyncio.gather(declined(item), price(2)))


def expected_order(item: str, amount: int) -> dict[str, Any]:
    return {
        "reservation": f"reserved {item} on attempt {RESERVE_FAILURES + 1}",
        "receipt": f"charged {amount} for {item}",
        "shipment": f"shipped {item}",
    }


def expected_fanout(label: str) -> dict[str, Any]:
    total = sum(10 * (i + 1) for i in range(FANOUT_WIDTH))
    settled = f"{label} done on attempt {FLAKY_FAILURES + 1}"
    return {"total": total, "audited": f"audited {label}", "settled": settled}


def expected_race(label: str) -> dict[str, Any]:
    return {"total": 10, "audited": f"audited {label}"}


def expected_twins(label: str) -> list[str]:
    return [f"{label}@step:zoo_twin:{i}" for i in range(1, TWINS + 1)]


def expected_onboard(user: str, via: str) -> dict[str, str]:
    return {"greeting": f"greeted {user}", "enrolled": f"enrolled {user} ({via})"}


EXPECTED_STAMPS = [
    "x@step:zoo_stamp:1",
    "x@step:zoo_stamp:2",
    "y@step:zoo_stamp:3",
    "z@step:zoo_stamp:4",
    "w@step:zoo_stamp:6",
]

STEP_BODIES = {
    reserve: reserve_body,
    charge: charge_body,
    ship: ship_body,
    price: price_body,
    audit: audit_body,
    flaky: flaky_body,
    stamp: stamp_body,
    warm: warm_body,
    slow: slow_body,
    twin: twin_body,
    greet: greet_body,
    enroll: enroll_body,
    sturdy: sturdy_body,
}


TICK_SLEEP = "3h"


@workflow(name="zoo_tick")
async def tick(label: str) -> str:
    await sleep(TICK_SLEEP)
    return await stamp(label)


@workflow(name="zoo_tick_failing")
async def tick_failing(item: str) -> str:
    await sleep("2h")
    return await declined(item)


def expected_family(label: str) -> list[Any]:
    kid_stamp = "@step:zoo_stamp:2"  # a kid's stamp follows its sleep
    return [
        f"{label}-kid{kid_stamp}",
        f"{label}-kid{kid_stamp}",
        f"{label}-b-kid{kid_stamp}",
        f"{label}-parent@step:zoo_stamp:5",
        "running",
    ]


def expected_here(label: str) -> list[Any]:
    return [0, 1, 4, "refused", 11, f"{label}-kid@step:zoo_stamp:2", 16]


def expected_chain() -> int:
    return sum(10 * (generation + 1) for generation in range(CHAIN_LENGTH))
