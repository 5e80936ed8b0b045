"""`runs rerun` starts a new run with the original's inputs, labels, attributes and event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mainspring.client import Client
from tests.e2e.test_manual_events import DOWNSTREAM, UPSTREAM
from tests.harness import Deployment, write_routine

pytestmark = pytest.mark.e2e


async def test_a_rerun_repeats_inputs_labels_attributes_and_event_and_links_the_original(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    system.cli("routine", "create", str(write_routine(tmp_path / "t", UPSTREAM)), "--name", "train")
    system.cli(
        "routine", "create", str(write_routine(tmp_path / "r", DOWNSTREAM)), "--name", "report"
    )
    first = json.loads(
        system.cli(
            "run",
            "train",
            "--input",
            "accuracy=0.7",
            "--label",
            "nightly",
            "--attr",
            "team=ml",
            "--wait",
            "--json",
        ).stdout
    )
    original = json.loads(
        system.cli("run", "report", "--upstream", first["id"], "--wait", "--json").stdout
    )
    # A newer upstream run: a rerun must still read the original's upstream, not this one.
    system.cli("run", "train", "--input", "accuracy=0.9", "--wait")

    again = json.loads(system.cli("runs", "rerun", original["id"], "--wait", "--json").stdout)

    assert again["id"] != original["id"]
    assert again["status"] == "completed"
    assert again["rerun_of"] == original["id"]
    assert again["source"] == "manual"
    assert (again["trigger_kind"], again["trigger_event"]) == (
        "completion",
        original["trigger_event"],
    )
    assert again["outputs"] == {"upstream": first["id"], "accuracy": 0.7}
    shown = system.cli("runs", "show", again["id"]).stdout
    assert f"rerun_of: {original['id']}" in shown

    rerun_id = await client.rerun(first["id"])
    train_again = await client.wait(rerun_id, timeout=60)
    assert train_again["source"] == "api"
    assert train_again["rerun_of"] == first["id"]
    assert (train_again["inputs"], train_again["labels"], train_again["attributes"]) == (
        first["inputs"],
        ["nightly"],
        {"team": "ml"},
    )
    assert train_again["trigger_event"] == first["trigger_event"]
    assert train_again["outputs"] == {"accuracy": 0.7}

    unknown = system.cli("runs", "rerun", "no-such-run", check=False)
    assert unknown.returncode == 2
    assert "run no-such-run is not recorded: find its id with `mainspring runs list`" in (
        unknown.stderr
    )
