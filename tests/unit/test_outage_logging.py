"""An outage of storage is one log line (and one when it is over), not one per tick."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loguru import logger

from pyworkflow.engine.activation import Engine
from pyworkflow.runtime.local import InProcessQueue
from pyworkflow.runtime.service import EngineService
from pyworkflow.storage.memory import InMemoryStorageBackend
from tests.conftest import ManualClock
from tests.polling import until


class Flaky(InMemoryStorageBackend):
    down = False

    async def claim_due_timers(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise ConnectionError("storage is away")
        return await super().claim_due_timers(*args, **kwargs)


async def test_an_outage_is_logged_once_and_its_end_once() -> None:
    storage = Flaky()
    queue = InProcessQueue()
    engine = Engine(storage, ManualClock(datetime(2030, 1, 1, tzinfo=UTC)), queue)
    queue.engine = engine
    lines: list[str] = []
    logger.enable("pyworkflow")
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    ticks = {"n": 0}
    claim = storage.claim_due_timers

    async def counting(*args: Any, **kwargs: Any) -> Any:
        ticks["n"] += 1
        return await claim(*args, **kwargs)

    storage.claim_due_timers = counting  # type: ignore[method-assign]
    service = EngineService(engine, poll_interval=0.005)
    try:
        storage.down = True
        await until(lambda: ticks["n"] >= 20, "twenty failing ticks", 10.0)
        storage.down = False
        await until(lambda: any("answer again" in line for line in lines), "the recovery", 10.0)
    finally:
        await service.stop()
        logger.remove(sink)
        logger.disable("pyworkflow")
    failures = [line for line in lines if "tick failed" in line]
    assert len(failures) == 1, lines
    assert sum("answer again" in line for line in lines) == 1
