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

It also records every ``on_created`` call (run, hook, token), and checks the promise of
``hook(on_created=...)``: each hook created with a callback had it called at least once, every
time with the token storage holds for the hook. The only excuse is a run that ended before
anything else happened after the hook was created (nothing to announce to), or that the engine
ended from outside its code (a lost worker too often, a limit).

This module only counts; it never injects anything and never touches storage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pyworkflow.engine.hooks import token_matches
from pyworkflow.model.events import TERMINAL_EVENT_TYPES, Event, EventType
from pyworkflow.model.schemas import Hook

_OUTCOMES = frozenset({EventType.STEP_COMPLETED, EventType.STEP_FAILED, EventType.STEP_RETRYING})
_RECORDS = frozenset({EventType.STEP_STARTED, EventType.SLEEP_STARTED, EventType.HOOK_CREATED})

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
    # Tokens handed to on_created, by (run id, hook id), in call order.
    announcements: dict[tuple[str, str], list[str]] = field(default_factory=dict)

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

    def announced(self, run_id: str, hook_id: str, token: str) -> None:
        """The engine is about to call a hook's ``on_created`` with ``token``."""
        self.announcements.setdefault((run_id, hook_id), []).append(token)

    def token(self, run_id: str, hook_id: str) -> str | None:
        """The token the last ``on_created`` call of a hook was handed, if any."""
        tokens = self.announcements.get((run_id, hook_id))
        return tokens[-1] if tokens else None

    def violations(
        self, run_id: str, events: list[Event], hooks: list[Hook] | None = None
    ) -> list[str]:
        """What the ledger says is wrong with ``run_id`` given its final log (and hook rows)."""
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
        return problems + self._announcement_violations(run_id, events, hooks or [])

    def _announcement_violations(
        self, run_id: str, events: list[Event], hooks: list[Hook]
    ) -> list[str]:
        problems: list[str] = []
        stored = {hook.hook_id: hook for hook in hooks}
        for index, event in enumerate(events):
            if event.type is not EventType.HOOK_CREATED or not event.data.get("announce"):
                continue
            hook_id = str(event.data.get("hook_id"))
            tokens = self.announcements.get((run_id, hook_id), [])
            if not tokens:
                if not _nothing_after(events[index + 1 :]):
                    problems.append(
                        f"hook {hook_id} ({event.data.get('name')!r}): on_created was never"
                        " called (it must be, at least once, once the hook is recorded)"
                    )
                continue
            if len(set(tokens)) > 1:
                problems.append(
                    f"hook {hook_id}: on_created was handed {len(set(tokens))} different tokens"
                )
            if hook_id in stored and not token_matches(stored[hook_id], tokens[0]):
                problems.append(
                    f"hook {hook_id}: on_created was handed a token that is not the hook's"
                )
        return problems


def _nothing_after(later: list[Event]) -> bool:
    """The run ended right after the hook was created (only command records in between), or
    the engine ended it from outside its code: nobody was left to announce the hook to."""
    for event in later:
        if event.type in _RECORDS:
            continue
        if event.type is EventType.WORKFLOW_FAILED and event.data.get("imposed"):
            return True
        if event.type is EventType.WORKFLOW_INTERRUPTED:
            continue  # a lost worker: the recovery must still announce
        return event.type in TERMINAL_EVENT_TYPES
    return False


__all__ = ["ExecutionLedger"]
