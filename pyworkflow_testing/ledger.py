"""The execution ledger: every step body a simulation ran, and every fault that excuses a repeat.

The engine promises exactly-once *recording* and at-least-once *execution*: a step body may run
again, but only when something went wrong in between — a worker crashed, a message was lost or
delivered twice, a storage call failed, everything restarted. The log cannot show a body that ran
twice (the second result is refused) or a result that no body produced (served from a cache), so
the simulator counts executions itself, per ``(run, step, attempt)``, and the faults it injected,
per run. Two oracles read it:

- an attempt whose body ran again with no fault touching its run before the repeat began;
- a recorded outcome (``step.completed``, ``step.failed``, ``step.retrying``) of an attempt whose
  body never ran.

This module only counts; it never injects anything and never touches storage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pyworkflow.engine.events import Event, EventType

_OUTCOMES = frozenset({EventType.STEP_COMPLETED, EventType.STEP_FAILED, EventType.STEP_RETRYING})

Attempt = tuple[str, str, int]  # (run_id, step command id, attempt)


@dataclass
class ExecutionLedger:
    """See the module docstring. ``executed`` and ``fault`` are called by the simulated world."""

    executions: Counter[Attempt] = field(default_factory=Counter)
    # Faults that touched each run, and faults that touched every run (restarts), so far.
    faults: Counter[str] = field(default_factory=Counter)
    global_faults: int = 0
    # Repeats no fault excuses: (attempt, how many times it had run by then).
    unexcused: list[tuple[Attempt, int]] = field(default_factory=list)

    def _faults_of(self, run_id: str) -> int:
        return self.faults[run_id] + self.global_faults

    def executed(self, run_id: str, step_id: str, attempt: int) -> None:
        """A step body is about to run."""
        key = (run_id, step_id, attempt)
        self.executions[key] += 1
        # A fault may excuse a repeat long after it struck (a message dropped before the first
        # run comes back while it still runs), so any fault of the run before the repeat does.
        if self.executions[key] > 1 and self._faults_of(run_id) == 0:
            self.unexcused.append((key, self.executions[key]))

    def fault(self, run_id: str | None, kind: str) -> None:
        """A fault that may make ``run_id``'s steps run again struck (None: every run)."""
        del kind  # counted, not told apart: any of them may excuse a repeat
        if run_id is None:
            self.global_faults += 1
        else:
            self.faults[run_id] += 1

    def violations(self, run_id: str, events: list[Event]) -> list[str]:
        """What the ledger says is wrong with ``run_id`` given its final log."""
        problems = [
            f"{step_id} attempt {attempt}: its body ran {count} times with no fault in between"
            " (a step must run again only after a crash, a lost or duplicated message, a storage"
            " error or a restart)"
            for (rid, step_id, attempt), count in self.unexcused
            if rid == run_id
        ]
        for event in events:
            if event.type in _OUTCOMES:
                step_id = str(event.data.get("command_id", ""))
                attempt = int(event.data.get("attempt", 1))
                if self.executions[(run_id, step_id, attempt)] == 0:
                    problems.append(
                        f"{step_id} attempt {attempt}: {event.type.value} recorded at event"
                        f" {event.sequence} but its body never ran"
                    )
        return problems


__all__ = ["ExecutionLedger"]
