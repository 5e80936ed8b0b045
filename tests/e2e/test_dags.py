"""DAGs of plain functions run as runs on the runners: node table, restart, replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from tests.e2e.test_web import fetch, read_page
from tests.e2e.test_web import web as web  # the fixture: the web service on a free port
from tests.harness import Deployment, copy_example, eventually, write_routine

pytestmark = pytest.mark.e2e

# A completion routine downstream of the market-summary DAG: a DAG run completes like any run.
ON_SUMMARY = """
from mainspring import Routine, on_workflow_success

class Announce(Routine):
    def run(self, done=on_workflow_success("pipelines:market_summary")):
        return {"upstream": done.run_id, "summary": done.outputs["summarize"]}
"""

# Fan-in by type (two int sources into list[int]), a typed chain, and a node that fails
# until a marker file exists. Each call is logged, so a restart can be shown not to rerun.
FAN_IN = """
import asyncio
from pathlib import Path

from mainspring.compose import Dag, Namespace

CALLS = Path({calls!r})
MARKER = Path({marker!r})


def called(name: str) -> None:
    with CALLS.open("a") as log:
        log.write(name + "\\n")


def one() -> int:
    called("one")
    return 1


async def two() -> int:
    called("two")
    await asyncio.sleep(0)
    return 2


def total(values: list[int], scale: float = 1.0) -> float:
    called("total")
    return sum(values) * scale


def report(amount: float) -> str:
    called("report")
    if not MARKER.exists():
        raise RuntimeError(f"no marker for {{amount}}")
    return f"total is {{amount}}"


ns = Namespace()
dag = Dag()
sink = dag.node(total)
dag.node(one) >> sink
dag.node(two) >> sink
sink >> dag.node(report)
ns.register(dag, nsref="pipelines:fan_in")
"""


def nodes_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The node table of a recorded DAG run by label."""
    return {node["label"]: node for node in run["dag"]["nodes"]}


async def test_the_market_summary_dag_runs_with_its_node_table_and_fires_completions(
    system: Deployment, client: Client, web: str, tmp_path: Path
) -> None:
    registered = system.cli("dag", "create", str(copy_example("market_summary", tmp_path)))
    assert "registered DAG pipelines:market_summary" in registered.stdout
    system.cli(
        "routine", "create", str(write_routine(tmp_path / "a", ON_SUMMARY)), "--name", "announce"
    )

    run = json.loads(
        system.cli("dag", "run", "pipelines:market_summary", "--wait", "--json").stdout
    )

    assert run["status"] == "completed"
    assert run["outputs"] == {"summarize": "Portfolio value: $325.00"}
    nodes = nodes_of(run)
    assert [n["status"] for n in nodes.values()] == ["completed", "completed"]
    assert nodes["fetch"]["output"] == {"AAPL": 185.0, "GOOG": 140.0}
    assert nodes["summarize"]["inputs"] == {"prices": {"AAPL": 185.0, "GOOG": 140.0}}
    assert nodes["summarize"]["output"] == "Portfolio value: $325.00"
    assert all(n["started_at"] and n["finished_at"] for n in nodes.values())
    assert run["dag"]["edges"] == [["fetch", "summarize"]]
    shown = system.cli("runs", "show", run["id"]).stdout
    assert "DAG pipelines:market_summary completed" in shown
    assert "edges: fetch >> summarize" in shown
    status, on_page = await fetch(web + "/api/runs/" + run["id"])
    assert status == 200
    assert [n["label"] for n in on_page["run"]["dag"]["nodes"]] == ["fetch", "summarize"]
    assert b"function nodeTable(dag)" in await asyncio.to_thread(read_page, web + "/")

    async def announced() -> dict[str, Any]:
        (found,) = await client.list_runs(_query("announce"))
        assert found["status"] == "completed"
        return found

    downstream = await eventually(announced, timeout=60)
    assert downstream["outputs"] == {
        "upstream": run["id"],
        "summary": "Portfolio value: $325.00",
    }

    by_sdk = await client.wait(await client.run_dag("pipelines:market_summary"), timeout=60)
    assert by_sdk["run_number"] == 2
    assert by_sdk["source"] == "api"

    unknown = system.cli("dag", "run", "pipelines:nope", check=False)
    assert unknown.returncode == 2
    assert "DAG 'pipelines:nope' is not registered" in unknown.stderr


def _query(routine: str) -> Any:
    from mainspring.contract.queries import RunQuery

    return RunQuery(routine=routine)


async def test_a_failing_node_is_a_failed_run_that_restarts_from_it_and_replays_chosen_nodes(
    system: Deployment, tmp_path: Path
) -> None:
    calls, marker = tmp_path / "calls.log", tmp_path / "marker"
    folder = write_routine(
        tmp_path / "fan_in",
        FAN_IN.format(calls=str(calls), marker=str(marker)),
        filename="pipeline.py",
    )
    system.cli("dag", "create", str(folder / "pipeline.py"))

    failed_run = system.cli("dag", "run", "pipelines:fan_in", "--wait", "--json", check=False)
    failed = json.loads(failed_run.stdout)
    assert failed_run.returncode == 1
    assert failed["status"] == "failed"
    assert failed["error"] == "node report failed: RuntimeError: no marker for 3.0"
    assert 'in report\n    raise RuntimeError(f"no marker for {amount}")' in failed["traceback"]
    nodes = nodes_of(failed)
    assert failed["dag"]["failed_node"] == "report"
    assert {label: n["status"] for label, n in nodes.items()} == {
        "total": "completed",
        "one": "completed",
        "two": "completed",
        "report": "failed",
    }
    # list[int] collected both int sources, whatever their order.
    assert sorted(nodes["total"]["inputs"]["values"]) == [1, 2]
    assert nodes["total"]["output"] == 3.0
    assert "RuntimeError: no marker for 3.0" in nodes["report"]["traceback"]
    assert sorted(calls.read_text().split()) == ["one", "report", "total", "two"]

    marker.touch()
    calls.write_text("")
    restarted = json.loads(system.cli("runs", "restart", failed["id"], "--wait", "--json").stdout)
    assert restarted["status"] == "completed"
    assert restarted["rerun_of"] == failed["id"]
    assert restarted["outputs"] == {"report": "total is 3.0"}
    assert restarted["dag"]["mode"] == "restart"
    assert restarted["dag"]["resumed_from"] == failed["id"]
    statuses = {label: n["status"] for label, n in nodes_of(restarted).items()}
    assert statuses == {
        "one": "skipped",
        "two": "skipped",
        "total": "skipped",
        "report": "completed",
    }
    assert calls.read_text().split() == ["report"]

    calls.write_text("")
    replayed = json.loads(
        system.cli("runs", "replay", restarted["id"], "--nodes", "total", "--wait", "--json").stdout
    )
    assert replayed["status"] == "completed"
    statuses = {label: n["status"] for label, n in nodes_of(replayed).items()}
    assert statuses == {
        "one": "skipped",
        "two": "skipped",
        "total": "completed",
        "report": "skipped",
    }
    assert calls.read_text().split() == ["total"]
    assert replayed["outputs"] == {"report": "total is 3.0"}

    not_failed = system.cli("runs", "restart", replayed["id"], check=False)
    assert not_failed.returncode == 2
    assert "is completed, not failed" in not_failed.stderr
    unknown_node = system.cli("runs", "replay", replayed["id"], "--nodes", "nope", check=False)
    assert "has no node 'nope'" in unknown_node.stderr


UNKEPT = """
import threading

from mainspring.compose import Dag, Namespace


class Handle:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.lock = threading.Lock()  # a lock cannot be pickled: the output is not kept


def open_handle(seed: int) -> Handle:
    return Handle(seed)


def use(handle: Handle) -> int:
    raise RuntimeError(f"cannot use handle {handle.seed}")


ns = Namespace()
dag = Dag()
dag.node(open_handle) >> dag.node(use)
ns.register(dag, nsref="pipelines:unkept")
"""


async def test_payload_reaches_the_source_and_a_restart_needing_an_unkept_output_is_refused(
    system: Deployment, tmp_path: Path
) -> None:
    system.cli("dag", "create", str(write_routine(tmp_path / "unkept", UNKEPT)))

    failed = json.loads(
        system.cli(
            "dag",
            "run",
            "pipelines:unkept",
            "--payload",
            '{"seed": 7}',
            "--wait",
            "--json",
            check=False,
        ).stdout
    )
    assert failed["status"] == "failed"
    assert failed["error"] == "node use failed: RuntimeError: cannot use handle 7"
    handle = nodes_of(failed)["open_handle"]
    assert handle["inputs"] == {"seed": 7}
    assert handle["output_kept"] == "none"
    assert "cannot be pickled" in handle["output_note"]

    refused = system.cli("runs", "restart", failed["id"], check=False)
    assert refused.returncode == 2
    assert (
        f"run {failed['id']}: the output of node open_handle was not kept (cannot be pickled"
        in refused.stderr
    )

    no_payload = json.loads(
        system.cli("dag", "run", "pipelines:unkept", "--wait", "--json", check=False).stdout
    )
    assert no_payload["status"] == "failed"
    assert "payload has no 'seed', which source node open_handle needs" in no_payload["error"]
