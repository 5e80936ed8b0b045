"""deploy/observability: the alert rules pass promtool, and the dashboard and rules only ask
for series the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, generate_latest

from mainspring.runtime import metrics
from mainspring_services.runner.main import runner_gauges

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "mainspring.json"
# FastStream's message metrics, as its Prometheus middleware names them.
FASTSTREAM = {
    "faststream_received_messages",
    "faststream_received_messages_size_bytes",
    "faststream_received_messages_in_process",
    "faststream_received_processed_messages",
    "faststream_received_processed_messages_duration_seconds",
    "faststream_received_processed_messages_exceptions",
    "faststream_published_messages",
    "faststream_published_messages_duration_seconds",
    "faststream_published_messages_exceptions",
}


def exported_families() -> set[str]:
    """Every metric family a Mainspring service can serve."""
    assert metrics.RUNS  # the module's metrics are registered on import
    text = generate_latest(REGISTRY).decode()
    families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    runner = SimpleNamespace(
        settings=SimpleNamespace(runner_slots=2),
        admitted=set(),
        pool=SimpleNamespace(idle_count=lambda: 0, spare_count=lambda: 0),
    )
    families |= {name for name, *_ in runner_gauges(runner)}  # type: ignore[arg-type]
    return {family_of(f) for f in families} | FASTSTREAM


def family_of(series: str) -> str:
    return re.sub(r"_(bucket|count|sum|total)$", "", series)


def queried_series(text: str) -> set[str]:
    return set(re.findall(r"\b((?:mainspring|faststream)_[a-z_]+)\b", text))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_series_is_exported(source: str) -> None:
    text = (
        "\n".join(dashboard_expressions())
        if source == "dashboard"
        else (OBSERVABILITY / "alerts.yml").read_text()
    )
    known = exported_families()

    unknown = {s for s in queried_series(text) if family_of(s) not in known}

    assert queried_series(text)
    assert not unknown, f"{source} asks for series no service exports: {sorted(unknown)}"


def test_the_dashboard_panels_have_unique_ids_and_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = (OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yml").read_text()

    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"prometheus"}
    assert "uid: prometheus" in provisioned


@pytest.mark.parametrize(
    "command",
    [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
)
def test_promtool_accepts_the_rules_and_their_tests(command: list[str]) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "no promtool: `apt-get install prometheus` (.ci/run does)"

    result = subprocess.run(
        [promtool, *command], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
