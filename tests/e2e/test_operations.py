"""Operations over one real system: a two-step chain's trace from the ticker to the routine's
own spans and the recorder, JSON log lines, each service's /healthz, /readyz and /metrics,
and the NATS service protocol. One system is shared by the module to keep it fast."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mainspring.apps.up import free_port, wait_for_port
from mainspring.base import tracing
from mainspring.client import Client
from mainspring.contract.queries import RunQuery
from mainspring_services.runner.queue_depth import measure_queue
from tests.harness import Deployment, deployment_context, eventually, write_routine

pytestmark = pytest.mark.e2e

TICK = """
from mainspring import Routine, on_schedule


class Tick(Routine):
    def run(self, tick=on_schedule(every="1s")) -> dict:
        with self.span("tick-work", rows=3):
            return {"rows": 3}
"""

AFTER = """
from mainspring import Routine, on_complete


class After(Routine):
    def run(self, done=on_complete("tick", status="completed")) -> dict:
        with self.span("after-work"):
            return {"seen": done.outputs["rows"]}
"""

SERVICES = ("recorder", "dispatcher", "ticker", "dataset_watcher", "runner")


@dataclass
class OpsSystem:
    """The running system, the HTTP port of each service and the finished downstream run."""

    deployment: Deployment
    ports: dict[str, int]
    after_run: dict[str, Any]

    @property
    def trace_dir(self) -> Path:
        return self.deployment.home / "traces"


async def first_completed(settings: Any, routine: str) -> dict[str, Any] | None:
    client = await Client.connect(settings)
    try:
        runs = await client.list_runs(RunQuery(routine=routine, limit=50))
    finally:
        await client.close()
    done = [r for r in runs if r["status"] == "completed"]
    return min(done, key=lambda r: r["run_number"]) if done else None


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsSystem]:
    """Every service with span files, JSON logs and an HTTP port; a tick → after chain run."""
    with deployment_context(tmp_path_factory.mktemp("ops"), "sqlite") as deployment:
        deployment.extra_env.update(
            {
                "MAINSPRING_TRACE_DIR": str(deployment.home / "traces"),
                "MAINSPRING_LOG_FORMAT": "json",
                "OTEL_TRACES_EXPORTER": "none",
                # Spans reach the files within a tenth of a second, not the SDK's 5 s.
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        )
        ports = {name: free_port() for name in SERVICES}
        for name in SERVICES:
            deployment.start(name, env={"MAINSPRING_HTTP_PORT": str(ports[name])})
        tmp = deployment.home.parent
        deployment.cli(
            "routine", "create", str(write_routine(tmp / "after", AFTER)), "--name", "after"
        )
        deployment.cli(
            "routine", "create", str(write_routine(tmp / "tick", TICK)), "--name", "tick"
        )
        try:
            after = asyncio.run(
                eventually(
                    lambda: first_completed(deployment.settings(), "after"),
                    timeout=60,
                    what="a completed run of `after`",
                )
            )
        except AssertionError:
            print(deployment.logs())
            raise
        # One chain is enough: stop the schedule so the machine is not kept busy.
        deployment.cli("routine", "disable", "tick")
        yield OpsSystem(deployment, ports, after)


def ancestry(spans: Mapping[str, Mapping[str, Any]], span_id: str) -> list[tuple[str, str]]:
    """(name, service) of a span and each of its parents, up to the root."""
    chain = []
    current: str | None = span_id
    while current is not None:
        found = spans[current]
        chain.append((str(found["name"]), str(found["service"]).removeprefix("mainspring-")))
        current = found.get("parent_id")
    return chain


async def stored_trace(trace_dir: Path, trace_id: str) -> dict[str, dict[str, Any]] | None:
    spans = {str(s["span_id"]): s for s in tracing.read_span_files(trace_dir, trace_id)}
    names = {s["name"] for s in spans.values()}
    wanted = {"after-work", "tick-work", "send schedule.fired", "process run.completed.*.*"}
    return spans if wanted <= names else None


async def test_a_two_step_chain_is_one_trace_from_the_tick_to_the_routines_own_spans(
    ops: OpsSystem,
) -> None:
    trace_id = ops.after_run["trace_id"]
    spans = await eventually(
        lambda: stored_trace(ops.trace_dir, trace_id), timeout=20, what="the chain's spans"
    )

    [after_work] = [s for s in spans.values() if s["name"] == "after-work"]
    assert ancestry(spans, after_work["span_id"]) == [
        ("after-work", "runner"),
        ("run", "runner"),
        ("execute", "runner"),
        ("process run.requested", "runner"),
        ("send run.requested", "dispatcher"),
        ("process run.completed.*.*", "dispatcher"),
        ("send run.completed.*.*", "runner"),
        ("process run.requested", "runner"),
        ("send run.requested", "dispatcher"),
        ("process schedule.fired", "dispatcher"),
        ("send schedule.fired", "ticker"),
    ]
    [tick_work] = [s for s in spans.values() if s["name"] == "tick-work"]
    assert tick_work["attributes"] == {"rows": 3}
    execute_ids = {s["span_id"] for s in spans.values() if s["name"] == "execute"}
    phases = sorted(
        s["name"] for s in spans.values() if s["parent_id"] in execute_ids and s["name"] != "run"
    )
    assert phases == ["cleanup", "cleanup", "setup", "setup"]
    recorded = [
        s
        for s in spans.values()
        if s["service"] == "mainspring-recorder" and s["name"] == "process run.completed.*.*"
    ]
    assert {spans[s["parent_id"]]["name"] for s in recorded} == {"send run.completed.*.*"}


async def test_spans_carry_the_messaging_conventions_without_run_ids_in_names(
    ops: OpsSystem,
) -> None:
    spans = await eventually(
        lambda: stored_trace(ops.trace_dir, ops.after_run["trace_id"]), timeout=20, what="spans"
    )
    [fired] = [s for s in spans.values() if s["name"] == "process schedule.fired"]
    sent = [s for s in spans.values() if s["name"] == "send run.completed.*.*"]

    assert fired["kind"] == "CONSUMER"
    assert fired["attributes"]["messaging.system"] == "nats"
    assert fired["attributes"]["messaging.operation.type"] == "process"
    assert fired["attributes"]["messaging.destination.name"] == "schedule.fired"
    assert {s["attributes"]["messaging.destination.template"] for s in sent} == {
        "run.completed.*.*"
    }
    assert {s["kind"] for s in sent} == {"PRODUCER"}
    assert not [s for s in spans.values() if ops.after_run["id"] in s["name"]]


async def test_runs_trace_prints_the_tree_with_durations(ops: OpsSystem) -> None:
    await eventually(
        lambda: stored_trace(ops.trace_dir, ops.after_run["trace_id"]), timeout=20, what="spans"
    )

    printed = ops.deployment.cli("runs", "trace", ops.after_run["id"]).stdout

    lines = printed.splitlines()
    assert lines[0].startswith(f"trace {ops.after_run['trace_id']}: ")
    assert lines[1].startswith("send schedule.fired  [ticker]  +0.0 ms  ")
    [user_line] = [line for line in lines if "after-work" in line]
    assert re.fullmatch(r" {20}after-work  \[runner\]  \+[\d.]+ ms  [\d.]+ ms", user_line)


def test_the_web_page_gets_the_chain_as_waterfall_rows(ops: OpsSystem) -> None:
    asyncio.run(
        eventually(
            lambda: stored_trace(ops.trace_dir, ops.after_run["trace_id"]), timeout=20, what="spans"
        )
    )
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "web", "--port", str(port)],
        env=ops.deployment.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        status, body = http_get(port, f"/api/runs/{ops.after_run['id']}/trace")
    finally:
        web.terminate()
        web.wait(timeout=10)

    rows = json.loads(body)["spans"]
    assert status == 200
    assert rows[0] == {**rows[0], "name": "send schedule.fired", "depth": 0, "offset_ms": 0.0}
    [user] = [r for r in rows if r["name"] == "after-work"]
    assert user["depth"] == 10
    assert user["service"] == "runner"
    assert all(r["offset_ms"] >= 0 and r["duration_ms"] >= 0 for r in rows)


def test_json_logs_are_one_object_a_line_naming_run_routine_and_trace(ops: OpsSystem) -> None:
    text = ops.deployment.services["runner"].log()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]

    finished = [
        r for r in records if r["run_id"] == ops.after_run["id"] and "completed" in r["message"]
    ]
    assert finished, text[-2000:]
    assert finished[0]["service"] == "runner"
    assert finished[0]["routine"] == "after"
    assert finished[0]["trace_id"] == ops.after_run["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", finished[0]["span_id"])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family scraped from a service, by their labels."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    }


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_alive_ready_and_scraped(ops: OpsSystem, service: str) -> None:
    port = ops.ports[service]

    assert http_get(port, "/healthz") == (200, "ok\n")
    assert http_get(port, "/readyz") == (200, "ready\n")
    received = samples(port, "faststream_received_messages_total")
    assert all(dict(labels)["app_name"] == f"mainspring-{service}" for labels in received)


def test_the_runner_counts_completed_runs_by_routine(ops: OpsSystem) -> None:
    runs = samples(ops.ports["runner"], "mainspring_runs_total")
    slots = samples(ops.ports["runner"], "mainspring_runner_slots")
    waits = samples(ops.ports["runner"], "mainspring_trigger_to_start_seconds_count")

    assert runs[(("routine", "after"), ("status", "completed"))] >= 1
    assert slots[(("state", "busy"),)] + slots[(("state", "free"),)] == 2
    assert waits[(("trigger", "completion"),)] >= 1
    assert samples(ops.ports["ticker"], "mainspring_ticker_lag_seconds_count")[()] >= 1


PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(ops: OpsSystem, tmp_path: Path) -> Iterator[int]:
    """Debian's Prometheus scraping every service each second; yields its HTTP port."""
    assert PROMETHEUS, "no prometheus binary: `apt-get install prometheus` (.ci/run does)"
    targets = [f"127.0.0.1:{port}" for port in ops.ports.values()]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "mainspring", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def promql(port: int, query: str) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query."""
    path = f"/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    status, body = await asyncio.to_thread(http_get, port, path)
    assert status == 200, body
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


async def test_prometheus_scrapes_every_service_and_counts_completed_runs(
    ops: OpsSystem, prometheus: int
) -> None:
    async def scraped_all() -> list[dict[str, Any]] | None:
        up = await promql(prometheus, "sum(up)")
        return up if up and float(up[0]["value"][1]) == len(SERVICES) else None

    await eventually(scraped_all, timeout=30, what="Prometheus to scrape every service")
    [completed] = await promql(
        prometheus, 'sum(mainspring_runs_total{routine="after", status="completed"})'
    )

    assert float(completed["value"][1]) >= 1


async def test_every_service_answers_the_nats_service_protocol(ops: OpsSystem) -> None:
    connection = await nats.connect(ops.deployment.nats.url)
    try:
        inbox = connection.new_inbox()
        replies = await connection.subscribe(inbox)
        await connection.publish("$SRV.PING", b"", reply=inbox)
        names: set[str] = set()
        while len(names) < len(SERVICES):
            message = await replies.next_msg(timeout=5)
            names.add(json.loads(message.data)["name"])
    finally:
        await connection.close()

    assert names == {f"mainspring-{s}" for s in SERVICES}


async def test_a_request_no_runner_takes_shows_in_the_queue_gauges(ops: OpsSystem) -> None:
    runner = ops.deployment.services["runner"].process
    assert runner is not None
    connection = await nats.connect(ops.deployment.nats.url)
    runner.send_signal(signal.SIGSTOP)  # frozen: it cannot take or finish the request
    try:
        ops.deployment.cli("run", "tick")
        js = connection.jetstream()

        async def measured() -> float | None:
            await measure_queue(js)
            return REGISTRY.get_sample_value("mainspring_run_queue_oldest_age_seconds")

        age = await eventually(measured, timeout=10, what="the request to wait")
    finally:
        runner.send_signal(signal.SIGCONT)
        await connection.close()

    assert 0 < age < 30
