"""The benchmarks run with ``--quick`` and print the JSON they promise; speed is never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _run_quick(bench: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``bench/<bench>.py --quick``; its JSON, checked to be what it also wrote to a file."""
    output = tmp_path / f"{bench}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    assert json.loads(output.read_text()) == results
    return results


def test_engine_benchmark_runs_quick_and_prints_its_json(tmp_path: Path) -> None:
    results = _run_quick("engine", tmp_path)

    assert results["meta"]["quick"] is True
    for backend in ("sqlite", "memory"):
        per_step = results["per_step"][backend]
        assert per_step["whole_run_us_per_step"] > 0
        assert set(per_step["sampled_us"]) >= {"p50", "p90", "p99"}
        assert set(results["start_one_step"][backend]["us"]) >= {"p50", "p99"}
        assert results["scaling"][backend]["ratio"] > 0
    cold = results["cold_resume"]["sqlite"]
    assert cold["events"] == 200  # 99 steps, each started + completed, plus start and sleep
    assert set(cold) >= {"us_per_event", "get_events_ms", "replay_ms"}
    assert results["cold_resume"]["memory_evicted"]["us_per_event"] > 0
    assert set(results["targets"]) == {
        "sqlite_per_step_p50_us",
        "sqlite_per_step_p50_us_stretch",
        "one_step_start_us",
        "memory_per_step_us",
        "scaling_ratio",
        "cold_resume_us_per_event",
        "cancel_sleeping_p50_us",
        "child_over_step_ratio",
        "chain_growth_ratio",
    }
    for backend in ("sqlite", "memory"):
        assert results["cancel_sleeping"][backend]["us"]["p50"] > 0
        child = results["child_vs_step"][backend]
        assert child["children"] == 20 and child["ratio"] > 0
        chain = results["chain"][backend]
        assert chain["generations"] == 100 and chain["growth_ratio"] > 0


def test_simulation_benchmark_runs_quick_and_prints_its_json(tmp_path: Path) -> None:
    results = _run_quick("simulation", tmp_path)
    for key, phases in (
        ("throughput", {"per_run", "same_seed_rerun", "reference"}),
        ("throughput_all_faults", {"per_run", "fault_free_rerun", "same_seed_rerun", "reference"}),
    ):
        figures = results[key]
        assert figures["oracles"] is True
        assert figures["workflow_days_per_second"] > 0
        assert figures["deliveries"] >= 11 * figures["runs"]  # a start and ten timer wake-ups
        assert set(figures["check_seconds"]) == phases
    assert results["determinism"] == {
        "seeds": 5,
        "same_process_identical": True,
        "pythonhashseed_1_and_2_identical": True,
    }
