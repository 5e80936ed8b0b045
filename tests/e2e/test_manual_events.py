"""Runs started by hand get the event their trigger would deliver, over a real deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mainspring.client import Client
from mainspring.storage import datasets
from tests.e2e.test_permissions import secured  # noqa: F401 (a fixture)
from tests.e2e.test_web import call, web  # noqa: F401 (web is a fixture)
from tests.harness import Deployment, copy_example, eventually, write_routine

pytestmark = pytest.mark.e2e

SCHEMA = "id:int64,text:string"

UPSTREAM = """
from mainspring import Routine, on_schedule

class Train(Routine):
    def run(self, tick=on_schedule(every="1d"), accuracy: float = 0.5):
        return {"accuracy": accuracy}
"""

DOWNSTREAM = """
from mainspring import Routine, on_workflow_success

class Report(Routine):
    def run(self, done=on_workflow_success("train")):
        return {"upstream": done.run_id, "accuracy": done.outputs["accuracy"]}
"""


def rows(first: int, count: int) -> dict[str, list[Any]]:
    return {
        "id": list(range(first, first + count)),
        "text": [f"photo {i} of a red kite" for i in range(first, first + count)],
    }


def embedded_ids(run: dict[str, Any]) -> list[int]:
    (artifact,) = [a for a in run["artifacts"] if a["name"] == "embeddings"]
    ids: list[int] = pq.read_table(artifact["uri"]).column("id").to_pylist()
    return ids


async def pending_cursor(system: Deployment, seen_version: int) -> dict[str, Any]:
    """The embed routine's cursor once the dispatcher has counted `seen_version`."""

    async def check() -> dict[str, Any] | None:
        shown = json.loads(system.cli("routine", "show", "embed").stdout)["dataset_cursor"]
        return shown if shown["seen_version"] == seen_version else None

    found: dict[str, Any] = await eventually(check, what=f"the cursor to see {seen_version}")
    return found


async def test_embed_new_rows_run_by_hand_embeds_the_pending_rows_and_keeps_the_cursor(
    system: Deployment,
    client: Client,
    tmp_path: Path,
    web: str,  # noqa: F811
) -> None:
    root = str(system.home / "datasets")
    system.cli("dataset", "create", "photos", "--schema", SCHEMA)
    system.cli(
        "routine", "create", str(copy_example("embed_new_rows", tmp_path)), "--name", "embed"
    )
    datasets.append("photos", rows(0, 30), root=root)  # below batch_rows=100: pending
    datasets.append("photos", rows(30, 20), root=root)
    before = await pending_cursor(system, 2)
    assert (before["fired_version"], before["pending_records"]) == (0, 50)

    by_hand = system.cli("run", "embed", "--wait", "--timeout", "60", "--json")
    run = await client.get_run(json.loads(by_hand.stdout)["id"])

    assert run is not None
    assert run["status"] == "completed", run
    assert (run["source"], run["trigger_kind"]) == ("manual", "dataset")
    assert embedded_ids(run) == list(range(0, 50))
    assert run["outputs"] == {"embedded": 50, "versions": [0, 2]}
    assert await pending_cursor(system, 2) == before

    # An older range asked for by hand is counted from the commit log.
    older = system.cli(
        "run", "embed", "--from-version", "1", "--to-version", "2", "--wait", "--json"
    )
    assert json.loads(older.stdout)["outputs"] == {"embedded": 20, "versions": [1, 2]}

    status, started = call(web + "/api/routines/embed/run", {})
    assert status == 202
    from_page = await client.wait(started["run_id"], timeout=60)
    assert (from_page["source"], from_page["trigger_kind"]) == ("manual", "dataset")
    assert from_page["outputs"]["embedded"] == 50

    # The rows were never consumed by hand: the trigger still fires them all at 100.
    datasets.append("photos", rows(50, 50), root=root)

    async def fired() -> dict[str, Any] | None:
        runs = [r for r in await client.list_runs() if r["source"] == "trigger"]
        return runs[0] if runs and runs[0]["status"] == "completed" else None

    triggered = await client.get_run((await eventually(fired, timeout=60, what="a fire"))["id"])
    assert triggered is not None
    assert embedded_ids(triggered) == list(range(0, 100))


async def test_a_completion_routine_run_by_hand_reads_the_upstream_outputs(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    system.cli("routine", "create", str(write_routine(tmp_path / "t", UPSTREAM)), "--name", "train")
    system.cli(
        "routine", "create", str(write_routine(tmp_path / "r", DOWNSTREAM)), "--name", "report"
    )

    nothing_yet = system.cli("run", "report", "--wait", "--timeout", "60", check=False)
    # The dispatcher's refusal is the command's one-line error.
    assert nothing_yet.returncode == 2
    assert nothing_yet.stderr.strip() == (
        "mainspring: error: no completed run of train has finished, so report has no upstream "
        "event: run it first or give --upstream RUN_ID"
    )

    first = json.loads(
        system.cli("run", "train", "--input", "accuracy=0.7", "--wait", "--json").stdout
    )
    second = json.loads(
        system.cli("run", "train", "--input", "accuracy=0.9", "--wait", "--json").stdout
    )

    latest = json.loads(system.cli("run", "report", "--wait", "--json").stdout)
    assert latest["status"] == "completed"
    assert latest["trigger_kind"] == "completion"
    assert latest["outputs"] == {"upstream": second["id"], "accuracy": 0.9}

    chosen = json.loads(
        system.cli("run", "report", "--upstream", first["id"], "--wait", "--json").stdout
    )
    assert chosen["outputs"] == {"upstream": first["id"], "accuracy": 0.7}

    unknown = system.cli("run", "report", "--upstream", "no-such-run", "--wait", check=False)
    assert unknown.returncode == 2
    assert "error: run no-such-run is not recorded" in unknown.stderr

    # The SDK's submit takes the same choice and says it came from the API.
    run_id = await client.submit("report", upstream=first["id"])
    from_sdk = await client.wait(run_id, timeout=60)
    assert from_sdk["source"] == "api"
    assert from_sdk["outputs"]["accuracy"] == 0.7


async def test_schedule_and_poll_routines_run_by_hand_get_their_own_events(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    poll = write_routine(
        tmp_path / "p",
        """
from mainspring import Routine, on_poll

def check():
    return None

class Weather(Routine):
    def run(self, polled=on_poll(check, every="1d"), city: str = "Rome"):
        return {"city": city, "payload": polled.payload, "kind": type(polled).__name__}
""",
    )
    system.cli("routine", "create", str(poll), "--name", "weather")
    system.cli("routine", "create", str(write_routine(tmp_path / "t", UPSTREAM)), "--name", "train")

    polled = json.loads(
        system.cli("run", "weather", "--payload", '{"city": "Oslo"}', "--wait", "--json").stdout
    )
    assert polled["outputs"] == {"city": "Oslo", "payload": {"city": "Oslo"}, "kind": "PollEvent"}
    ticked = json.loads(system.cli("run", "train", "--wait", "--json").stdout)
    assert ticked["trigger_kind"] == "schedule"
    assert ticked["trigger_event"]["scheduled_at"] == ticked["trigger_event"]["fired_at"]

    wrong = system.cli("run", "train", "--payload", "{}", "--wait", check=False)
    assert wrong.returncode == 2
    assert "--payload applies to poll routines; train has a schedule trigger" in wrong.stderr
    bad = system.cli("run", "weather", "--payload", "[1]", check=False)
    assert bad.returncode == 2
    assert "--payload '[1]' is not a JSON object" in bad.stderr


async def test_the_dispatcher_may_ask_the_recorder_under_per_service_users(
    secured: Deployment,  # noqa: F811
    tmp_path: Path,
) -> None:
    secured.cli(
        "routine", "create", str(write_routine(tmp_path / "t", UPSTREAM)), "--name", "train"
    )
    secured.cli(
        "routine", "create", str(write_routine(tmp_path / "r", DOWNSTREAM)), "--name", "report"
    )
    upstream = json.loads(secured.cli("run", "train", "--wait", "--json").stdout)

    report = json.loads(secured.cli("run", "report", "--wait", "--json").stdout)

    assert report["outputs"] == {"upstream": upstream["id"], "accuracy": 0.5}, secured.logs()
