"""The workflow with a bug the simulator must find: it branches on ``random.random()`` in
workflow code instead of ``pyworkflow.random()``. Tests write it out as a module (``COIN``, with
``{prefix}`` naming its workflow and steps uniquely) for the CLI and the pytest plugin to load."""

COIN = """
import random

import pytest

from pyworkflow import sleep, step, workflow


@step(name="{prefix}_heads")
async def heads() -> str:
    return "heads"


@step(name="{prefix}_tails")
async def tails() -> str:
    return "tails"


@workflow(name="{prefix}_flip")
async def flip() -> str:
    # The bug under test: random.random() in workflow code, not pyworkflow.random().
    side = await heads() if random.random() < 0.5 else await tails()
    await sleep("1m")
    return side
"""
