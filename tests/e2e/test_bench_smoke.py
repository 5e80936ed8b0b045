"""The benchmarks still measure: `just bench` in its smoke form, on real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# A deployment the benchmark must not attach to: each mode starts its own.
OUTSIDE_SETTINGS = ("MAINSPRING_NATS_URL", "MAINSPRING_HOME", "MAINSPRING_DATABASE_URL")


def run_bench(
    modes: list[str], results: Path, timeout: float, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """`python -m bench MODES` in its smoke form, writing its results under `results`."""
    env = {**os.environ, "BENCH_SMOKE": "1", "BENCH_RESULTS_DIR": str(results)}
    for variable in (*OUTSIDE_SETTINGS, "BENCH_MAX_RATE"):
        env.pop(variable, None)
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, "-m", "bench", *modes],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(600)
def test_throughput_and_latency_benchmarks_run_and_report(tmp_path: Path) -> None:
    result = run_bench(
        ["throughput", "latency"],
        tmp_path,
        540,
        BENCH_CONFIGS="worker-1-sqlite,process-1-postgres",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ratio" in result.stdout

    throughput = json.loads((tmp_path / "throughput.json").read_text())
    for config in throughput["configs"]:
        assert config["failed"] == 0, config["first_failure"]
        assert config["runs_per_s"] > 0
        assert config["raw_publish_per_s_before"] > 0
        cost = config["cost_per_run"]
        # Every run is at least submitted, requested and completed on the stream.
        assert cost["stored_messages"]["MAINSPRING"] >= 3
        assert cost["cpu_ms"]["runner-0"] > 0
    assert throughput["configs"][1]["cost_per_run"]["database_transactions"] > 0

    latency = json.loads((tmp_path / "latency.json").read_text())
    for name, figure in latency["figures"].items():
        assert figure["samples"] > 0, name
        assert 0 < figure["median"] < 10_000, name


@pytest.mark.timeout(300)
def test_scale_benchmark_reports_every_path_at_every_size_beside_the_raw_bus(
    tmp_path: Path,
) -> None:
    result = run_bench(["scale"], tmp_path, 240, BENCH_SCALE_SIZES="6,30")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "30 routines over 6" in result.stdout

    scale = json.loads((tmp_path / "scale.json").read_text())
    assert set(scale["sizes"]) == {"6", "30"}
    paths = {
        "raw JetStream publish -> pull consumer",
        "manual submit -> run()",
        "completion -> run()",
        "dataset commit -> run()",
    }
    for size, figures in scale["sizes"].items():
        assert set(figures) == paths, size
        for name, figure in figures.items():
            assert figure["samples"] == 10, (size, name)
            # Ten samples are too few for a p99: the tail is named as the maximum.
            assert figure["tail_name"] == "max", (size, name)
            assert 0 < figure["median"] <= figure["tail"], (size, name)
    assert set(scale["growth"]) == paths
    assert all(g["median"] > 0 for g in scale["growth"].values())


@pytest.mark.timeout(300)
def test_latency_under_load_measures_the_maximum_then_every_path_under_half_of_it(
    tmp_path: Path,
) -> None:
    result = run_bench(["latency-under-load"], tmp_path, 240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "median vs raw" in result.stdout
    assert "background: target" in result.stdout

    measured = json.loads((tmp_path / "latency_under_load.json").read_text())
    assert measured["max_rate_given"] is False
    assert measured["max_runs_per_s"] > 0
    background = measured["background"]
    assert background["target_per_s"] == pytest.approx(measured["max_runs_per_s"] / 2)
    assert background["submitted_per_s"] > 0
    assert background["completed_per_s"] > 0
    assert background["failed"] == 0, background["first_failure"]
    assert set(measured["figures"]) == {
        "raw JetStream publish -> pull consumer",
        "manual submit -> run()",
        "completion -> run()",
        "dataset commit -> run()",
    }
    for name, figure in measured["figures"].items():
        assert figure["samples"] == 10, name
        assert 0 < figure["median"] <= figure["tail"] < 10_000, name


def test_latency_under_load_refuses_a_max_rate_that_is_not_a_rate(tmp_path: Path) -> None:
    result = run_bench(["latency-under-load"], tmp_path, 120, BENCH_MAX_RATE="fast")
    assert result.returncode != 0
    assert "BENCH_MAX_RATE='fast' is not a positive rate: give runs per second" in result.stderr
