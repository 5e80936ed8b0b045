"""Embedded mode end to end: lythonic's "Scheduled Triggers" tutorial, its imports changed
and `mainspring.embedded` in place of the TriggerManager, runs as a script of its own on a
real nats-server and the services it starts, and leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# The tutorial's code. Changed: the imports (mainspring for lythonic), the manager's
# construction (`mainspring.embedded` for TriggerStore + TriggerManager, so its calls are
# awaited inside `async with`), check_queue's source of messages (a file the test writes),
# `asyncio.run(main())` under the __main__ guard (runners import this module), and what
# main() does while the system runs: the checks below, written to RESULT as JSON.
TUTORIAL = '''
import asyncio
import json
import os
import sys
from pathlib import Path

import mainspring
from mainspring.compose import Dag, DagProvenance, Namespace


async def fetch_prices() -> dict[str, float]:
    """Simulate fetching latest prices."""
    return {"AAPL": 185.0, "GOOG": 140.0}

async def summarize(prices: dict[str, float]) -> str:
    total = sum(prices.values())
    return f"Portfolio value: ${total:.2f}"

ns = Namespace()
ns.register(fetch_prices, nsref="market:fetch")
ns.register(summarize, nsref="market:summarize")

dag = Dag()
dag.node(ns.get("market:fetch")) >> dag.node(ns.get("market:summarize"))

ns.register(dag, nsref="pipelines:market_summary")

ns.register_trigger(
    name="hourly_market",
    dag_nsref="pipelines:market_summary",
    trigger_type="poll",
    schedule="0 * * * *",
)


def process_order(message: str) -> str:
    return f"processed {message}"

ns.register(process_order, nsref="orders:process")
orders = Dag()
orders.node(ns.get("orders:process"))
ns.register(orders, nsref="pipelines:process_order")


def check_queue() -> dict[str, str] | None:
    """Check for new messages. Returns payload or None."""
    queue = Path(os.environ["TUTORIAL_QUEUE"])
    has_messages = queue.exists()
    return {"message": queue.read_text()} if has_messages else None

ns.register_trigger(
    name="queue_check",
    dag_nsref="pipelines:process_order",
    trigger_type="poll",
    poll_fn=check_queue,
    schedule="*/10 * * * * *",  # every 10 seconds
)


async def events_until(manager, name, status, timeout_s=35.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        events = await manager.get_events(name)
        if any(e["status"] == status for e in events) or loop.time() > deadline:
            return events
        await asyncio.sleep(0.5)


async def main(result_path, home, provenance_db, queue):
    result = {}
    provenance = DagProvenance(provenance_db)
    async with mainspring.embedded(namespace=ns, home=home, provenance=provenance) as manager:
        await manager.activate("hourly_market")
        run_id = await manager.fire("hourly_market")
        result["fired_run_id"] = run_id
        result["run"] = await manager.wait(run_id, timeout=60)
        result["events"] = await manager.get_events("hourly_market")

        await manager.deactivate("hourly_market")
        try:
            await manager.fire("hourly_market")
        except Exception as exc:
            result["fire_while_inactive"] = str(exc)
        result["events_while_inactive"] = await manager.get_events("hourly_market")
        await manager.activate("hourly_market")
        result["events_after_reactivation"] = await manager.get_events("hourly_market")
        result["last_run_id"] = (await manager.client.trigger_info("hourly_market"))["last_run_id"]

        await manager.activate("queue_check")
        manager.start()
        await events_until(manager, "queue_check", "skipped")
        Path(queue).write_text("new order")
        events = await events_until(manager, "queue_check", "fired")
        manager.stop()
        result["queue_events"] = events
        fired = [e for e in events if e["status"] == "fired"]
        if fired:
            result["order_run"] = await manager.wait(fired[0]["run_id"], timeout=60)

    # Registering the namespace again (a second start on the same home) keeps activation
    # and last run.
    async with mainspring.embedded(namespace=ns, home=home, provenance=provenance) as manager:
        result["reregistered"] = await manager.client.trigger_info("hourly_market")

    async with mainspring.embedded(namespace=ns, home=home + "-null", provenance=None) as manager:
        await manager.activate("hourly_market")
        run_id = await manager.fire("hourly_market")
        events = await events_until(manager, "hourly_market", "fired")
        await asyncio.sleep(3)  # the run's own events reach the recorder meanwhile
        result["null_run_id"] = run_id
        result["null_events"] = events
        result["null_run"] = await manager.get_run(run_id)
        result["null_runs"] = await manager.client.list_runs()
    Path(result_path).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
'''


def processes_left_by(pid: int, homes: list[Path]) -> list[str]:
    """Processes an embedded system of process `pid` started that still run."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        marked = f"MAINSPRING_EMBEDDED_BY={pid}".encode() in environ
        if marked or any(str(home) in command for home in homes):
            left.append(f"{entry.name}: {command[:120]}")
    return left


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the tutorial script once; its results, and what it left running."""
    root = tmp_path_factory.mktemp("tutorial")
    code = root / "code"
    code.mkdir()
    (code / "tutorial.py").write_text(TUTORIAL)
    home = root / "home"
    result = root / "result.json"
    queue = root / "queue.txt"
    environ = {**os.environ, "TUTORIAL_QUEUE": str(queue)}
    command = [sys.executable, str(code / "tutorial.py")]
    arguments = [str(result), str(home), str(root / "provenance.db"), str(queue)]
    process = subprocess.Popen([*command, *arguments], cwd=code, env=environ)
    try:
        returncode = process.wait(timeout=220)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == 0, f"the tutorial failed; see {home / 'logs'}"
    found: dict[str, Any] = json.loads(result.read_text())
    found["left_running"] = processes_left_by(process.pid, [home, Path(f"{home}-null")])
    return found


def test_firing_the_hourly_trigger_runs_the_dag_with_its_node_table(
    tutorial: dict[str, Any],
) -> None:
    run = tutorial["run"]
    assert run["status"] == "completed"
    assert run["source"] == "trigger"
    assert run["outputs"] == {"summarize": "Portfolio value: $325.00"}
    nodes = {node["label"]: node for node in run["dag"]["nodes"]}
    assert list(nodes) == ["fetch", "summarize"]
    assert nodes["fetch"]["output"] == {"AAPL": 185.0, "GOOG": 140.0}
    assert nodes["summarize"]["output"] == "Portfolio value: $325.00"
    assert all(node["status"] == "completed" for node in nodes.values())


def test_the_trigger_history_shows_the_firing_and_survives_deactivation(
    tutorial: dict[str, Any],
) -> None:
    (event,) = tutorial["events"]
    assert (event["status"], event["run_id"], event["payload"]) == (
        "fired",
        tutorial["fired_run_id"],
        {},
    )
    assert event["fired_at"]
    assert "inactive" in tutorial["fire_while_inactive"]
    assert tutorial["events_while_inactive"] == tutorial["events"]
    assert tutorial["events_after_reactivation"] == tutorial["events"]
    assert tutorial["last_run_id"] == tutorial["fired_run_id"]


def test_registering_again_keeps_activation_and_last_run(tutorial: dict[str, Any]) -> None:
    again = tutorial["reregistered"]
    assert (again["status"], again["last_run_id"]) == ("active", tutorial["fired_run_id"])
    assert (again["type"], again["cron"], again["target"]) == (
        "poll",
        "0 * * * *",
        "pipelines:market_summary",
    )


def test_the_poll_trigger_skips_on_none_and_fires_with_the_poll_payload(
    tutorial: dict[str, Any],
) -> None:
    events = tutorial["queue_events"]
    statuses = [e["status"] for e in events]
    assert "skipped" in statuses
    assert "fired" in statuses
    fired = next(e for e in events if e["status"] == "fired")
    assert fired["payload"] == {"message": "new order"}
    assert tutorial["order_run"]["status"] == "completed"
    assert tutorial["order_run"]["outputs"] == {"process": "processed new order"}


def test_without_provenance_no_run_is_recorded_but_events_are(tutorial: dict[str, Any]) -> None:
    fired = [e for e in tutorial["null_events"] if e["status"] == "fired"]
    assert [e["run_id"] for e in fired] == [tutorial["null_run_id"]]
    assert tutorial["null_run"] is None
    assert tutorial["null_runs"] == []


def test_leaving_the_block_leaves_no_process_behind(tutorial: dict[str, Any]) -> None:
    assert tutorial["left_running"] == []
