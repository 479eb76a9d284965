"""Sweeping a workflow over seeds: what one seed runs (``run_seed``), in a fresh process on
request (``run_seed_isolated``), and many seeds in one or several processes (``run_sweep``).

Used by ``pyworkflow simulate`` (``cli.py``) and by anyone scripting sweeps. Each seed is one
fresh ``Simulation``; this module never prints (reporting is the CLI's) and never touches real
storage, brokers or the wall clock of the workflows it runs. A seed given a ``ReportRequest`` runs
with a trace and writes its HTML report (``report.py``) from the process that ran it.
"""

from __future__ import annotations

import gc
import importlib
import json
import multiprocessing
import os
import random
import re
import shlex
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

import click

from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.model.exceptions import WorkflowNotFoundError
from pyworkflow.utils.duration import parse_duration
from pyworkflow_testing.checking import FaultFreeEndings
from pyworkflow_testing.simulation import DEFAULT_LIVENESS, Simulation, SimulationFailure
from pyworkflow_testing.warmup import warm_up

DEFAULT_WORKERS = 3

_SEED_RANGE = re.compile(r"(\d+)\.\.(\d+)")

# Per sweep (its spec), what its seeds learned of the fault-free endings (``FaultFreeEndings``):
# the seeds of one process share it.
_ENDINGS: dict[str, FaultFreeEndings] = {}


def parse_seeds(text: str) -> range:
    """``"A..B"`` (both included) or ``"N"`` (the single seed N); raises ``ValueError``."""
    text = text.strip()
    if text.isdigit():
        return range(int(text), int(text) + 1)
    match = _SEED_RANGE.fullmatch(text)
    if match is None:
        raise ValueError(f"seeds must be A..B or N with whole numbers, got {text!r}")
    first, last = int(match[1]), int(match[2])
    if first > last:
        raise ValueError(f"seed range {text!r} is empty: {first} is after {last}")
    return range(first, last + 1)


# -- what one sweep runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """Everything a seed needs, picklable so a worker process can rebuild the run by itself."""

    target: str  # "module:attribute"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    faults: str = "all"
    workers: int = DEFAULT_WORKERS
    answer_hooks: dict[str, Any] = field(default_factory=dict)
    args_json: str | None = None  # the --args value, compact, for the reproduce line
    search_path: str = ""  # the directory MODULE is imported from (put first on sys.path)
    liveness: str | None = None  # the --liveness value (None: the simulator's default)
    # The same-seed rerun (determinism) for the first seed of the sweep and every Nth after it
    # (1: every seed, 0: none); a reproduced seed is always the first of its own sweep.
    determinism_every: int = 10
    first_seed: int = 0

    def reruns(self, seed: int) -> bool:
        """Whether ``seed``'s check reruns it with the same seed (``determinism_every``)."""
        every = self.determinism_every
        return every > 0 and (seed - self.first_seed) % every == 0

    def reproduce(self, seed: int) -> str:
        """The shell command that runs exactly this seed again."""
        parts = ["pyworkflow", "simulate", self.target, "--seed", str(seed)]
        parts += ["--faults", self.faults, "--workers", str(self.workers)]
        if self.args_json is not None:
            parts += ["--args", self.args_json]
        if self.answer_hooks:
            parts += ["--answer-hooks", json.dumps(self.answer_hooks, separators=(",", ":"))]
        if self.liveness is not None:
            parts += ["--liveness", self.liveness]
        return " ".join(shlex.quote(part) for part in parts)

    def liveness_bound(self) -> timedelta:
        return DEFAULT_LIVENESS if self.liveness is None else parse_duration(self.liveness)


@dataclass(frozen=True)
class ReportRequest:
    """Run a seed with a trace and write its HTML report to ``path``. ``expected``: the
    violations an earlier, untraced run of the seed found (the report says so if this run finds
    others: the simulator is deterministic, so it should not)."""

    path: str
    expected: list[str] | None = None


@dataclass
class SeedOutcome:
    """How one seed went: no violations means it passed."""

    seed: int
    reproduce: str
    violations: list[str]
    virtual_seconds: float
    statuses: list[str]
    fired: list[tuple[int, str, str]] = field(default_factory=list)  # faults that struck
    report: str | None = None  # the HTML report written for the seed, if one was asked for
    report_problem: str | None = None  # why it was not written, or how it differs from expected

    @property
    def passed(self) -> bool:
        return not self.violations


def load_workflow(target: str, search_path: str | None = None) -> Any:
    """Import ``module:attribute`` like ``python -m`` would; raises ``click.UsageError``."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise click.UsageError(f"expected MODULE:WORKFLOW, got {target!r}")
    path = search_path if search_path is not None else os.getcwd()
    if not sys.path or sys.path[0] != path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise click.UsageError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    found: Any = module
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise click.UsageError(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, name)
    try:
        workflow_definition_of(found)
    except WorkflowNotFoundError:
        raise click.UsageError(f"{target} is not a workflow: decorate it with @workflow") from None
    return found


def run_seed(
    spec: SweepSpec,
    seed: int,
    suppress: frozenset[int] = frozenset(),
    report: ReportRequest | None = None,
) -> SeedOutcome:
    """Simulate one seed of the sweep and check every oracle; always closes the simulation.
    With ``report``, the simulation is traced and its HTML report written, passed or failed.

    The process-wide ``random`` module is seeded with the seed for the duration, so workflow code
    that (wrongly) calls ``random.random()`` fails the same way every time the seed is rerun.
    """
    workflow = load_workflow(spec.target, spec.search_path)
    saved = random.getstate()
    random.seed(seed)
    sim = Simulation(
        seed,
        spec.faults,
        spec.workers,
        suppress=suppress,
        reproduce=spec.reproduce(seed),
        liveness=spec.liveness_bound(),
        trace=report is not None,
    )
    if report is None:  # (a traced seed, one to look at, reruns everything itself)
        sim.fault_free_endings = fault_free_endings(spec, workflow)
    statuses: list[str] = []
    try:
        try:
            statuses = _play(sim, spec, workflow)
            sim.check(same_seed=spec.reruns(seed))
            violations: list[str] = []
        except SimulationFailure as failure:
            violations = failure.violations
        except Exception as exc:  # noqa: BLE001 - reported as this seed's failure
            violations = [f"the simulation raised {type(exc).__name__}: {exc}"]
        outcome = SeedOutcome(
            seed,
            spec.reproduce(seed),
            violations,
            sim.elapsed.total_seconds(),
            statuses,
            sim.faults_injected,
        )
        if report is not None:
            _write_report(sim, spec, report, outcome)
        return outcome
    finally:
        sim.close()
        random.setstate(saved)


def fault_free_endings(spec: SweepSpec, workflow: Any) -> FaultFreeEndings:
    """The fault-free endings the seeds of ``spec``'s sweep share in this process (``workflow``:
    the function its target names; a module imported again gives a new one, and new endings)."""
    key = repr((replace(spec, determinism_every=0, first_seed=0), id(workflow)))
    found = _ENDINGS.get(key)
    if found is None:
        if len(_ENDINGS) >= 16:
            _ENDINGS.clear()
        found = _ENDINGS[key] = FaultFreeEndings()
    return found


def _write_report(
    sim: Simulation, spec: SweepSpec, request: ReportRequest, outcome: SeedOutcome
) -> None:
    notes = []
    if request.expected is not None and request.expected != outcome.violations:
        outcome.report_problem = (
            "the traced rerun of the seed found other violations than the sweep's run of it"
        )
        found = "\n".join(f"- {v}" for v in request.expected) or "(none)"
        notes.append(
            f"This page shows a rerun of seed {outcome.seed} with tracing on, which found other"
            " violations than the sweep's run of it; the simulator is meant to be deterministic,"
            f" so please report this. The sweep found:\n{found}"
        )
    try:
        sim.write_report(
            request.path, violations=outcome.violations, title=spec.target, notes=notes
        )
    except Exception as exc:  # noqa: BLE001 - the sweep reports it; the seed's outcome stands
        outcome.report_problem = f"could not write {request.path}: {type(exc).__name__}: {exc}"
    else:
        outcome.report = request.path


def _play(sim: Simulation, spec: SweepSpec, workflow: Any) -> list[str]:
    """The seed's script, driven from this thread: one ``run_sync`` per action, as
    ``replay_script`` performs it again for the reruns (no event loop of its own, no trip to the
    simulation's thread)."""
    run = sim.run_sync(sim._start(workflow, spec.args, spec.kwargs))
    wait = spec.liveness_bound().total_seconds()  # (a run may sleep for days before it asks)
    for name, payload in spec.answer_hooks.items():
        if sim.run_sync(sim._wait_for_hook(run.index, name, wait)):
            sim.run_sync(sim._resume_hook(run, name, payload))
    sim.run_sync(sim._run_until_idle())
    return sim.run_sync(_statuses(sim))


async def _statuses(sim: Simulation) -> list[str]:
    storage = sim.world.storage.inner
    records = [await storage.get_run(handle.run_id) for handle in sim.runs]
    return [record.status.value for record in records if record is not None]


def _forks() -> bool:
    """Whether ``run_seed_isolated`` runs seeds in forked children here (see there)."""
    return hasattr(os, "fork") and threading.active_count() <= 1


def run_seed_isolated(
    spec: SweepSpec, seed: int, report: ReportRequest | None = None
) -> SeedOutcome:
    """``run_seed`` in a forked child: every seed starts from the process state the sweep had
    before its first seed, so a cache a workflow, a step or the engine filled in one seed cannot
    hide a bug from the next. Where ``fork`` does not exist, or other threads run in this process
    (a simulation driven from a test suite: forking then may copy a lock another thread holds,
    and the child would wait for it forever), the seed runs in this process."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return run_seed(spec, seed, report=report)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the seed, send its outcome as JSON, leave at once
        code = 0
        gc.disable()  # short-lived: a collection would touch (and so copy) the parent's heap
        try:
            os.close(read)
            outcome = run_seed(spec, seed, report=report)
            with os.fdopen(write, "wb") as pipe:
                pipe.write(json.dumps(asdict(outcome)).encode())
        except BaseException:  # noqa: BLE001 - the parent reports a child that said nothing
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        sent = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not sent:
        return SeedOutcome(
            seed, spec.reproduce(seed), [f"the seed's process died (wait status {status})"], 0, []
        )
    fields = json.loads(sent)
    fields["fired"] = [tuple(fault) for fault in fields["fired"]]
    return SeedOutcome(**fields)


def _run_one(
    spec: SweepSpec, seed: int, report: ReportRequest | None, isolate: bool
) -> SeedOutcome:
    if isolate:
        return run_seed_isolated(spec, seed, report)
    return run_seed(spec, seed, report=report)


def run_sweep(
    spec: SweepSpec,
    seeds: Iterable[int],
    jobs: int = 1,
    reports: dict[int, ReportRequest] | None = None,
    isolate: bool = False,
) -> Iterator[SeedOutcome]:
    """Every seed's outcome, as each finishes (in order of completion when ``jobs > 1``). A
    seed in ``reports`` runs traced and writes its report.

    The seeds of a process run one after another in it. What one seed leaves behind (a cache
    that workflow code, a step or the engine filled) is caught by the determinism rerun: a
    sampled seed's rerun starts from the state its first run left, so state that changes what a
    seed does shows as a different log, from the first seed of the sweep on. With ``isolate``
    each seed runs in a child forked from the sweep before its first seed
    (``run_seed_isolated``): nothing reaches one seed from another, at about twice the cost.
    """
    reports = reports or {}
    if jobs <= 1:
        if isolate and _forks():
            warm_up()  # (each forked seed then starts warm: half the cost, see ``warmup``)
        for seed in seeds:
            yield _run_one(spec, seed, reports.get(seed), isolate)
        return
    # spawn, not fork: the simulator runs threads, and spawn behaves the same on every platform.
    context = multiprocessing.get_context("spawn")
    warm = warm_up if isolate else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=warm) as pool:
        futures = [pool.submit(_run_one, spec, seed, reports.get(seed), isolate) for seed in seeds]
        for future in as_completed(futures):
            yield future.result()


__all__ = [
    "ReportRequest",
    "SeedOutcome",
    "SweepSpec",
    "load_workflow",
    "parse_seeds",
    "run_seed",
    "run_seed_isolated",
    "run_sweep",
]
