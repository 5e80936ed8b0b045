"""Registering a routine again from the CLI keeps a disabled trigger disabled, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mainspring.client import Client
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


VERSIONED = """
from mainspring import Routine, on_schedule


class Versioned(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {{"version": {n}}}
"""


async def test_a_run_submitted_right_after_a_change_runs_the_changed_code(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    # The dispatcher answers submits from its in-memory copy of the registry; the client's
    # own last write must be in that copy before it is used (read-your-writes).
    folder = tmp_path / "versioned"
    folder.mkdir()
    for n in range(4):
        (folder / "routine.py").write_text(VERSIONED.format(n=n))
        await client.create_routine(folder, "versioned")
        run = await client.wait(await client.submit("versioned"), timeout=60)
        assert run["outputs"] == {"version": n}
    await (await client.store()).delete("versioned")
    refused = await client.wait(await client.submit("versioned"), timeout=60)
    assert refused["status"] == "failed"
    assert "not registered" in (refused["error"] or "")
