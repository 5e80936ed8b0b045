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
from mainspring.runtime.deadletters import CUT_HEADER, ERROR_HEADER
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


async def test_a_message_too_big_to_park_whole_is_parked_cut_and_the_service_stays_connected(
    deployment: Deployment, client: Client
) -> None:
    dispatcher = deployment.start("dispatcher")
    # Near the max payload: with the reason added its dead letter would not fit, and the
    # server answers an oversized publish by closing the publisher's connection.
    big = b"\xff" * (client.nc.max_payload - 700)
    await client.js.publish(subjects.RUN_SUBMITTED, big, headers={"X-Origin": "x" * 600})
    await client.js.publish(subjects.RUN_SUBMITTED, b"after", headers={"X-Origin": "test"})

    async def both_listed() -> list[dict[str, object]] | None:
        listed = deployment.cli("deadletters", "list", "--json").stdout
        letters: list[dict[str, object]] = json.loads(listed)
        return letters if len(letters) == 2 else None

    cut, after = await eventually(both_listed, timeout=60, what="both messages parked")
    shown = json.loads(deployment.cli("deadletters", "show", str(cut["sequence"])).stdout)
    assert shown["headers"][CUT_HEADER].endswith(f" of {len(big)} bytes")
    refused = deployment.cli("deadletters", "replay", str(cut["sequence"]), check=False)
    assert refused.returncode != 0
    assert "republish the original" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert "did not fit" not in str(after["reason"])
    assert dispatcher.alive()
    assert "lost the connection" not in dispatcher.log()


async def test_a_name_too_long_for_a_subject_is_parked_at_once_and_the_service_stays_connected(
    deployment: Deployment, client: Client
) -> None:
    dispatcher = deployment.start("dispatcher")
    # Its refusal would go out on run.completed.<routine>.failed: a subject longer than
    # nats-server accepts, which the server answers by closing the publisher's connection.
    huge = {"request_id": str(uuid.uuid4()), "routine": "r" * 5000}
    await client.js.publish(subjects.RUN_SUBMITTED, json.dumps(huge).encode())
    await client.js.publish(subjects.RUN_SUBMITTED, b"not json", headers={"X-Origin": "after"})

    async def both_parked() -> list[str] | None:
        listed = json.loads(deployment.cli("deadletters", "list", "--json").stdout)
        reasons = [str(letter["reason"]) for letter in listed]
        return reasons if len(reasons) == 2 else None

    too_long, after = await eventually(both_parked, timeout=60, what="both parked")
    assert "routine: Value error, 5000 bytes as a subject token" in too_long
    assert "Invalid JSON" in after
    assert "lost the connection" not in dispatcher.log()
