"""The circuit breaker over real JetStream: a routine fired too often pauses itself, its named
triggers with it, and `routine enable` re-arms both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from mainspring.contract.queries import RunQuery
from mainspring.storage.named_triggers import TriggerError
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

# At most 3 triggered runs a minute: the breaker trips on the 4th. Its own schedule is
# hourly, so the runs here are the pushes of its named trigger (triggered runs too).
BUSY = """
from typing import ClassVar

from mainspring import Routine, on_schedule


class Busy(Routine):
    max_fires: ClassVar[int | None] = 3
    max_fires_window: ClassVar[str] = "1m"

    def run(self, tick=on_schedule(every="1h")):
        return {"ok": True}
"""


async def runs_of(client: Client, routine: str) -> list[dict[str, Any]]:
    return await client.list_runs(RunQuery(routine=routine, limit=100))


async def test_a_routine_fired_past_max_fires_pauses_until_enabled(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    system.cli("routine", "create", str(write_routine(tmp_path / "busy", BUSY)), "--name", "busy")
    await client.create_trigger("kick", "busy", push=True)
    await client.activate_trigger("kick")
    for _ in range(4):
        await client.fire_trigger("kick")

    async def paused() -> Any:
        definition = await (await client.store()).get("busy")
        return None if definition.enabled else definition

    definition = await eventually(paused, timeout=60, what="the circuit breaker to pause busy")
    assert definition.disabled_by == "circuit_breaker"
    assert "4 triggered runs within 60s, over max_fires=3" in definition.disabled_reason

    # The named triggers follow the routine's own one, a moment later.
    async def kick_paused() -> Any:
        kick = await (await client.trigger_store()).get("kick")
        return kick if kick.status == "disabled" else None

    kick = await eventually(kick_paused, timeout=30, what="trigger kick to be paused too")
    assert kick.disabled_by == "circuit_breaker"
    with pytest.raises(TriggerError, match="trigger 'kick' is inactive"):
        await client.fire_trigger("kick")

    # The recorder keeps the four runs and the pause (it may still be starting on a busy
    # machine: `eventually` retries while it does not answer).
    async def four_runs() -> bool:
        return len(await runs_of(client, "busy")) == 4

    await eventually(four_runs, timeout=60, what="the 4 triggered runs to be recorded")

    async def pause_recorded() -> bool:
        events = await client.trigger_events("busy")
        return any(e["status"] == "disabled" and "circuit breaker" in e["reason"] for e in events)

    await eventually(pause_recorded, timeout=60, what="the pause in the trigger history")

    # The audit trail names who switched it off: the dispatcher, not a person.
    async def pause_audited() -> list[dict[str, Any]]:
        return [
            e
            for e in await client.audit(routine="busy")
            if e["action"] == "routine.disable" and e["who"] == "mainspring:dispatcher"
        ]

    audited = await eventually(pause_audited, timeout=60, what="the pause in the audit trail")
    assert len(audited) == 1
    assert audited[0]["details"] == {"by": "circuit_breaker"}
    assert "over max_fires=3" in audited[0]["reason"]
    # A person may still run it by hand: manual runs never count.
    assert "status: completed" in system.cli("run", "busy", "--wait", "--timeout", "60").stdout

    system.cli("routine", "enable", "busy")
    kick = await (await client.trigger_store()).get("kick")
    assert kick.status == "active"
    run_id = await client.fire_trigger("kick")
    finished = await client.wait(run_id, timeout=60)
    assert finished["status"] == "completed"
