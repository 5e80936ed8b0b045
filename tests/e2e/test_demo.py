"""The README's first command: `mainspring demo` shows schedules and dataset appends firing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(300)
def test_demo_runs_hello_embeds_appended_rows_and_compares_two_fits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    result = subprocess.run(
        [sys.executable, "-m", "mainspring", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    embedded = result.stdout.split("waiting for embed_new_rows to fire twice")[1]
    runs = embedded.split("==>")[0]
    # Two firings of 100 rows each over (0, 2] and (2, 4]; the last 50 rows stay pending.
    assert runs.count("completed") == 2, runs
    assert "(0, 2]" in runs
    assert "(2, 4]" in runs
    assert "threshold not met: 50 of batch_rows=100" in embedded
    # Routine -> instance -> runs -> artifacts: configured, fitted, reconfigured, compared.
    instances = result.stdout.split("registering examples/kmeans_clustering")[1]
    assert "customer_segments: configuration {'clusters': 2, 'max_iterations': 20}" in instances
    history = instances.split("mainspring runs list --routine customer_segments")[1]
    methods = [line.split()[2] for line in history.split("==>")[0].strip().splitlines()[1:]]
    assert methods == ["configure", "fit", "configure", "fit", "predict"], history
    diff = instances.split("mainspring runs diff")[1]
    assert "* clusters" in diff, diff
    assert "* cluster.max" in diff, diff
