"""The README's first command: `mainspring demo` shows schedules and dataset appends firing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(300)
def test_demo_runs_hello_and_embeds_two_batches_of_appended_rows(tmp_path: Path) -> None:
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
