"""`mainspring deadletters`: a parked message is listed and shown with its reason and original
headers, a replayed one is handled on its original subject, a purge empties the list."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import SubmitRun
from mainspring.runtime.deadletters import ERROR_HEADER
from tests.harness import Deployment, copy_example, eventually

pytestmark = pytest.mark.e2e


async def test_dead_letters_are_listed_shown_replayed_and_purged(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    await client.create_routine(copy_example("hello", tmp_path), "hello")
    # Malformed: the dispatcher parks it with the reason and the headers it came with.
    await client.js.publish(
        subjects.SCHEDULE_FIRED, b'{"routine": 3}', headers={"X-Origin": "test"}
    )
    # A submit parked earlier (as after its delivery limit), to be replayed once fixed.
    run_id = str(uuid.uuid4())
    submit = SubmitRun(
        request_id=run_id, routine="hello", inputs={"steps": 1}, submitted_at=datetime.now(UTC)
    )
    await client.js.publish(
        subjects.dead_letter_subject(subjects.RUN_SUBMITTED),
        submit.model_dump_json().encode(),
        headers={ERROR_HEADER: "run.submitted failed on all 20 deliveries", "X-Origin": "test"},
    )

    async def two_listed() -> list[dict[str, object]] | None:
        listed = system.cli("deadletters", "list", "--json").stdout
        letters: list[dict[str, object]] = json.loads(listed)
        return letters if len(letters) == 2 else None

    letters = await eventually(two_listed, timeout=30, what="both dead letters listed")
    parked, malformed = sorted(letters, key=lambda letter: str(letter["subject"]))
    assert parked["subject"] == subjects.RUN_SUBMITTED
    assert malformed["subject"] == subjects.SCHEDULE_FIRED
    assert "malformed ScheduleFired on schedule.fired" in str(malformed["reason"])
    shown = json.loads(system.cli("deadletters", "show", str(malformed["sequence"])).stdout)
    assert shown["headers"]["X-Origin"] == "test"
    assert shown["body"] == '{"routine": 3}'
    assert "deadletters list" in system.cli("deadletters", "show", "1", check=False).stderr

    replayed = system.cli("deadletters", "replay", str(parked["sequence"])).stdout
    assert f"replayed {parked['sequence']} on run.submitted" in replayed
    assert (await client.wait(run_id, timeout=60))["status"] == "completed"

    assert "removed 1 dead letter(s)" in system.cli("deadletters", "purge", "--all").stdout
    assert "no dead letters" in system.cli("deadletters", "list").stdout
