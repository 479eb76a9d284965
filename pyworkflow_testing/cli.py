"""``pyworkflow simulate``: sweep a workflow over many seeds of the simulator from the shell.

Each seed runs the workflow once in a fresh ``Simulation`` (faults, workers and hook answers as
asked), runs it to idle and checks every oracle; a failing seed is reported with the one command
that reproduces it alone. ``--history FILE`` instead replays a stored event log against the
current code. ``--report PATH`` draws failing seeds as HTML pages (``report.py``): the sweep runs
untraced, then each failing seed (at most ``MAX_REPORTS``) runs again with a trace and writes its
page; a single seed runs traced at once and gets its page whether it passes or not. The command
is registered on the ``pyworkflow`` group by ``pyworkflow.cli``.

Usage errors exit with code 2 and a one-line message, never a traceback; failing seeds exit 1.
This module never touches real storage, brokers or the wall clock of the workflows it runs.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from pyworkflow.core.registry import workflow_definition_of
from pyworkflow.engine.replay import replay_history
from pyworkflow.model.duration import format_duration
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import NonDeterminismError
from pyworkflow.serialization import pickle_allowed, set_allow_pickle
from pyworkflow.utils.duration import parse_duration
from pyworkflow_testing.faults import Faults
from pyworkflow_testing.report import ReportUnavailable, require_plotly
from pyworkflow_testing.shrink import Tape
from pyworkflow_testing.shrink import shrink as shrink_faults
from pyworkflow_testing.sweep import (
    DEFAULT_WORKERS,
    ReportRequest,
    SeedOutcome,
    SweepSpec,
    load_workflow,
    parse_seeds,
    run_seed,
    run_seed_isolated,
    run_sweep,
)

DEFAULT_SEEDS = range(100)
PROGRESS_MIN_SEEDS = 20  # shorter sweeps print no progress line
SHOWN_FAILURES = 3  # failing seeds described in full; the rest are only listed
LISTED_FAILURES = 20  # further failing seeds listed by number
SHOWN_VIOLATIONS = 3  # violations shown per failing seed
MAX_REPORTS = 20  # failing seeds of one sweep rerun with a trace for --report


# -- reporting -------------------------------------------------------------------------------


class _Progress:
    """A sweep's progress on stderr: on a terminal a ``rich`` progress bar (seeds done, failures
    so far, seeds per second, time left); otherwise a plain line every 10% of the seeds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = total >= PROGRESS_MIN_SEEDS
        self.in_place = sys.stderr.isatty()
        self.done = self.failed = 0
        self._last_tenth = 0
        self._started = time.monotonic()
        self._bar: Progress | None = None
        if self.enabled and self.in_place:
            self._bar = Progress(
                TextColumn("[bold]simulating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("seeds, [red]{task.fields[failed]} failed"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task("sweep", total=total, failed=0, rate="")
            self._bar.start()

    def _rate(self) -> float:
        return self.done / max(time.monotonic() - self._started, 1e-9)

    def advance(self, outcome: SeedOutcome) -> None:
        self.done += 1
        self.failed += not outcome.passed
        if not self.enabled:
            return
        rate = self._rate()
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=self.failed, rate=f"{rate:.1f} seeds/s")
            return
        tenth = self.done * 10 // self.total
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            click.echo(
                f"simulated {self.done}/{self.total} seeds, {self.failed} failed,"
                f" {rate:.1f} seeds/s, about {_duration(round(left))} left",
                err=True,
            )

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _duration(seconds: float) -> str:
    return format_duration(seconds, digits=3)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if i else line for i, line in enumerate(text.splitlines()))


def _report_text(spec: SweepSpec, outcomes: list[SeedOutcome], wall: float) -> None:
    failed = [o for o in outcomes if not o.passed]
    virtual = sum(o.virtual_seconds for o in outcomes)
    ends: dict[str, int] = {}
    for outcome in outcomes:
        for status in outcome.statuses:
            ends[status] = ends.get(status, 0) + 1
    click.echo(
        f"{spec.target}: {_count(len(outcomes), 'seed')}, faults {spec.faults},"
        f" workers {spec.workers}"
    )
    for outcome in failed[:SHOWN_FAILURES]:
        click.echo(f"\nseed {outcome.seed} FAILED:")
        counted = Counter(outcome.violations)  # a crashed worker may hit the same problem again
        for violation, times in list(counted.items())[:SHOWN_VIOLATIONS]:
            again = f"[{times} times] " if times > 1 else ""
            click.echo(f"  - {again}{_indent(violation, '    ')}")
        hidden = len(counted) - SHOWN_VIOLATIONS
        if hidden > 0:
            click.echo(f"  ... and {hidden} more")
        click.echo(f"  reproduce: {outcome.reproduce}")
    if len(failed) > SHOWN_FAILURES:
        rest = [o.seed for o in failed[SHOWN_FAILURES:]]
        listed = ", ".join(map(str, rest[:LISTED_FAILURES]))
        more = f" and {len(rest) - LISTED_FAILURES} more" if len(rest) > LISTED_FAILURES else ""
        click.echo(f"\nalso failing: seeds {listed}{more}")
    if failed:
        click.echo("")
    runs_ended = ", ".join(f"{n} {status}" for status, n in sorted(ends.items()))
    click.echo(
        f"{len(outcomes) - len(failed)} passed, {len(failed)} failed in"
        f" {wall:.{2 if wall < 10 else 1}f}s"
        f" ({_duration(virtual)} of virtual time; runs ended: {runs_ended or 'none'})"
    )


def _report_json(
    spec: SweepSpec,
    outcomes: list[SeedOutcome],
    wall: float,
    pages: list[SeedOutcome] | None = None,
) -> None:
    report: dict[str, Any] = {
        "workflow": spec.target,
        "seeds": len(outcomes),
        "passed": sum(o.passed for o in outcomes),
        "failed": [
            {"seed": o.seed, "reproduce": o.reproduce, "violations": o.violations}
            for o in outcomes
            if not o.passed
        ],
        "wall_seconds": round(wall, 3),
        "virtual_seconds": round(sum(o.virtual_seconds for o in outcomes), 6),
    }
    if pages is not None:
        report["reports"] = [
            {"seed": o.seed, "path": o.report, "problem": o.report_problem} for o in pages
        ]
    click.echo(json.dumps(report))


# -- --report: HTML pages of seeds ------------------------------------------------------------


class _Pages:
    """Where ``--report PATH`` writes: with one seed, the file PATH (or ``PATH/seed-N.html`` when
    PATH is a directory or ends with a slash); with several, ``PATH/seed-N.html`` per failing
    seed, PATH a directory (created)."""

    def __init__(self, text: str, seeds: range) -> None:
        path = Path(text)
        self.single = len(seeds) == 1
        if self.single:
            if path.is_dir() or text.endswith(("/", os.sep)):
                path = path / f"seed-{seeds.start}.html"
            self.shown = {seeds.start: str(path)}
            self.directory = None
            return
        if path.exists() and not path.is_dir():
            raise click.UsageError(
                f"--report {text}: with several seeds PATH is a directory (one seed-N.html per"
                " failing seed), and this is a file"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.UsageError(f"--report {text}: cannot create the directory: {exc}") from None
        self.directory = path
        self.shown = {}

    def requests(self, outcomes: list[SeedOutcome] | None) -> dict[int, ReportRequest]:
        """With one seed (``outcomes`` None: before it runs) its request; else a request for
        each of the first ``MAX_REPORTS`` failing ``outcomes``, to rerun them traced."""
        if outcomes is None:
            return {seed: ReportRequest(str(Path(p).absolute())) for seed, p in self.shown.items()}
        assert self.directory is not None
        chosen = [o for o in outcomes if not o.passed][:MAX_REPORTS]
        for outcome in chosen:
            self.shown[outcome.seed] = str(self.directory / f"seed-{outcome.seed}.html")
        return {
            o.seed: ReportRequest(str(Path(self.shown[o.seed]).absolute()), o.violations)
            for o in chosen
        }

    def rerun(
        self, spec: SweepSpec, outcomes: list[SeedOutcome], jobs: int, isolate: bool
    ) -> list[SeedOutcome]:
        """The failing seeds of a sweep of several seeds, run again traced, each writing its
        page (a single seed already ran traced: its outcome is its page's)."""
        if self.single:
            return outcomes
        requests = self.requests(outcomes)
        jobs = max(1, min(jobs, len(requests)))
        reruns = list(run_sweep(spec, sorted(requests), jobs, requests, isolate))
        return sorted(reruns, key=lambda o: o.seed)

    def echo(self, pages: list[SeedOutcome], failing: int) -> None:
        if not self.single and not failing:
            click.echo(f"no failing seed: no report written to {self.directory}")
        for outcome in pages:
            if outcome.report is not None:
                click.echo(f"report for seed {outcome.seed}: {self.shown[outcome.seed]}")
            if outcome.report_problem is not None:
                click.echo(f"  warning: seed {outcome.seed}: {outcome.report_problem}")
        if failing > len(pages) and not self.single:
            click.echo(
                f"reports for the first {len(pages)} of {failing} failing seeds; for another,"
                " run its reproduce line with --report FILE"
            )


# -- parsing the command line ----------------------------------------------------------------


def _json_option(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"{option} is not valid JSON: {exc}") from None
    except RecursionError:
        raise click.UsageError(f"{option} is nested too deeply") from None


def _call_arguments(text: str | None, workflow: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    value = _json_option(text, "--args")
    if value is None:
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
    elif isinstance(value, list):
        args, kwargs = tuple(value), {}
    elif isinstance(value, dict):
        args, kwargs = (), value
    else:
        raise click.UsageError("--args must be a JSON list (positional) or object (keywords)")
    func = workflow_definition_of(workflow).func
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise click.UsageError(f"--args do not fit {func.__name__}: {exc}") from None
    return args, kwargs


def _seed_range(seed: int | None, seeds: str | None) -> range:
    if seed is not None and seeds is not None:
        raise click.UsageError("give --seed or --seeds, not both")
    if seed is not None:
        if seed < 0:
            raise click.UsageError(f"--seed must be 0 or more, got {seed}")
        return range(seed, seed + 1)
    if seeds is None:
        return DEFAULT_SEEDS
    try:
        return parse_seeds(seeds)
    except ValueError as exc:
        raise click.UsageError(f"--seeds: {exc}") from None


def _jobs(text: str) -> int:
    """``--jobs``: a whole number of processes, or ``auto`` (one per core this process may use)."""
    if text.strip().lower() == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise click.UsageError(f"--jobs must be a whole number of 1 or more, or auto, got {text!r}")
    return jobs


def _faults_text(text: str) -> str:
    try:
        Faults.parse(text)
    except ValueError as exc:
        raise click.UsageError(f"--faults: {exc}") from None
    return ",".join(part.strip() for part in text.split(","))


def _answers(text: str | None) -> dict[str, Any]:
    value = _json_option(text, "--answer-hooks")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise click.UsageError("--answer-hooks must be a JSON object {hook name: payload}")
    return value


def _replay_file(path: str, workflow: Any, target: str) -> None:
    """``--history``: replay a stored log against the current code; exit 1 on a divergence."""
    try:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if isinstance(raw, dict) and "log" in raw:  # `pyworkflow runs show --json` as a whole
            raw = raw["log"]
        if not isinstance(raw, list):
            raise ValueError("expected a JSON list of events")
        events = sorted((Event.from_dict(item) for item in raw), key=lambda e: e.sequence)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.UsageError(f"cannot read history {path!r}: {exc}") from None
    if not events or events[0].type is not EventType.WORKFLOW_STARTED:
        raise click.UsageError(f"history {path!r} does not start with a workflow.started event")
    try:
        asyncio.run(replay_history(workflow, events))
    except NonDeterminismError as exc:
        click.echo(f"history {path} does not replay against {target}:\n{exc}")
        click.get_current_context().exit(1)
    except Exception as exc:  # noqa: BLE001 - a failed run re-raises its error on replay
        if events[-1].type is not EventType.WORKFLOW_FAILED:
            click.echo(f"history {path} does not replay against {target}: {exc!r}")
            click.get_current_context().exit(1)
    click.echo(f"history {path} ({len(events)} events) replays against {target}: ok")


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("target", metavar="MODULE:WORKFLOW"),
        click.option(
            "--args", "args_text", metavar="JSON", help="A JSON list (positional) or object."
        ),
        click.option("--seed", type=int, default=None, metavar="N", help="Run this one seed."),
        click.option("--seeds", "seeds_text", metavar="A..B|N", help="Seeds [default: 0..99]."),
        click.option(
            "--faults",
            default="all",
            show_default=True,
            help=(
                "all, none, or a comma list of"
                " crash,drop,duplicate,reorder,storage,restart,interleave."
            ),
        ),
        click.option(
            "--workers", type=int, default=DEFAULT_WORKERS, show_default=True, help="Workers."
        ),
        click.option(
            "--jobs",
            "jobs_text",
            default="1",
            show_default=True,
            metavar="N|auto",
            help="Processes to use (auto: one per usable core).",
        ),
        click.option(
            "--isolate",
            is_flag=True,
            help="Run each seed in a fresh forked process (nothing reaches it from other seeds).",
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout."),
        click.option(
            "--answer-hooks",
            "answers_text",
            metavar="JSON",
            help='Answer hooks: {"hook name": payload}.',
        ),
        click.option(
            "--liveness",
            metavar="DURATION",
            help="Virtual time each phase may take before its runs count as stuck [default: 30d].",
        ),
        click.option(
            "--history",
            type=click.Path(exists=True, dir_okay=False),
            help="Replay this event log (a JSON list) against the workflow instead.",
        ),
        click.option(
            "--determinism-every",
            type=click.IntRange(0),
            default=10,
            show_default=True,
            help=(
                "Rerun the first seed and every Nth with the same seed (1: all, 0: none); the"
                " others reuse the fault-free endings other seeds reached when theirs match."
            ),
        ),
        click.option(
            "--allow-pickle",
            is_flag=True,
            help="Let --history unpickle values (runs code from the file: trusted files only).",
        ),
        click.option(
            "--shrink",
            is_flag=True,
            help="Cut the first failing seed's faults to a smaller set that still fails; save it.",
        ),
        click.option(
            "--replay",
            "tape_file",
            type=click.Path(exists=True, dir_okay=False),
            help="Run the simulation a tape (from --shrink) describes, decision for decision.",
        ),
        click.option(
            "--report",
            "report_path",
            metavar="PATH",
            help=(
                "Write an HTML report per failing seed into the directory PATH (seed-N.html; the"
                " first 20); with one seed, to the file PATH, passed or not. Needs the report"
                " extra."
            ),
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _shrink(spec: SweepSpec, outcome: SeedOutcome) -> None:
    """Find fewer faults that still fail ``outcome``'s seed; save the tape, say how to rerun."""
    ordinals = [ordinal for ordinal, _, _ in outcome.fired]

    def fails_with(suppress: frozenset[int]) -> tuple[bool, list[int]]:
        trial = run_seed(spec, outcome.seed, suppress)
        return not trial.passed, [ordinal for ordinal, _, _ in trial.fired]

    suppress = shrink_faults(fails_with, ordinals)
    final = run_seed(spec, outcome.seed, suppress)
    tape = Tape(
        seed=outcome.seed,
        faults=spec.faults,
        workers=spec.workers,
        dispatch_steps=bool(outcome.seed % 2),
        max_faults=10,
        suppress=sorted(suppress),
        fired=final.fired,
        target={
            "workflow": spec.target,
            "args": spec.args_json,
            "answer_hooks": spec.answer_hooks,
            "liveness": spec.liveness,
        },
    )
    path = Path(f"pyworkflow-tape-seed{outcome.seed}.json")
    tape.dump(path)
    kinds = ", ".join(f"{kind} ({detail})" for _, kind, detail in final.fired) or "no faults"
    click.echo(
        f"shrunk seed {outcome.seed} from {len(ordinals)} faults to {len(final.fired)}: {kinds}"
    )
    click.echo(f"  tape saved to {path}; replay it with:")
    click.echo(
        f"  pyworkflow simulate {shlex.quote(spec.target)} --replay {shlex.quote(str(path))}"
    )


def _replay_tape(spec: SweepSpec, tape: Tape, tape_file: str) -> None:
    """``--replay``: run the one seed a tape names, with the faults it suppresses suppressed."""
    replayed = replace(spec, faults=tape.faults, workers=tape.workers)
    outcome = run_seed(replayed, tape.seed, frozenset(tape.suppress))
    kinds = ", ".join(f"{kind} ({detail})" for _, kind, detail in outcome.fired) or "no faults"
    click.echo(f"tape {tape_file}: seed {tape.seed} with {kinds}")
    if outcome.passed:
        click.echo("passed")
        return
    for violation in outcome.violations:
        click.echo(f"- {violation}")
    click.get_current_context().exit(1)


@click.command("simulate")
@_options
def simulate(
    target: str,
    args_text: str | None,
    seed: int | None,
    seeds_text: str | None,
    faults: str,
    workers: int,
    jobs_text: str,
    isolate: bool,
    as_json: bool,
    answers_text: str | None,
    liveness: str | None,
    history: str | None,
    determinism_every: int,
    allow_pickle: bool,
    shrink: bool,
    tape_file: str | None,
    report_path: str | None,
) -> None:
    """Simulate MODULE:WORKFLOW over many seeds with faults, checking every oracle.

    --seeds takes A..B (both included) or N (that one seed). Exit code 0 when every seed
    passes, 1 when some fail (each with a command reproducing it), 2 for bad usage.
    """
    if report_path is not None:
        if history is not None or tape_file is not None:
            raise click.UsageError("--report draws a sweep's seeds: not with --history or --replay")
        try:
            require_plotly()
        except ReportUnavailable as exc:
            raise click.UsageError(f"--report: {exc}") from None
    search_path = os.getcwd()
    workflow = load_workflow(target, search_path)
    tape: Tape | None = None
    if tape_file is not None:
        # The tape says how the seed ran (arguments, hook answers, liveness): what the command
        # line leaves out comes from it, so the printed `--replay` line runs as printed.
        try:
            tape = Tape.load(tape_file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        recorded = tape.target
        if args_text is None and recorded.get("args") is not None:
            args_text = str(recorded["args"])
        if answers_text is None and recorded.get("answer_hooks"):
            answers_text = json.dumps(recorded["answer_hooks"])
        if liveness is None and recorded.get("liveness") is not None:
            liveness = str(recorded["liveness"])
    if history is not None:
        previous = pickle_allowed()
        set_allow_pickle(allow_pickle)  # a file is data: never unpickled unless asked
        try:
            _replay_file(history, workflow, target)
        finally:
            set_allow_pickle(previous)
        return
    args, kwargs = _call_arguments(args_text, workflow)
    if workers < 1:
        raise click.UsageError(f"--workers must be 1 or more, got {workers}")
    jobs = _jobs(jobs_text)
    if liveness is not None:
        try:
            if parse_duration(liveness) <= timedelta(0):
                raise ValueError("it must be longer than zero")
        except ValueError as exc:
            raise click.UsageError(f"--liveness: {exc}") from None
    spec = SweepSpec(
        target=target,
        args=args,
        kwargs=kwargs,
        faults=_faults_text(faults),
        workers=workers,
        answer_hooks=_answers(answers_text),
        args_json=None if args_text is None else json.dumps(json.loads(args_text)),
        search_path=search_path,
        liveness=liveness,
    )
    if tape is not None and tape_file is not None:
        _replay_tape(spec, tape, tape_file)
        return
    seeds = _seed_range(seed, seeds_text)
    spec = replace(spec, determinism_every=determinism_every, first_seed=seeds.start)
    jobs = min(jobs, len(seeds))  # a process per seed at most
    pages = None if report_path is None else _Pages(report_path, seeds)
    # One seed alone runs traced at once; a sweep runs untraced and reruns its failing seeds.
    traced = pages.requests(None) if pages is not None and pages.single else None
    started = time.monotonic()
    progress = _Progress(len(seeds))
    outcomes: list[SeedOutcome] = []
    for outcome in run_sweep(spec, seeds, jobs, traced, isolate):
        outcomes.append(outcome)
        progress.advance(outcome)
    progress.finish()
    outcomes.sort(key=lambda o: o.seed)
    wall = time.monotonic() - started
    failing = [o for o in outcomes if not o.passed]
    if as_json:
        written = None if pages is None else pages.rerun(spec, outcomes, jobs, isolate)
        _report_json(spec, outcomes, wall, written)
    else:
        _report_text(spec, outcomes, wall)
        if pages is not None:
            pages.echo(pages.rerun(spec, outcomes, jobs, isolate), len(failing))
    if failing and shrink:
        _shrink(spec, failing[0])
    if failing:
        click.get_current_context().exit(1)


__all__ = [
    "SeedOutcome",
    "SweepSpec",
    "load_workflow",
    "parse_seeds",
    "run_seed",
    "run_seed_isolated",
    "simulate",
]
