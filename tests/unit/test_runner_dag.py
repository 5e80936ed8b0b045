"""DAG runs in a real runner worker (no NATS): node table over the control pipe, no
leftovers from the thread pool, and a table kept when the worker dies mid-run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mainspring.contract.messages import RequestRun
from mainspring_services.runner import core
from tests.messages import a_request
from tests.unit.test_runner_pool import Harness

PIPELINE = """
import asyncio
import os

from mainspring.compose import Dag, Namespace


def fetch() -> dict[str, float]:
    print("fetching")
    return {{"A": 1.5, "B": 2.5}}


async def count(prices: dict[str, float]) -> int:
    await asyncio.sleep(0)
    return len(prices)


def total(prices: dict[str, float]) -> float:
    {total_body}


def report(n: int, amount: float) -> str:
    return f"{{n}} prices, {{amount}} in all"


ns = Namespace()
dag = Dag()
source = dag.node(fetch)
sink = dag.node(report)
source >> dag.node(count) >> sink
source >> dag.node(total) >> sink
ns.register(dag, nsref="pipelines:prices")
"""


def _bundle(folder: Path, total_body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.py").write_text(PIPELINE.format(total_body=total_body))
    return folder


def _request(digest: str) -> RequestRun:
    return a_request(
        str(uuid.uuid4()),
        routine="pipelines:prices",
        routine_version=digest,
        entrypoint="pipeline.py:ns",
        event={"payload": {}},
        requested_at=datetime.now(UTC),
        kind="dag",
    )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp_path)
    yield made
    await made.close()


async def test_a_dag_runs_in_a_worker_reports_its_nodes_and_leaves_it_reusable(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "b", "return sum(prices.values())")

    outcome, worker, child = await harness.run(bundle, _request("d1"))
    again, same_worker, _ = await harness.run(bundle, _request("d1"))

    assert outcome.status == "completed", outcome
    assert outcome.outputs == {"report": "2 prices, 4.0 in all"}
    assert outcome.dag is not None
    assert {n["label"]: n["status"] for n in outcome.dag["nodes"]} == dict.fromkeys(
        ["fetch", "count", "total", "report"], "completed"
    )
    # The runner saw every node's last state on the control pipe, as the result holds it.
    assert child.dag is not None
    assert [n["status"] for n in child.dag["nodes"]] == ["completed"] * 4
    assert child.leftovers == [], "the DAG's thread pool is gone before the result"
    assert same_worker is worker
    assert again.status == "completed"
    assert child.log_path.read_text() == "fetching\n"


async def test_a_worker_dying_mid_dag_leaves_the_node_table_with_the_reason(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "b", "os._exit(3)")

    outcome, _, _ = await harness.run(bundle, _request("d2"))

    assert outcome.status == "failed"
    assert outcome.dag is not None
    nodes = {n["label"]: n for n in outcome.dag["nodes"]}
    assert nodes["fetch"]["status"] == "completed"
    assert nodes["total"]["status"] == "failed"
    assert nodes["total"]["error"] == core.describe_exit(3)
    assert nodes["report"]["status"] == "pending"
    assert outcome.dag["status"] == "failed"
