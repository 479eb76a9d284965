"""``Simulation.check()``: every oracle over a finished simulation, in order.

Per-run oracles first (``oracles``, the execution ledger), then the script run again without
faults (outcomes must not change), with the same seed (the log must be byte-identical), and the
reference model (``reference``). This module reads what the simulation recorded and reruns its
script; it never injects a fault itself and never changes the simulation it checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import orjson

from pyworkflow.core.registry import get_workflow
from pyworkflow.engine.outcome import chain_end
from pyworkflow.model.events import Event, EventType
from pyworkflow.model.schemas import HookStatus, RunStatus, WorkflowRun
from pyworkflow.primitives.deterministic import seeded_draws
from pyworkflow.primitives.hooks import kept_tokens
from pyworkflow.serialization import deserialize_args, loads
from pyworkflow_testing import oracles, schedule_oracles
from pyworkflow_testing.behind import CancelAtProgress, progress_at_request, resolutions
from pyworkflow_testing.collector import fewer_collections
from pyworkflow_testing.fate import scripted_action
from pyworkflow_testing.faults import Faults
from pyworkflow_testing.identity import identity_reads, watched
from pyworkflow_testing.reference import ReferenceCall, ReferenceOutcome, drive_references
from pyworkflow_testing.world import World

if TYPE_CHECKING:
    from pyworkflow_testing.simulation import SimRun, _Action

T = TypeVar("T")


class SimulationFailure(AssertionError):
    """An oracle failed. Carries the seed, one command that reproduces it, and what differed."""

    def __init__(self, seed: int, reproduce: str, diff: str, violations: list[str]) -> None:
        self.seed = seed
        self.reproduce_command = reproduce
        self.diff = diff
        self.violations = violations
        super().__init__(f"simulation seed {seed} failed:\n{diff}\nreproduce with:\n  {reproduce}")


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Learned(Generic[K, V]):
    """What a sweep learned, per key, from the seeds that computed a value afresh, for the seeds
    outside its sample to reuse (``FaultFreeEndings``, ``ReferenceModels``).

    A key whose value took something from the seed (``from_seed``) is never reused; a fresh
    value that differs from the learned one stops all reuse (``trusted``: every seed computes
    afresh from then on).
    """

    MAX_KEYS = 256

    def __init__(self) -> None:
        self.learned: dict[K, V] = {}
        self.from_seed: set[K] = set()  # keys whose values took something from the seed
        self.trusted = True
        self.reused = 0  # values taken instead of computed
        self.fresh = 0  # values computed and learned from

    def known(self, key: K) -> V | None:
        return self.learned.get(key) if self.trusted else None

    def learn(self, key: K, value: V, from_seed: bool) -> None:
        """What a seed of ``key`` computed afresh; ``from_seed``: it took values from the seed
        (``random``, a run's seeded stream, a run id, a hook token, other runs)."""
        self.fresh += 1
        known = self.learned.get(key)
        if known is not None and self._differ(known, value):
            self.trusted = False  # the seed matters to them: no more reuse
            self.learned.clear()
        elif from_seed or key in self.from_seed:
            self.from_seed.add(key)
            self.learned.pop(key, None)
        elif self.trusted and len(self.learned) < self.MAX_KEYS:
            self.learned[key] = value

    def _differ(self, known: V, fresh: V) -> bool:
        return known != fresh


class ReferenceModels(Learned[tuple[Any, ...], ReferenceOutcome]):
    """Reference models a sweep's seeds ran, to spare most seeds running them again
    (``Checks._compare_with_reference``).

    A model (``reference.run_reference``) runs the workflow function alone: what it does follows
    from the function, its arguments, when the run started and when its hooks were answered with
    what (the key), and from values taken from the seed: ``random`` (seeded with the seed), the
    run's seeded stream (``pyworkflow.random()``, ``uuid4()``), its run id (read by user code:
    ``identity``), a hook token (made of the run id: a model that hands one to ``on_created``
    is never shared) and other runs' ids (children). A model that took none of these is the
    model of every run of its key, of any seed: a seed outside the sweep's sample takes it
    instead of running its own.
    Seeds in the sample run every model afresh, and one that differs from what was learned stops
    all reuse. Simulations with mocked steps (mocks may count their calls) neither learn nor
    reuse.
    """

    MAX_KEYS = 1024

    @property
    def models(self) -> dict[tuple[Any, ...], ReferenceOutcome]:
        return self.learned

    def _differ(self, known: ReferenceOutcome, fresh: ReferenceOutcome) -> bool:
        # (``repr`` too: ``==`` takes 1 for 1.0 and True, whose messages differ.)
        return known != fresh or repr(known) != repr(fresh)


class FaultFreeEndings(Learned[str, list[tuple[str, str | None]]]):
    """What a sweep learned of its script's endings without faults, to spare most seeds the
    fault-free rerun (``Checks._compare_with_fault_free``).

    Without faults, a seed decides little: where steps run, whether children run in their
    parent's activation, joint commits (the key, with the script), and values it hands to the
    code: the run ids and hook tokens it draws, ``random`` (seeded with the seed), and what
    ``pyworkflow.random()`` and ``uuid4()`` draw from a stream seeded by the run id. A fault-free
    rerun whose code drew nothing from ``random`` or a run's stream, read no run id in a step
    (``identity.watched``), kept no hook token (``primitives.hooks.kept_tokens``) and
    started no other run (children, chains: their ids come from the seed) took no decision on
    such a value, so every seed of its key ends alike without faults (a hook token that reaches
    an ending is unique to its seed: that ending matches no other seed's, and the seed reruns).
    A seed outside the sweep's sample then compares its endings with those, and reruns itself
    without faults only when they differ; a difference is only ever reported from the seed's
    own rerun. A key whose rerun drew such values is never reused; a rerun that contradicts
    what was learned stops all reuse (every seed reruns from then on).
    """

    MAX_KEYS = 256  # (a script per key: a sweep has a handful)

    def __init__(self) -> None:
        super().__init__()
        # The reference models the sweep's seeds ran, shared by the same rule.
        self.references = ReferenceModels()

    @property
    def endings(self) -> dict[str, list[tuple[str, str | None]]]:
        return self.learned

    @property
    def reruns(self) -> int:
        """Fault-free reruns learned from."""
        return self.fresh


def _ids_taken() -> tuple[int, int]:
    """Counters of values made from run ids that code took, in this process: draws from runs'
    seeded streams, and reads of a run id by user code where watched (``identity``)."""
    return seeded_draws(), identity_reads()


class Checks:
    """The checking part of ``Simulation`` (a mixin: the simulation provides the attributes)."""

    seed: int
    faults: Faults
    workers: int
    dispatch_steps: bool
    max_faults: int | None
    liveness: timedelta
    suppress: frozenset[int]
    mocks: dict[str, Any]
    script: list[_Action]
    runs: list[SimRun]
    timed_out: bool
    epoch: datetime  # where virtual time begins
    schedule_history: dict[str, schedule_oracles.History]  # what the script did to schedules
    world: World
    check_seconds: dict[str, float]
    last_violations: list[str] | None  # what the last check() found (empty: it passed)
    _checked_at: tuple[int, bool] | None  # (len(script), with the same-seed rerun) last passed
    # A sweep's endings without faults (``FaultFreeEndings``); None: this seed reruns itself.
    fault_free_endings: FaultFreeEndings | None
    # Set on a watched rerun: whether its code drew from ``random`` or a run's seeded stream, or
    # read a run id in a step.
    drew_from_seed: bool = False
    _executor: ThreadPoolExecutor

    if TYPE_CHECKING:

        def run_sync(self, coro: Coroutine[Any, Any, T]) -> T: ...

        async def _call(self, coro: Coroutine[Any, Any, T]) -> T: ...

        def replay_script(self, script: list[_Action]) -> None: ...

        def reproduce_command(self) -> str: ...

        def close(self) -> None: ...

        def __init__(
            self,
            seed: int = 0,
            faults: Faults | str | None = None,
            workers: int = 1,
            *,
            dispatch_steps: bool | None = None,
            max_faults: int | None = 10,
            liveness: timedelta = ...,
            suppress: frozenset[int] | set[int] = frozenset(),
            reproduce: str | None = None,
            start: datetime | None = None,
            trace: bool = False,
        ) -> None: ...

    def log_hash(self) -> str:
        """A hash of every run's log (types, data, timestamps): equal seeds give equal hashes."""
        return self.run_sync(self._log_hash())

    async def _log_hash(self) -> str:
        digest = hashlib.sha256()
        for _, record in await self._every_run():
            events = await self.world.storage.inner.get_events(record.run_id)
            # Event data is plain JSON (the engine writes it): orjson, keys sorted. Event ids
            # derive from the run id and the sequence, which are in.
            log = [
                (event.sequence, event.type.value, event.epoch_seconds(), event.data)
                for event in events
            ]
            digest.update(orjson.dumps([record.run_id, log], option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()

    async def violations(self) -> list[str]:
        """What the oracles found wrong with this simulation so far (empty: all good)."""
        return await self._call(self._violations())

    async def _violations(self) -> list[str]:
        found = list(
            dict.fromkeys(f"engine error: {type(e).__name__}: {e}" for e in self.world.errors)
        )
        found += self.world.storage.early_claims[:3]
        if self.timed_out:
            found.append(
                f"liveness: {self.world.stalled}"
                if self.world.stalled
                else f"liveness: runs still going after {self.liveness} of virtual time"
            )
        storage = self.world.storage.inner
        records: dict[str, WorkflowRun] = {}
        logs: dict[str, list[Event]] = {}
        for prefix, record in await self._every_run():
            run_id = record.run_id
            events = await storage.get_events(run_id)
            records[run_id], logs[run_id] = record, events
            hooks = await storage.list_hooks(run_id)
            pending = sum(hook.status is HookStatus.PENDING for hook in hooks)
            problems = oracles.well_formed(record, events)
            problems += self.world.ledger.violations(run_id, events, hooks)
            problems += await oracles.replays_the_same(record.workflow_name, events)
            problems += oracles.finished(record, pending)
            found += [f"{prefix}: {problem}" for problem in problems]
        found += oracles.family(records, logs)
        found += await self._schedule_violations(records)
        return found

    async def _schedule_violations(self, records: dict[str, WorkflowRun]) -> list[str]:
        engine = self.world.any_engine
        found = await engine.list_schedules(limit=1 << 62)
        if not found:
            return []
        ends = {run_id: oracles.chain_end_of(run, records) for run_id, run in records.items()}
        return schedule_oracles.schedules(
            found, records, ends, self.schedule_history, self.world.schedules_served_until
        )

    async def _every_run(self) -> list[tuple[str, WorkflowRun]]:
        """Every stored run with how reports name it: the script's runs by index first, then the
        runs the engine made (children, the next runs of chains) by id."""
        storage = self.world.storage.inner
        named: list[tuple[str, WorkflowRun]] = []
        seen: set[str] = set()
        for run in self.runs:
            record = await storage.get_run(run.run_id)
            assert record is not None
            named.append((f"run {run.index} ({run.run_id})", record))
            seen.add(run.run_id)
        others: list[WorkflowRun] = []
        cursor: str | None = None
        while True:
            page, cursor = await storage.list_runs(limit=500, cursor=cursor)
            others += [record for record in page if record.run_id not in seen]
            if cursor is None:
                break
        for record in sorted(others, key=lambda r: r.run_id):
            kind = "child" if record.continued_from_run_id is None else "continued run"
            named.append((f"{kind} {record.run_id}", record))
        return named

    def _compare_with_reference(self, reuse: bool = False) -> list[str]:
        """Each run against its workflow function run with no engine (``run_reference``): hooks
        get the payloads the run received, when it received them. The models run from this
        thread, outside the simulation's loop (``drive_references``). With ``reuse`` (a seed the
        sweep does not sample), a model of the sweep's ``ReferenceModels`` stands in for one of
        the same key."""
        # (A model compared with nothing is not run: one of a poll loop cancelled from outside
        # would run to its time limit, seconds for nothing.)
        checked = [
            c for c in self.run_sync(self._reference_inputs()) if not oracles.unmodelled(c[2])
        ]
        memo = self.fault_free_endings.references if self.fault_free_endings else None
        each = None
        if memo is not None and not self.mocks:
            keys = [_reference_key(call, events) for _, _, events, call in checked]
            each = self._models_of(memo, keys, reuse)
        saved = random.getstate()
        random.seed(self.seed)  # as the reruns do: user code drawing from ``random`` starts alike
        try:
            models = drive_references([call for *_, call in checked], each)
        finally:
            random.setstate(saved)
        faulted = bool(self.world.chooser.fired)
        found = []
        for (run, record, events, _), model in zip(checked, models, strict=True):
            problems = oracles.agrees_with_reference(record, events, model, faults=faulted)
            found += [
                f"run {run.index} ({run.run_id}): against the reference model: {problem}"
                for problem in problems
            ]
        return found

    def _models_of(
        self, memo: ReferenceModels, keys: list[tuple[Any, ...] | None], reuse: bool
    ) -> Callable[[int, Callable[[], ReferenceOutcome]], ReferenceOutcome]:
        """How ``drive_references`` gets each model: the learned one (``reuse``), else run and
        watched for values taken from the seed, then learned."""

        def each(index: int, run: Callable[[], ReferenceOutcome]) -> ReferenceOutcome:
            key = keys[index]
            if key is None:
                return run()
            known = memo.known(key) if reuse else None
            if known is not None:
                memo.reused += 1
                return known
            seeded, taken = random.getstate(), _ids_taken()
            with watched():
                model = run()
            from_seed = model.other_runs or _ids_taken() != taken or random.getstate() != seeded
            memo.learn(key, model, from_seed)
            return model

        return each

    async def _reference_inputs(
        self,
    ) -> list[tuple[SimRun, WorkflowRun, list[Event], ReferenceCall]]:
        storage = self.world.storage.inner
        checked = []
        for run in self.runs:
            record = await storage.get_run(run.run_id)
            events = await storage.get_events(run.run_id)
            if record is None or not events or events[0].type is not EventType.WORKFLOW_STARTED:
                continue
            checked.append((run, record, events, self._reference_call(record, events)))
        return checked

    def _reference_call(self, record: WorkflowRun, events: list[Event]) -> ReferenceCall:
        started = events[0]
        args, kwargs = deserialize_args(started.data["args"], started.data["kwargs"])
        # A payload arrives in the model as long after its hook was made as it did in the run:
        # a run whose clock a late timer moved on (faults) made the hook later than the model
        # does, and its sender answered that hook, not the model's.
        received = {
            int(command_id.rpartition(":")[2]): (delay, loads(payload))
            for command_id, delay, payload in _hook_answers(events)
        }
        assert started.timestamp is not None
        return ReferenceCall(
            get_workflow(record.workflow_name).func,
            args,
            kwargs,
            record.run_id,
            started.timestamp,
            self.world.run_body,
            lambda position, _name: received.get(position),
        )

    def check(self, same_seed: bool = True) -> None:
        """Every oracle; raises ``SimulationFailure`` naming the seed and how to reproduce it.

        Besides the per-run oracles this runs the same script twice more: without faults (each
        finished run's result must be the same) and with the same seed (same log hash; skipped
        with ``same_seed=False``: sweeps rerun a sample of their seeds, determinism being a
        property of the code, not of each seed); then it runs each workflow function once with
        no engine at all (``run_reference``) and compares.
        """
        last = self._checked_at
        if last is not None and last[0] == len(self.script) and (last[1] or not same_seed):
            return  # nothing happened since the last check, which passed (and covered this)
        with fewer_collections():
            self._check(same_seed)

    def _check(self, same_seed: bool) -> None:
        timings = self.check_seconds = {}
        started = time.perf_counter()
        found = self.run_sync(self._violations())
        timings["per_run"] = time.perf_counter() - started
        if self.faults.enabled and not found:
            started = time.perf_counter()
            found += self._compare_with_fault_free(reuse=not same_seed)
            timings["fault_free_rerun"] = time.perf_counter() - started
        if not found and same_seed:
            started = time.perf_counter()
            found += self._compare_with_same_seed()
            timings["same_seed_rerun"] = time.perf_counter() - started
        if not found:  # last: a more specific oracle names most of what it would find
            started = time.perf_counter()
            found += self._compare_with_reference(reuse=not same_seed)
            timings["reference"] = time.perf_counter() - started
        self.last_violations = list(found)
        if found:
            raise SimulationFailure(
                self.seed, self.reproduce_command(), "\n".join(f"- {v}" for v in found), found
            )
        self._checked_at = (len(self.script), same_seed)

    def _outcomes(self) -> list[tuple[str, str | None]]:
        async def collect() -> list[tuple[str, str | None]]:
            out = []
            storage = self.world.storage.inner
            for run in self.runs:
                record = await storage.get_run(run.run_id)
                assert record is not None
                record = await chain_end(storage, record)  # a chain ends at its last run
                out.append((record.status.value, record.result or record.error))
            return out

        return self.run_sync(collect())

    def _rerun(
        self,
        faults: Faults,
        watch: bool = False,
        prepare: Callable[[Self], None] | None = None,
    ) -> Self:
        """The script again on a new simulation of this seed with ``faults``. ``watch``: note
        whether its code took values from the seed (``drew_from_seed``: ``FaultFreeEndings``).
        ``prepare`` is given the new simulation before the script begins."""
        twin = type(self)(
            self.seed,
            faults,
            self.workers,
            dispatch_steps=self.dispatch_steps,
            max_faults=self.max_faults,
            liveness=self.liveness,
            suppress=self.suppress,
            start=self.epoch,
        )
        twin.mocks.update(self.mocks)
        if prepare is not None:
            prepare(twin)
        # User code that draws from ``random`` starts where the CLI and the pytest plugin start
        # it: seeded with the seed. The caller's random state is put back afterwards.
        saved = random.getstate()
        random.seed(self.seed)
        seeded, taken = random.getstate(), (_ids_taken(), kept_tokens())
        try:
            with watched() if watch else contextlib.nullcontext():
                twin.replay_script(self.script)
            if watch:
                twin.drew_from_seed = (
                    _ids_taken(),
                    kept_tokens(),
                ) != taken or random.getstate() != seeded
        finally:
            random.setstate(saved)
        return twin

    def _compare_with_fault_free(self, reuse: bool = False) -> list[str]:
        """Each finished run must end as it does without faults. With ``reuse`` (a seed the
        sweep does not sample) and a sweep's ``fault_free_endings``, endings that match what a
        fault-free rerun of another seed reached pass without a rerun of this one."""
        actual = self._outcomes()
        excused = self.run_sync(self._budget_spent_on_faults())
        memo = self.fault_free_endings
        key = self._fault_free_key() if memo is not None and not self.mocks else None
        if memo is not None and key is not None and reuse:
            known = memo.known(key)
            if known is not None and not _endings_differ(known, actual, excused):
                memo.reused += 1
                return []
        twin = self._rerun(Faults.none(), watch=memo is not None and key is not None)
        try:
            expected = twin._outcomes()
            if memo is not None and key is not None:
                # (Runs the script did not start, children or chains: ids drawn from the seed.)
                others = len(twin.run_sync(twin._every_run())) > len(twin.runs)
                memo.learn(key, expected, from_seed=twin.drew_from_seed or others)
            differ = [
                (i, (e, a))
                for i, (e, a) in _endings_differ(expected, actual, excused)
                if not self._cancelled_behind(twin, i, a)
            ]
        finally:
            twin.close()
        return [f"run {i}: with faults it ended {a}, without faults {e}" for i, (e, a) in differ]

    def _cancelled_behind(self, twin: Self, index: int, ending: tuple[str, str | None]) -> bool:
        """Whether run ``index`` ends differently from ``twin``'s (run without faults) only
        because the script's cancellation caught it behind, where the fault-free run was
        earlier (``pyworkflow_testing.behind``): cancelled at the same progress, a run without
        faults ends as it does."""
        action = next((a for a in self.script if a.kind == "cancel" and a.args[0] == index), None)
        run_id = self.runs[index].run_id
        if action is None or twin.runs[index].run_id != run_id:
            return False
        ours = self.run_sync(self.world.storage.inner.get_events(run_id))
        theirs = twin.run_sync(twin.world.storage.inner.get_events(run_id))
        mine = progress_at_request(ours)
        if mine is None:
            return False
        at_theirs = progress_at_request(theirs)
        if at_theirs is not None:
            behind = mine[0] < at_theirs[0]
        else:  # (without faults it ended before the request: it had done everything, and ended)
            behind = mine[0] <= frozenset(c for c, _ in resolutions(theirs))
        if not behind:
            return False  # (the difference is the faults')
        reason = action.args[1]
        made: list[Self] = []

        async def request() -> None:
            with scripted_action():
                await made[0].world.any_engine.request_cancellation(run_id, reason)

        watch = CancelAtProgress(run_id, mine[0], request)

        def prepare(sim: Self) -> None:
            made.append(sim)
            sim.world.storage.after_write = watch.after
            sim.world.storage.before_write = watch.before

        try:
            moved = self._rerun(Faults.none(), prepare=prepare)
        except Exception:  # (the script went otherwise there: not comparable)
            for sim in made:
                sim.close()
            return False
        try:
            return watch.fired and moved._outcomes()[index] == ending
        finally:
            moved.close()

    def _fault_free_key(self) -> str | None:
        """What, besides the code and values drawn from the seed, a fault-free rerun of this
        simulation depends on (None: no key, no reuse)."""
        world = self.world
        settings = (
            self.workers,
            self.dispatch_steps,
            world.inline_children,
            world.storage.joint_commits,
            self.epoch.isoformat(),
            self.liveness.total_seconds(),
        )
        try:
            return repr((settings, self.script))
        except Exception:  # noqa: BLE001 - a payload whose repr fails: this seed reruns
            return None

    async def _budget_spent_on_faults(self) -> set[int]:
        """Runs the engine failed for losing their worker more than ``max_recovery_attempts``
        times, where every loss it counted can be laid on a fault that struck the run: the
        ending production would reach too, not a difference the faults should not make."""
        ledger, storage = self.world.ledger, self.world.storage.inner
        children: dict[str, list[WorkflowRun]] = {}
        for _, other in await self._every_run():
            if other.parent_run_id is not None:
                children.setdefault(other.parent_run_id, []).append(other)

        def spent_on_faults(record: WorkflowRun) -> bool:
            return (
                record.status is RunStatus.FAILED
                and record.recovery_attempts > record.max_recovery_attempts
                and ledger.faults[record.run_id] + ledger.global_faults >= record.recovery_attempts
            )

        excused = set()
        for run in self.runs:
            record = await storage.get_run(run.run_id)
            if record is None or record.status is not RunStatus.FAILED:
                continue
            # The run itself, or a child its failure came from (a ChildWorkflowFailedError).
            family, found = [record], False
            while family and not found:
                member = family.pop()
                found = spent_on_faults(member)
                family += children.get(member.run_id, [])
            if found:
                excused.add(run.index)
        return excused

    def _compare_with_same_seed(self) -> list[str]:
        twin = self._rerun(self.faults)
        try:
            if twin.log_hash() == self.log_hash():
                return []
            where = self._first_difference(twin)
            return [
                "not deterministic: the same seed gave a different log (workflow code reading"
                f" the real clock or randomness?): {where}"
            ]
        finally:
            twin.close()

    def _first_difference(self, twin: Self) -> str:
        def shape(sim: Checks) -> list[list[str]]:
            async def collect() -> list[list[str]]:
                logs = []
                for run in sim.runs:
                    events = await sim.world.storage.inner.get_events(run.run_id)
                    logs.append([f"{e.type.value} {e.command_id or ''}".strip() for e in events])
                return logs

            return sim.run_sync(collect())

        mine, theirs = shape(self), shape(twin)
        for index, (first, second) in enumerate(zip(mine, theirs, strict=False)):
            for position, (a, b) in enumerate(zip(first, second, strict=False), start=1):
                if a != b:
                    return (
                        f"run {index}, event {position}: expected: {a!r} (first run),"
                        f" actual: {b!r} (same seed again)"
                    )
            if len(first) != len(second):
                return f"run {index}: {len(first)} events first, {len(second)} the second time"
        return "the logs differ in their data or timestamps"


def _endings_differ(
    expected: list[tuple[str, str | None]],
    actual: list[tuple[str, str | None]],
    excused: set[int],
) -> list[tuple[int, tuple[tuple[str, str | None], tuple[str, str | None]]]]:
    """The runs whose ending with faults (finished, not excused) is not the one without."""
    return [
        (i, (e, a))
        for i, (e, a) in enumerate(zip(expected, actual, strict=True))
        if e != a and RunStatus(a[0]).is_terminal and i not in excused
    ]


def _reference_key(call: ReferenceCall, events: list[Event]) -> tuple[Any, ...] | None:
    """What a run's reference model follows from besides values taken from the seed: the
    workflow function, its arguments as recorded, when it started and its hooks' answers (how
    long after the hook each came, and the payload as recorded). None: it cannot be a key."""
    started = events[0]
    answers = tuple(sorted(_hook_answers(events), key=repr))
    key = (
        call.workflow_func,
        started.data["args"],
        started.data["kwargs"],
        call.started_at,
        call.max_time,
        call.max_iterations,
        answers,
    )
    try:
        hash(key)
    except TypeError:  # (data a newer engine records in another shape)
        return None
    return key


def _hook_answers(events: list[Event]) -> list[tuple[str, timedelta, str]]:
    """Each payload a run's hooks received: (command id, how long after the hook was made it
    came, the payload as recorded)."""
    made = {
        e.data["command_id"]: e.timestamp
        for e in events
        if e.type is EventType.HOOK_CREATED and e.timestamp is not None
    }
    return [
        (
            str(e.data["command_id"]),
            e.timestamp - made.get(e.data["command_id"], e.timestamp),
            e.data["payload"],
        )
        for e in events
        if e.type is EventType.HOOK_RECEIVED and e.timestamp is not None
    ]


__all__ = ["Checks", "FaultFreeEndings", "Learned", "ReferenceModels", "SimulationFailure"]
