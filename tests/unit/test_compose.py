"""mainspring.compose: registration, binding by type annotation, checks, execution."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mainspring.compose import Dag, GraphError, Namespace
from mainspring.contract.messages import DagNodeRecord, DagRecord
from mainspring.runtime.dag_executor import DagExecutor, run_dag
from mainspring.runtime.dag_outputs import ArtifactOutputs, InlineOutputs
from mainspring.runtime.dag_resume import KeptValue, ResumeRefused, plan_replay, plan_restart


async def fetch_prices() -> dict[str, float]:
    return {"AAPL": 185.0, "GOOG": 140.0}


async def summarize(prices: dict[str, float]) -> str:
    total = sum(prices.values())
    return f"Portfolio value: ${total:.2f}"


def market_namespace() -> tuple[Namespace, Dag]:
    ns = Namespace()
    ns.register(fetch_prices, nsref="market:fetch")
    ns.register(summarize, nsref="market:summarize")
    dag = Dag()
    dag.node(ns.get("market:fetch")) >> dag.node(ns.get("market:summarize"))
    ns.register(dag, nsref="pipelines:market_summary")
    return ns, dag


def test_the_tutorial_pipeline_binds_by_type_and_outputs_its_sink() -> None:
    _, dag = market_namespace()
    run = run_dag(dag)
    assert run.record.status == "completed"
    assert run.record.outputs == {"summarize": "Portfolio value: $325.00"}
    summary = run.record.node("summarize")
    assert summary is not None
    assert summary.inputs == {"prices": {"AAPL": 185.0, "GOOG": 140.0}}
    assert run.record.edges == [("fetch", "summarize")]
    assert [n.status for n in run.record.nodes] == ["completed", "completed"]


def test_binding_ignores_parameter_names() -> None:
    def numbers() -> list[int]:
        return [1, 2, 3]

    def total(whatever_name: list[int]) -> int:
        return sum(whatever_name)

    dag = Dag()
    dag.node(numbers) >> dag.node(total)
    Namespace().register(dag, nsref="x:total")
    assert run_dag(dag).values == {"total": 6}


def test_a_list_parameter_collects_every_upstream_of_its_item_type() -> None:
    def one() -> int:
        return 1

    async def two() -> int:
        return 2

    def label() -> str:
        return "sum"

    def gather(values: list[int], name: str) -> str:
        return f"{name}={sum(values)}"

    dag = Dag()
    sink = dag.node(gather)
    dag.node(one) >> sink
    dag.node(two) >> sink
    dag.node(label) >> sink
    Namespace().register(dag, nsref="x:fan_in")
    run = run_dag(dag)
    assert run.values == {"gather": "sum=3"}
    gathered = run.record.node("gather")
    assert gathered is not None
    assert gathered.inputs == {"values": [1, 2], "name": "sum"}


def test_payload_reaches_source_nodes_by_name() -> None:
    def greet(name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    def shout(text: str) -> str:
        return text.upper()

    dag = Dag()
    dag.node(greet) >> dag.node(shout)
    Namespace().register(dag, nsref="x:greet")

    async def go() -> object:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            return await DagExecutor(pool).run(dag, {"name": "Oslo"})

    run = asyncio.run(go())
    assert getattr(run, "values", None) == {"shout": "HELLO OSLO!"}


def test_a_missing_payload_key_fails_the_run_naming_key_and_node() -> None:
    def greet(name: str) -> str:
        return name

    dag = Dag()
    dag.node(greet)
    Namespace().register(dag, nsref="x:greet")
    record = run_dag(dag).record
    assert record.status == "failed"
    assert record.failed_node == "greet"
    node = record.node("greet")
    assert node is not None
    assert "payload has no 'name'" in (node.error or "")


def test_a_failing_node_is_a_result_with_its_traceback_and_the_rest_pending() -> None:
    def fetch() -> dict[str, float]:
        return {"A": 1.0}

    def explode(prices: dict[str, float]) -> str:
        raise RuntimeError(f"bad prices {prices}")

    def publish(text: str) -> None:
        print(text)

    dag = Dag()
    dag.node(fetch) >> dag.node(explode) >> dag.node(publish)
    Namespace().register(dag, nsref="x:explode")
    record = run_dag(dag).record
    assert record.status == "failed"
    assert record.failed_node == "explode"
    failed = record.node("explode")
    assert failed is not None
    assert failed.error == "RuntimeError: bad prices {'A': 1.0}"
    assert "in explode" in (failed.traceback or "")
    assert [n.status for n in record.nodes] == ["completed", "failed", "pending"]
    assert record.outputs == {}


def test_independent_sync_nodes_run_at_the_same_time() -> None:
    def slow_a() -> int:
        time.sleep(0.4)
        return 1

    def slow_b() -> str:
        time.sleep(0.4)
        return "b"

    dag = Dag()
    dag.node(slow_a)
    dag.node(slow_b)
    Namespace().register(dag, nsref="x:parallel")
    started = time.monotonic()
    assert run_dag(dag).values == {"slow_a": 1, "slow_b": "b"}
    assert time.monotonic() - started < 0.75


def test_map_runs_a_sub_dag_per_item_of_a_list_or_dict() -> None:
    def double(n: int) -> int:
        return n * 2

    per_item = Dag()
    per_item.node(double)
    ns = Namespace()
    ns.register(per_item, nsref="x:double")

    def numbers() -> list[int]:
        return [1, 2, 3]

    def by_name() -> dict[str, int]:
        return {"a": 1, "b": 5}

    def total(values: list[int]) -> int:
        return sum(values)

    dag = Dag()
    dag.node(numbers) >> dag.map(ns.get("x:double"), label="doubled") >> dag.node(total)
    named = Dag()
    named.node(by_name) >> named.map(per_item, label="doubled")
    ns.register(dag, nsref="x:map_list")
    ns.register(named, nsref="x:map_dict")
    assert run_dag(dag).values == {"total": 12}
    assert run_dag(named).values == {"doubled": {"a": 2, "b": 10}}


def test_a_sub_dag_node_takes_inputs_by_type_and_returns_its_sink() -> None:
    def parse(raw: str) -> list[int]:
        return [int(x) for x in raw.split(",")]

    def biggest(values: list[int]) -> int:
        return max(values)

    inner = Dag()
    inner.node(parse) >> inner.node(biggest)
    ns = Namespace()
    ns.register(inner, nsref="x:inner")

    def raw() -> str:
        return "3,9,4"

    def report(n: int) -> str:
        return f"max {n}"

    outer = Dag()
    outer.node(raw) >> outer.node(ns.get("x:inner")) >> outer.node(report)
    ns.register(outer, nsref="x:outer")
    assert run_dag(outer).values == {"report": "max 9"}


def test_a_failing_map_item_names_the_item_and_the_inner_node() -> None:
    def check(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    per_item = Dag()
    per_item.node(check)
    Namespace().register(per_item, nsref="x:check")

    def numbers() -> list[int]:
        return [1, 2]

    dag = Dag()
    dag.node(numbers) >> dag.map(per_item, label="checked")
    Namespace().register(dag, nsref="x:checks")
    record = run_dag(dag).record
    assert record.failed_node == "checked"
    node = record.node("checked")
    assert node is not None
    assert node.error == "sub-DAG x:check failed at node check: ValueError: two"
    assert "raise ValueError" in (node.traceback or "")


# --- registration and checks ---------------------------------------------------------------


def test_namespace_refuses_duplicates_and_names_missing_nsrefs() -> None:
    ns = Namespace()
    ns.register(fetch_prices, nsref="market:fetch")
    with pytest.raises(ValueError, match="already registered"):
        ns.register(summarize, nsref="market:fetch")
    with pytest.raises(KeyError, match="market:nope"):
        ns.get("market:nope")
    with pytest.raises(ValueError, match="not 'namespace:name'"):
        ns.register(summarize, nsref="market summary")
    dag = Dag()
    dag.node(fetch_prices)
    with pytest.raises(ValueError, match="label 'fetch_prices' is already in this DAG"):
        dag.node(fetch_prices)


def test_a_cycle_is_refused_at_registration_naming_it() -> None:
    def a(x: str) -> int:
        return 1

    def b(y: int) -> str:
        return ""

    dag = Dag()
    na, nb = dag.node(a), dag.node(b)
    na >> nb >> na
    with pytest.raises(GraphError, match=r"cycle (a >> b >> a|b >> a >> b).*remove one"):
        Namespace().register(dag, nsref="x:cycle")


def test_a_parameter_no_upstream_fills_is_refused_naming_node_and_type() -> None:
    _, _ = market_namespace()

    def wrong(prices: dict[str, int]) -> str:
        return ""

    dag = Dag()
    dag.node(fetch_prices) >> dag.node(wrong)
    with pytest.raises(GraphError) as caught:
        Namespace().register(dag, nsref="x:wrong")
    message = str(caught.value)
    assert "node wrong: no upstream fills parameter prices: dict[str, int]" in message
    assert "fetch_prices -> dict[str, float]" in message


def test_an_edge_to_another_dags_node_is_refused() -> None:
    first, second = Dag(), Dag()
    source = first.node(fetch_prices)
    source >> second.node(summarize)
    with pytest.raises(GraphError, match="reaches node summarize of another DAG"):
        Namespace().register(first, nsref="x:first")


def test_two_upstreams_of_one_type_for_a_plain_parameter_are_ambiguous() -> None:
    def one() -> int:
        return 1

    def two() -> int:
        return 2

    def use(n: int) -> int:
        return n

    dag = Dag()
    sink = dag.node(use)
    dag.node(one) >> sink
    dag.node(two) >> sink
    with pytest.raises(GraphError, match=r"could come from one, two.*list\[int\]"):
        Namespace().register(dag, nsref="x:ambiguous")


# --- kept outputs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float


def test_outputs_are_kept_as_json_else_as_a_pickled_artifact_else_not(tmp_path: Path) -> None:
    store = ArtifactOutputs(str(tmp_path), "run-1", cap_bytes=10_000)
    assert store.keep("a", {"x": [1, 2]}).kept == "json"
    kept = store.keep("b", Quote("A", 1.0))
    assert kept.kept == "artifact"
    assert kept.uri is not None
    assert store.load(kept.uri) == Quote("A", 1.0)
    too_big = store.keep("c", b"x" * 20_000)
    assert too_big.kept == "none"
    assert "over the 10000-byte cap" in (too_big.note or "")
    assert InlineOutputs().keep("d", (1, 2)).kept == "none"  # a tuple comes back a list


# --- restart and replay planning -----------------------------------------------------------


def _record(*nodes: DagNodeRecord, edges: list[tuple[str, str]]) -> DagRecord:
    return DagRecord(nsref="x:p", status="failed", nodes=list(nodes), edges=edges)


def test_restart_reruns_the_failed_and_pending_nodes_and_reuses_kept_outputs() -> None:
    record = _record(
        DagNodeRecord(label="fetch", status="completed", output_kept="json", output={"A": 1.0}),
        DagNodeRecord(label="summarize", status="failed"),
        DagNodeRecord(label="publish", status="pending"),
        edges=[("fetch", "summarize"), ("summarize", "publish")],
    )
    spec = plan_restart(record, "r1", "failed")
    assert spec.rerun == ["publish", "summarize"]
    assert spec.reuse == {"fetch": KeptValue(json_value={"A": 1.0})}


def test_restart_is_refused_when_a_needed_output_was_not_kept() -> None:
    record = _record(
        DagNodeRecord(label="fetch", status="completed", output_kept="none", output_note="huge"),
        DagNodeRecord(label="summarize", status="failed"),
        edges=[("fetch", "summarize")],
    )
    with pytest.raises(ResumeRefused, match=r"output of node fetch was not kept \(huge\)"):
        plan_restart(record, "r1", "failed")
    with pytest.raises(ResumeRefused, match="is completed, not failed"):
        plan_restart(record, "r1", "completed")


def test_replay_reruns_only_the_chosen_nodes() -> None:
    record = _record(
        DagNodeRecord(label="fetch", status="completed", output_kept="json", output={"A": 1.0}),
        DagNodeRecord(label="summarize", status="completed", output_kept="json", output="s"),
        edges=[("fetch", "summarize")],
    )
    spec = plan_replay(record, "r1", ["summarize"])
    assert spec.rerun == ["summarize"]
    assert set(spec.reuse) == {"fetch"}
    with pytest.raises(ResumeRefused, match="has no node 'nope': choose among fetch, summarize"):
        plan_replay(record, "r1", ["nope"])


def test_a_replay_skips_reused_nodes_and_runs_the_chosen_ones() -> None:
    calls: list[str] = []

    def fetch() -> dict[str, float]:
        calls.append("fetch")
        return {"A": 2.0}

    def summarize(prices: dict[str, float]) -> str:
        calls.append("summarize")
        return f"total {sum(prices.values())}"

    dag = Dag()
    dag.node(fetch) >> dag.node(summarize)
    Namespace().register(dag, nsref="x:replay")

    async def replay() -> DagRecord:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            run = await DagExecutor(pool).run(
                dag, {}, reuse={"fetch": {"A": 5.0}}, mode="replay", resumed_from="r1"
            )
        return run.record

    record = asyncio.run(replay())
    assert calls == ["summarize"]
    assert [n.status for n in record.nodes] == ["skipped", "completed"]
    assert record.outputs == {"summarize": "total 5.0"}


def test_inline_outputs_of_one_run_share_a_budget_then_go_to_the_artifact_store(
    tmp_path: Path,
) -> None:
    store = ArtifactOutputs(str(tmp_path), "run-2")
    store.budget_bytes = 30
    assert store.keep("a", "x" * 20).kept == "json"
    assert store.keep("b", "y" * 20).kept == "artifact"


def test_independent_async_nodes_run_at_the_same_time_on_one_loop() -> None:
    async def slow_a() -> int:
        await asyncio.sleep(0.4)
        return 1

    async def slow_b() -> str:
        await asyncio.sleep(0.4)
        return "b"

    def join(a: int, b: str) -> str:
        return f"{a}{b}"

    dag = Dag()
    sink = dag.node(join)
    dag.node(slow_a) >> sink
    dag.node(slow_b) >> sink
    Namespace().register(dag, nsref="x:async_parallel")
    started = time.monotonic()
    assert run_dag(dag).values == {"join": "1b"}
    assert time.monotonic() - started < 0.75
