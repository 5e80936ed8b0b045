"""The routine author's loop on the real system: the pytest plugin's shared system, `mainspring dev`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mainspring.testing import TestSystem
from tests.harness import copy_example

pytestmark = pytest.mark.e2e


def test_the_plugin_system_runs_the_example_chain(
    mainspring_system: TestSystem, tmp_path: Path
) -> None:
    mainspring_system.create_dataset("photos", "id:int64,text:string")
    mainspring_system.register(copy_example("embed_new_rows", tmp_path), "embed_new_rows")
    mainspring_system.register(copy_example("embedding_report", tmp_path), "embedding_report")
    mainspring_system.append(
        "photos", pa.table({"id": list(range(100)), "text": ["a photo"] * 100})
    )
    [embedded] = mainspring_system.wait_for_runs("embed_new_rows")
    assert embedded["status"] == "completed", embedded.get("error")
    assert embedded["outputs"] == {"embedded": 100, "versions": [0, 1]}
    [report] = mainspring_system.wait_for_runs("embedding_report")
    assert report["outputs"] == {"upstream_run": embedded["id"], "embedded": 100, "total": 100}
