"""The audit trail: what a person did from the CLI is kept by the recorder and listed back."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client, RecorderError
from mainspring.contract import subjects
from tests.e2e.test_manual_events import UPSTREAM
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

LONG = """
import time
from mainspring import Routine, on_schedule


class Long(Routine):
    def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        for step in range(600):
            self.progress(step / 600, "waiting")
            time.sleep(0.1)
        return {}
"""


async def _progressed(client: Client, run_id: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run is not None and (run.get("progress") or 0) > 0 else None


@pytest.mark.parametrize(
    "deployment", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_disable_enable_rerun_and_cancel_are_listed_newest_first_with_who_and_when(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env["MAINSPRING_USER"] = "alice"
    deployment.extra_env["MAINSPRING_CANCEL_GRACE_S"] = "2"
    deployment.start_all()
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "t", UPSTREAM)), "--name", "train"
    )
    deployment.cli("routine", "create", str(write_routine(tmp_path / "l", LONG)), "--name", "long")
    first = json.loads(deployment.cli("run", "train", "--wait", "--json").stdout)
    long_run = await client.submit("long")
    await eventually(lambda: _progressed(client, long_run), 60, what="the long run progressing")
    # Nothing was done to anything yet: starting runs and registering are not audited.
    assert json.loads(deployment.cli("audit", "--json").stdout) == []

    deployment.cli("routine", "disable", "train", "--reason", "bad input data")
    deployment.cli("routine", "enable", "train")
    again = json.loads(deployment.cli("runs", "rerun", first["id"], "--wait", "--json").stdout)
    deployment.cli("runs", "cancel", long_run)

    async def four_entries() -> list[dict[str, Any]] | None:
        listed: list[dict[str, Any]] = json.loads(deployment.cli("audit", "--json").stdout)
        return listed if len(listed) == 4 else None

    entries = await eventually(four_entries, 30, what="four audit entries")
    assert [
        (e["who"], e["action"], e["target_kind"], e["target"], e["routine"], e["run_id"])
        for e in entries
    ] == [
        ("alice", "run.cancel", "run", long_run, "long", long_run),
        ("alice", "run.rerun", "run", first["id"], "train", first["id"]),
        ("alice", "routine.enable", "routine", "train", "train", None),
        ("alice", "routine.disable", "routine", "train", "train", None),
    ]
    assert entries[3]["reason"] == "bad input data"
    assert entries[1]["details"] == {"new_run_id": again["id"]}
    times = [datetime.fromisoformat(e["at"]) for e in entries]
    assert all(t.utcoffset() is not None for t in times)
    assert times == sorted(times, reverse=True)
    assert times[-1] >= datetime.fromisoformat(first["finished_at"])

    only_train = json.loads(deployment.cli("audit", "--routine", "train", "--json").stdout)
    assert [e["action"] for e in only_train] == ["run.rerun", "routine.enable", "routine.disable"]
    newest_two = await client.audit(limit=2)
    assert [e["action"] for e in newest_two] == ["run.cancel", "run.rerun"]
    shown = deployment.cli("audit", "--limit", "1").stdout
    assert "alice" in shown
    assert f"run {long_run}" in shown

    refused = await client.nc.request(subjects.API_AUDIT_LIST, b'{"limit": -1}', timeout=5)
    reason = json.loads(refused.data)["error"]
    assert reason.startswith("bad audit list request: ")
    assert "\n" not in reason
    with pytest.raises(RecorderError, match="bad audit list request"):
        await client._request(subjects.API_AUDIT_LIST, {"limit": "many"})
