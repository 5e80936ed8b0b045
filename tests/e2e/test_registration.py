"""Registering a routine again from the CLI keeps a disabled trigger disabled, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import Deployment, write_routine

pytestmark = pytest.mark.e2e

NIGHTLY = """
from mainspring import Routine, on_schedule


class NightlyEval(Routine):
    def run(self, trigger=on_schedule("0 3 * * *"), model: str = "candidate") -> dict:
        return {"model": model}


class NotARoutine:
    pass
"""


def shown(deployment: Deployment) -> dict[str, object]:
    result = deployment.cli("routine", "show", "nightly-eval")
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def test_recreate_keeps_a_disabled_trigger_disabled_until_enable(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.start("recorder")  # `routine show` lists the trigger's history too
    folder = write_routine(tmp_path / "nightly", NIGHTLY)
    created = deployment.cli(
        "routine", "create", str(folder), "--name", "nightly-eval", "--entrypoint", "NightlyEval"
    )
    assert "routine.py:NightlyEval" in created.stdout
    deployment.cli("routine", "disable", "nightly-eval", "--reason", "maintenance")

    again = deployment.cli("routine", "create", str(folder), "--name", "nightly-eval")
    assert "trigger stays disabled (maintenance): pass --enable" in again.stdout
    assert shown(deployment)["enabled"] is False

    enabled = deployment.cli("routine", "create", str(folder), "--name", "nightly-eval", "--enable")
    assert "trigger enabled" in enabled.stdout
    assert shown(deployment)["enabled"] is True


def test_an_entrypoint_class_that_is_not_there_is_one_clear_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = write_routine(tmp_path / "nightly", NIGHTLY)
    result = deployment.cli(
        "routine", "create", str(folder), "--name", "x", "--entrypoint", "NotARoutine", check=False
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "no Routine class 'NotARoutine'" in line
    assert "--entrypoint" in line
