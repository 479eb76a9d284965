"""``pyworkflow simulate``: sweeps, reproduce lines, usage errors and ``--history`` replays.

Most cases go through ``click.testing.CliRunner``; the ones about the installed command (exit
codes, the printed reproduce line run again in a shell-like way) run it as a real subprocess.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from examples.onboarding import onboarding
from pyworkflow.cli import main
from pyworkflow_testing import Simulation
from pyworkflow_testing.cli import _jobs, parse_seeds
from tests.simulation.coin import COIN

ROOT = Path(__file__).resolve().parents[2]
PYWORKFLOW = Path(sys.executable).with_name("pyworkflow")
ONBOARDING = "examples.onboarding:onboarding"


def simulate(*args: str) -> Result:
    return CliRunner().invoke(main, ["simulate", *args])


def run_command(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_onboarding_sweep_as_a_real_command_passes_with_json() -> None:
    done = run_command(
        [str(PYWORKFLOW), "simulate", ONBOARDING, "--seeds", "0..19", "--faults", "all", "--json"],
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["workflow"] == ONBOARDING
    assert (report["seeds"], report["passed"], report["failed"]) == (20, 20, [])
    assert report["virtual_seconds"] > 0 and report["wall_seconds"] > 0
    assert "Traceback" not in done.stderr
    assert "simulated 20/20 seeds, 0 failed" in done.stderr  # progress: a line per 10% off a tty


def test_text_summary_with_answered_hooks_and_arguments() -> None:
    result = simulate(
        ONBOARDING,
        "--seeds",
        "0..4",
        "--args",
        '{"user_id": "ada"}',
        "--answer-hooks",
        '{"activation": {"via": "simulated click"}}',
    )
    assert result.exit_code == 0, result.output
    assert "examples.onboarding:onboarding: 5 seeds, faults all, workers 3" in result.stdout
    assert "5 passed, 0 failed" in result.stdout
    assert "runs ended: 5 completed" in result.stdout


def test_answered_hooks_reach_a_child_of_the_run() -> None:
    # The run sleeps two days, then its child asks: answered (not expired after its hour).
    result = simulate(
        "tests.simulation.test_simulation:parent_of_asker",
        "--seeds",
        "0..9",
        "--answer-hooks",
        '{"approve": "yes"}',
    )
    assert result.exit_code == 0, result.output
    assert "10 passed, 0 failed" in result.stdout
    assert "runs ended: 10 completed" in result.stdout


def test_jobs_give_the_same_outcomes_as_one_process() -> None:
    def outcome(*extra: str) -> dict[str, Any]:
        result = simulate(ONBOARDING, "--seeds", "0..5", "--json", *extra)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        del report["wall_seconds"]
        return report

    assert outcome("--jobs", "2") == outcome()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["examples.onboarding"], "expected MODULE:WORKFLOW, got 'examples.onboarding'"),
        (["no_such_module_here:wf"], "cannot import module 'no_such_module_here'"),
        (["examples.onboarding:nothing"], "module 'examples.onboarding' has no attribute"),
        (["examples.onboarding:create_account"], "is not a workflow"),
        ([ONBOARDING, "--args", "{oops"], "--args is not valid JSON"),
        ([ONBOARDING, "--args", "3"], "--args must be a JSON list (positional) or object"),
        ([ONBOARDING, "--args", '{"nope": 1}'], "--args do not fit onboarding"),
        ([ONBOARDING, "--seeds", "5..2"], "seed range '5..2' is empty"),
        ([ONBOARDING, "--seeds", "x"], "seeds must be A..B or N"),
        ([ONBOARDING, "--seeds", "1.."], "seeds must be A..B or N"),
        ([ONBOARDING, "--seed", "1", "--seeds", "0..3"], "give --seed or --seeds, not both"),
        ([ONBOARDING, "--faults", "crash,boom"], "unknown fault 'boom'"),
        ([ONBOARDING, "--workers", "0"], "--workers must be 1 or more"),
        ([ONBOARDING, "--jobs", "0"], "--jobs must be a whole number of 1 or more, or auto"),
        ([ONBOARDING, "--jobs", "many"], "or auto, got 'many'"),
        ([ONBOARDING, "--answer-hooks", "[1]"], "--answer-hooks must be a JSON object"),
    ],
)
def test_bad_usage_exits_2_with_a_one_line_message(args: list[str], message: str) -> None:
    result = simulate(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # click's usage error, not a crash


def test_jobs_auto_is_one_process_per_usable_core() -> None:
    assert _jobs("auto") == _jobs(" AUTO ") == len(os.sched_getaffinity(0))
    assert _jobs("3") == 3


def test_seed_ranges() -> None:
    assert parse_seeds("0..999") == range(1000)
    assert parse_seeds("7") == range(7, 8)  # N is the one seed N
    assert parse_seeds(" 3..3 ") == range(3, 4)


def test_random_branch_fails_and_its_reproduce_line_fails_again(tmp_path: Path) -> None:
    (tmp_path / "coin_cli.py").write_text(COIN.format(prefix="cli_coin"))
    sweep = run_command(
        [str(PYWORKFLOW), "simulate", "coin_cli:flip", "--seeds", "0..9", "--faults", "none"],
        cwd=tmp_path,
    )
    assert sweep.returncode == 1, sweep.stdout + sweep.stderr
    assert "Traceback" not in sweep.stdout + sweep.stderr
    assert "not deterministic" in sweep.stdout
    lines = [line.strip() for line in sweep.stdout.splitlines()]
    reproduce = next(line for line in lines if line.startswith("reproduce: "))
    command = shlex.split(reproduce.removeprefix("reproduce: "))
    seed = command[command.index("--seed") + 1]
    assert command[:3] == ["pyworkflow", "simulate", "coin_cli:flip"]
    assert f"seed {seed} FAILED:" in sweep.stdout
    again = run_command([str(PYWORKFLOW), *command[1:]], cwd=tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"seed {seed} FAILED:" in again.stdout and "1 failed" in again.stdout


def test_json_report_of_a_failing_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "coin_cli_json.py").write_text(COIN.format(prefix="cli_coin_json"))
    monkeypatch.chdir(tmp_path)
    result = simulate("coin_cli_json:flip", "--seeds", "0..9", "--faults", "none", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["failed"] and report["passed"] + len(report["failed"]) == 10
    first = report["failed"][0]
    assert first["reproduce"] == (
        f"pyworkflow simulate coin_cli_json:flip --seed {first['seed']} --faults none --workers 3"
    )
    assert any("not deterministic" in violation for violation in first["violations"])


@pytest.fixture
async def onboarding_log(tmp_path: Path) -> list[dict[str, Any]]:
    sim = Simulation(seed=0)
    try:
        run = await sim.start(onboarding, user_id="u1")
        await sim.run_until_idle()
        return [event.to_dict() for event in await run.events()]
    finally:
        sim.close()


def test_history_that_replays(tmp_path: Path, onboarding_log: list[dict[str, Any]]) -> None:
    log = tmp_path / "log.json"
    log.write_text(json.dumps(onboarding_log))
    result = simulate("--history", str(log), ONBOARDING)
    assert result.exit_code == 0, result.output
    assert f"({len(onboarding_log)} events) replays against {ONBOARDING}: ok" in result.output


def test_tampered_history_exits_1_with_the_diff(
    tmp_path: Path, onboarding_log: list[dict[str, Any]]
) -> None:
    tampered = json.loads(
        json.dumps(onboarding_log).replace("create_account", "create_acount")  # a renamed step
    )
    log = tmp_path / "tampered.json"
    log.write_text(json.dumps(tampered))
    result = simulate("--history", str(log), ONBOARDING)
    assert result.exit_code == 1, result.output
    assert "does not replay against examples.onboarding:onboarding" in result.output
    assert "not deterministic" in result.output
    assert "expected:" in result.output and "create_acount" in result.output
    assert "actual:" in result.output and "create_account" in result.output


def test_history_that_is_not_a_log_is_a_usage_error(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text('{"not": "a log"}')
    result = simulate("--history", str(log), ONBOARDING)
    assert result.exit_code == 2
    assert "cannot read history" in result.output and "Traceback" not in result.output


def test_shrink_saves_a_tape_that_replay_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "coin_cli_shrink.py").write_text(COIN.format(prefix="cli_coin_shrink"))
    monkeypatch.chdir(tmp_path)
    swept = simulate("coin_cli_shrink:flip", "--seeds", "0..9", "--faults", "all", "--shrink")
    assert swept.exit_code == 1, swept.output
    assert "shrunk seed" in swept.output
    tapes = sorted(tmp_path.glob("pyworkflow-tape-seed*.json"))
    assert len(tapes) == 1
    tape = json.loads(tapes[0].read_text())
    replayed = simulate("coin_cli_shrink:flip", "--replay", str(tapes[0]))
    assert replayed.exit_code == 1, replayed.output
    assert f"seed {tape['seed']}" in replayed.output
    assert "not deterministic" in replayed.output
    # The tape is 1-minimal: without any one of the faults it kept, the seed passes. (Whether
    # the coin's failure needs a fault at all depends on where the seed puts the replays.)
    for ordinal, *_ in tape["fired"]:
        without = tmp_path / f"without-{ordinal}.json"
        without.write_text(json.dumps({**tape, "suppress": [*tape["suppress"], ordinal]}))
        passed = simulate("coin_cli_shrink:flip", "--replay", str(without))
        assert passed.exit_code == 0, passed.output
    (tmp_path / "bad.json").write_text("{}")
    bad = simulate("coin_cli_shrink:flip", "--replay", str(tmp_path / "bad.json"))
    assert bad.exit_code == 2 and "not a simulation tape" in bad.output


PIDS = """
import os

from pyworkflow import step, workflow


@step(name="cli_pid_note")
async def note(path: str) -> str:
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\\n")
    return "noted"


@workflow(name="cli_pid_flow")
async def flow(path: str) -> str:
    return await note(path)
"""


@pytest.mark.parametrize("isolate", [False, True])
def test_a_sweep_runs_its_seeds_in_one_process_or_one_each_with_isolate(
    isolate: bool, tmp_path: Path
) -> None:
    """By default the seeds of a sweep run one after another in the sweep's process (a fork per
    seed cost more than the simulation itself); ``--isolate`` forks a child per seed, from the
    sweep before any seed ran. (A real ``pyworkflow`` process: this test process runs
    simulation threads, and forks only without.)"""
    (tmp_path / "cli_pids.py").write_text(PIDS)
    noted = tmp_path / "pids.txt"
    argv = [str(PYWORKFLOW), "simulate", "cli_pids:flow", "--seeds", "0..3", "--faults", "none"]
    argv += ["--args", json.dumps([str(noted)])] + (["--isolate"] if isolate else [])
    done = run_command(argv, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    pids = noted.read_text().split()
    assert len(pids) >= 4  # each seed ran the step, its reruns and the reference run it again
    # With --isolate, one process per seed: the step ran in exactly four; else in one.
    assert len(set(pids)) == (4 if isolate else 1)


LEAKY = """
from pyworkflow import step, workflow

CACHE: dict[str, str] = {}


@step(name="leaky_fetch")
async def fetch() -> str:
    return "fetched"


@workflow(name="leaky_flow")
async def flow() -> str:
    if "value" not in CACHE:  # the bug: a cache in workflow code outlives the run
        CACHE["value"] = await fetch()
    return CACHE["value"]
"""


def test_state_one_run_leaves_behind_fails_the_first_seed_of_an_in_process_sweep(
    tmp_path: Path,
) -> None:
    """Seeds share the process, and what a run leaves in memory is caught where it first
    matters: the first seed's replay and rerun start from the state its first run left."""
    (tmp_path / "leaky.py").write_text(LEAKY)
    argv = [str(PYWORKFLOW), "simulate", "leaky:flow", "--seeds", "0..4", "--json"]
    done = run_command(argv, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    failed = {entry["seed"]: entry["violations"] for entry in report["failed"]}
    assert 0 in failed, failed
    assert any("replay from scratch diverges" in v for v in failed[0]), failed[0]


def test_liveness_is_an_option_checked_at_the_boundary() -> None:
    result = simulate(ONBOARDING, "--seeds", "0..1", "--liveness", "2h", "--json")
    assert result.exit_code == 0, result.output
    bad = simulate(ONBOARDING, "--seeds", "0..1", "--liveness", "soon")
    assert bad.exit_code == 2 and "--liveness" in bad.output


COIN_WITH_ARGS = """
import random

from pyworkflow import hook, sleep, step, workflow


@step(name="printed_heads")
async def heads(label: str) -> str:
    return label + " heads"


@workflow(name="printed_flip")
async def flip(label: str, times: int = 1) -> str:
    # The bug under test: random.random() in workflow code, not pyworkflow.random().
    answer = await hook("go")
    side = await heads(label) if random.random() < 0.5 else "tails"
    await sleep("1m")
    return f"{side} {answer} {times}"
"""


def test_every_command_the_sweep_prints_runs_as_printed(tmp_path: Path) -> None:
    """The per-seed reproduce lines and the tape's replay line, run in a shell as printed,
    with arguments, hook answers and a liveness bound the tape must carry."""
    (tmp_path / "printed_coin.py").write_text(COIN_WITH_ARGS)
    swept = run_command(
        [
            str(PYWORKFLOW),
            "simulate",
            "printed_coin:flip",
            "--args",
            '["x", 2]',
            "--answer-hooks",
            '{"go": "ok"}',
            "--liveness",
            "2d",
            "--seeds",
            "0..9",
            "--shrink",
        ],
        cwd=tmp_path,
    )
    assert swept.returncode == 1, swept.stdout + swept.stderr
    printed = [
        line.split(":", 1)[1].strip()
        for line in swept.stdout.splitlines()
        if line.strip().startswith("reproduce:")
    ]
    lines = swept.stdout.splitlines()
    printed += [lines[i + 1].strip() for i, line in enumerate(lines) if "replay it with" in line]
    assert any("--replay" in command for command in printed), swept.stdout
    # As printed: through a shell, with the environment's `pyworkflow` on the PATH.
    path = os.pathsep.join([str(PYWORKFLOW.parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT)}
    for command in printed:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 1, f"{command}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stdout + done.stderr
        assert "do not fit" not in done.stdout + done.stderr
        assert "not deterministic" in done.stdout, f"{command}\n{done.stdout}"


def test_a_sweep_on_a_terminal_shows_a_progress_bar(tmp_path: Path) -> None:
    """On a terminal (a pseudo-terminal here, through ``script``): a rich progress bar with the
    seeds done, the failures and the rate; it is gone when the sweep's report prints."""
    answers = json.dumps({"activation": {"via": "x"}})
    command = " ".join(
        shlex.quote(part) for part in (str(PYWORKFLOW), "simulate", ONBOARDING, "--seeds", "0..39")
    )
    command += " --faults none --answer-hooks " + shlex.quote(answers)
    done = run_command(["script", "-qec", command, "/dev/null"], cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "simulating" in done.stdout and "seeds/s" in done.stdout, done.stdout[-2000:]
    assert "40 passed, 0 failed" in done.stdout


# -- --report: an HTML page per failing seed ---------------------------------------------------


def _reported(output: str) -> dict[int, str]:
    """``report for seed N: PATH`` lines -> {N: PATH}."""
    found = re.findall(r"^report for seed (\d+): (.+)$", output, re.MULTILINE)
    return {int(seed): path for seed, path in found}


def test_report_writes_one_page_per_failing_seed_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "coin_report.py").write_text(COIN.format(prefix="cli_coin_report"))
    monkeypatch.chdir(tmp_path)
    swept = simulate("coin_report:flip", "--seeds", "0..9", "--json")
    failing = {entry["seed"]: entry for entry in json.loads(swept.stdout)["failed"]}
    assert swept.exit_code == 1 and failing

    result = simulate("coin_report:flip", "--seeds", "0..9", "--report", "pages")
    assert result.exit_code == 1, result.output  # as without --report
    reported = _reported(result.stdout)
    assert set(reported) == set(failing)
    assert reported == {seed: os.path.join("pages", f"seed-{seed}.html") for seed in failing}
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == sorted(
        f"seed-{seed}.html" for seed in failing
    )
    for seed, entry in failing.items():
        page = (tmp_path / reported[seed]).read_text(encoding="utf-8")
        assert f"seed {seed} <span" in page and ">FAILED<" in page
        assert f'<pre id="reproduce">{html.escape(entry["reproduce"])}</pre>' in page
        for violation in entry["violations"]:
            assert html.escape(violation) in page
    assert "warning" not in result.stdout  # the traced reruns found what the sweep found

    # The reproduce line on a page runs as printed (and fails the same way).
    seed = min(failing)
    path = os.pathsep.join([str(PYWORKFLOW.parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        failing[seed]["reproduce"],
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and f"seed {seed} FAILED" in done.stdout, done.stdout

    # In parallel, with --json: the same pages, listed in the JSON.
    parallel = simulate(
        "coin_report:flip", "--seeds", "0..9", "--report", "json-pages", "--json", "--jobs", "2"
    )
    assert parallel.exit_code == 1, parallel.output
    listed = json.loads(parallel.stdout)["reports"]
    assert {entry["seed"] for entry in listed} == set(failing)
    assert all(Path(entry["path"]).is_file() and entry["problem"] is None for entry in listed)


def test_report_for_one_seed_writes_it_passed_or_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "coin_one.py").write_text(COIN.format(prefix="cli_coin_one"))
    monkeypatch.chdir(tmp_path)
    report = json.loads(simulate("coin_one:flip", "--seeds", "0..9", "--json").stdout)
    failing = {entry["seed"] for entry in report["failed"]}
    passing = sorted(set(range(10)) - failing)
    assert passing and failing

    passed = simulate("coin_one:flip", "--seed", str(passing[0]), "--report", "one.html")
    assert passed.exit_code == 0, passed.output
    assert _reported(passed.stdout) == {passing[0]: "one.html"}
    page = (tmp_path / "one.html").read_text(encoding="utf-8")
    assert ">PASSED<" in page and "Every oracle passed." in page

    # A directory (an existing one, or a path ending with a slash) gets seed-N.html in it.
    seed = min(failing)
    failed = simulate("coin_one:flip", "--seed", str(seed), "--report", "out/")
    assert failed.exit_code == 1, failed.output
    assert (tmp_path / "out" / f"seed-{seed}.html").is_file()
    again = simulate("coin_one:flip", "--seeds", str(seed), "--report", "out")
    assert _reported(again.stdout) == {seed: os.path.join("out", f"seed-{seed}.html")}


def test_report_of_a_sweep_that_passes_writes_nothing_and_exits_0(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    result = simulate(ONBOARDING, "--seeds", "0..2", "--report", str(pages))
    assert result.exit_code == 0, result.output
    assert f"no failing seed: no report written to {pages}" in result.stdout
    assert list(pages.iterdir()) == []


def test_report_usage_errors_exit_2_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "taken.html"
    a_file.write_text("")
    several = simulate(ONBOARDING, "--seeds", "0..2", "--report", str(a_file))
    assert several.exit_code == 2 and "with several seeds PATH is a directory" in several.output
    log = tmp_path / "log.json"
    log.write_text("[]")
    history = simulate(ONBOARDING, "--history", str(log), "--report", str(tmp_path / "r"))
    assert history.exit_code == 2 and "not with --history or --replay" in history.output

    monkeypatch.setitem(sys.modules, "plotly", None)  # as if the report extra were missing
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    missing = simulate(ONBOARDING, "--seeds", "0..2", "--report", str(tmp_path / "r"))
    assert missing.exit_code == 2, missing.output
    assert "--report: the HTML report needs plotly: pip install 'pyworkflow-engine[report]'" in (
        missing.output
    )
    assert "Traceback" not in missing.output
    assert not (tmp_path / "r").exists()  # nothing ran
