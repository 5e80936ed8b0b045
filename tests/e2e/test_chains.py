"""Chains of runs over real JetStream: completion triggers, loop and crash-loop protection,
external workflows, one trace per chain, and exactly-once fan-out across a dispatcher kill."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from mainspring.base import tracing
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.queries import RunQuery
from tests.harness import (
    Deployment,
    consumer_idle,
    eventually,
    kill_holding,
    parked_reason,
    write_routine,
)

pytestmark = pytest.mark.e2e

EXTRACT = """
import pyarrow as pa
from mainspring import Routine, on_schedule


class Extract(Routine):
    def run(self, tick=on_schedule(every="1d"), rows: int = 3) -> dict:
        self.save_artifact("rows", pa.table({"x": list(range(rows))}))
        return {"count": rows, "stage": "extract"}
"""

TRANSFORM = """
import pyarrow.parquet as pq
from mainspring import Routine, on_workflow_success


class Transform(Routine):
    def run(self, done=on_workflow_success("extract")) -> dict:
        [artifact] = done.artifacts
        return {
            "count": done.outputs["count"] * 10,
            "artifact_rows": pq.read_table(artifact["uri"]).num_rows,
            "upstream": f"{done.routine}#{done.run_number}:{done.status}",
            "hop": self.run_info.hop,
        }
"""

LOAD = """
from mainspring import Routine, on_complete


class Load(Routine):
    def run(self, done=on_complete("transform", status="completed")) -> dict:
        return {"count": done.outputs["count"] + 1, "upstream_run": done.run_id}
"""


def register(deployment: Deployment, tmp_path: Path, name: str, source: str) -> None:
    folder = write_routine(tmp_path / name, source)
    deployment.cli("routine", "create", str(folder), "--name", name)


async def runs_of(client: Client, routine: str) -> list[dict[str, Any]]:
    return await client.list_runs(RunQuery(routine=routine, limit=500))


async def finished_runs(client: Client, routine: str, count: int) -> list[dict[str, Any]]:
    runs = await runs_of(client, routine)
    done = [r for r in runs if r["status"] in ("completed", "failed", "cancelled")]
    return done if len(done) >= count else []


async def trace_ids_on_the_bus(client: Client) -> dict[str, str | None]:
    """Subject -> trace id of every message stored in the stream (one per subject, or a clash)."""
    info = await client.js.stream_info(subjects.STREAM)
    found: dict[str, set[str | None]] = {}
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        stored = await client.js.get_msg(subjects.STREAM, sequence)
        headers = stored.headers or {}
        found.setdefault(stored.subject or "", set()).add(tracing.trace_id_of(headers))
    return {
        subject: ids.pop() if len(ids) == 1 else f"{len(ids)} traces"
        for subject, ids in found.items()
    }


async def stored_count(client: Client, subject: str) -> int:
    """Messages stored on a subject, or on every subject a wildcard filter matches."""
    info = await client.js.stream_info(subjects.STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


@pytest.mark.parametrize(
    "deployment", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_three_step_chain_passes_outputs_along_in_one_trace(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    register(system, tmp_path, "extract", EXTRACT)
    register(system, tmp_path, "transform", TRANSFORM)
    register(system, tmp_path, "load", LOAD)

    system.cli("run", "extract", "--input", "rows=4", "--wait", "--timeout", "60")

    [load] = await eventually(
        lambda: finished_runs(client, "load", 1), timeout=90, what="the load run"
    )
    [extract] = await runs_of(client, "extract")
    [transform] = await runs_of(client, "transform")
    assert [r["status"] for r in (extract, transform, load)] == ["completed"] * 3
    assert transform["outputs"] == {
        "count": 40,
        "artifact_rows": 4,
        "upstream": "extract#1:completed",
        "hop": 1,
    }
    assert load["outputs"] == {"count": 41, "upstream_run": transform["id"]}
    assert (extract["hop"], transform["hop"], load["hop"]) == (0, 1, 2)
    assert transform["parent_run_id"] == extract["id"]
    assert load["parent_run_id"] == transform["id"]
    assert transform["trigger_kind"] == "completion"
    assert transform["source"] == "trigger"
    trace_ids = {extract["trace_id"], transform["trace_id"], load["trace_id"]}
    assert len(trace_ids) == 1
    assert len(next(iter(trace_ids)) or "") == 32
    # Every message of the chain, in every service, carries that one trace.
    await eventually(
        functools.partial(consumer_idle, client.js, "recorder-runs"), what="recorder idle"
    )
    carried = await trace_ids_on_the_bus(client)
    completions = {f"run.completed.{name}.completed" for name in ("extract", "transform", "load")}
    # run.started only for a run still going after a short delay: these may all be quicker.
    assert {"run.submitted", "run.requested", *completions} <= set(carried)
    assert set(carried.values()) == {trace_ids.pop()}

    shown = system.cli("runs", "show", transform["id"]).stdout
    assert f"parent: extract #1 completed (schedule) {extract['id']}" in shown
    assert f"children: load #1 completed (completion) {load['id']}" in shown
    chain = json.loads(system.cli("runs", "list", "--chain", load["id"], "--json").stdout)
    assert sorted(r["routine"] for r in chain) == ["extract", "load", "transform"]
    events = json.loads(system.cli("routine", "events", "load", "--json").stdout)
    assert [(e["status"], e["run_id"]) for e in events] == [("fired", load["id"])]
    assert events[0]["chain"] == [f"extract:{extract['id']}", f"transform:{transform['id']}"]


async def test_self_triggering_routine_stops_at_max_hops_with_the_reason(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    # A run by hand takes the event of a finished upstream run: a first version of echo,
    # started on a schedule, leaves one.
    register(system, tmp_path / "seed", "echo", TICK.replace("Tick", "Echo"))
    system.cli("run", "echo", "--wait", "--timeout", "60")
    register(
        system,
        tmp_path,
        "echo",
        (
            "from mainspring import Routine, on_workflow_success\n"
            "class Echo(Routine):\n"
            "    max_hops = 3\n"
            "    def run(self, done=on_workflow_success('echo')) -> dict:\n"
            "        return {'hop': self.run_info.hop}\n"
        ),
    )

    system.cli("run", "echo", "--wait", "--timeout", "60")

    async def blocked() -> list[dict[str, Any]]:
        events = await client.trigger_events("echo")
        return [e for e in events if e["status"] == "loop_blocked"]

    [event] = await eventually(blocked, timeout=90, what="the loop to be blocked")
    runs = await runs_of(client, "echo")
    # The seed run and the run by hand start chains (hop 0); the second loops to hop 3.
    assert sorted(r["hop"] for r in runs) == [0, 0, 1, 2, 3]
    assert all(r["status"] == "completed" for r in runs)
    last = next(r for r in runs if r["hop"] == 3)
    assert "hop 4 exceeds max_hops 3" in event["reason"]
    assert len(event["chain"]) == 4
    assert event["chain"][-1] == f"echo:{last['id']}"
    assert await consumer_idle(client.js, "dispatcher-completed")
    assert len(await runs_of(client, "echo")) == 5
    listed = system.cli("routine", "events", "echo").stdout
    assert "loop_blocked" in listed
    assert "exceeds max_hops 3" in listed


BROKEN = """
import os

from mainspring import Routine, on_workflow_success

if "MAINSPRING_CONTROL_FD" in os.environ:
    # Importable where it is registered, missing where it runs: a classic deployment bug.
    import a_dependency_missing_on_the_runner  # noqa: F401


class Broken(Routine):
    def run(self, done=on_workflow_success("tick")) -> dict:
        return {"fixed": False}
"""

FIXED = """
from mainspring import Routine, on_workflow_success


class Broken(Routine):
    def run(self, done=on_workflow_success("tick")) -> dict:
        return {"fixed": True, "after": done.run_id}
"""

TICK = """
from mainspring import Routine, on_schedule


class Tick(Routine):
    def run(self, tick=on_schedule(every="1d")) -> dict:
        return {}
"""


async def test_crash_looping_routine_is_disabled_then_rearmed_by_an_update(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env["MAINSPRING_CRASH_LOOP_THRESHOLD"] = "3"
    deployment.start_all()
    register(deployment, tmp_path, "tick", TICK)
    register(deployment, tmp_path, "broken", BROKEN)

    # A failed manual run is not counted: the person who started it sees the error. (Run by
    # hand, it takes the event of a tick run, made while its trigger was off.)
    deployment.cli("routine", "disable", "broken")
    deployment.cli("run", "tick", "--wait", "--timeout", "60")
    deployment.cli("routine", "enable", "broken")
    manual = deployment.cli("run", "broken", "--wait", "--timeout", "60", check=False)
    assert "a_dependency_missing_on_the_runner" in manual.stdout
    for count in (1, 2):
        deployment.cli("run", "tick", "--wait", "--timeout", "60")
        await eventually(functools.partial(finished_runs, client, "broken", count + 1), timeout=60)
    await eventually(
        functools.partial(consumer_idle, client.js, "dispatcher-completed"), what="dispatcher idle"
    )
    assert (await (await client.store()).get("broken")).enabled

    deployment.cli("run", "tick", "--wait", "--timeout", "60")

    async def disabled() -> Any:
        definition = await (await client.store()).get("broken")
        return None if definition.enabled else definition

    definition = await eventually(disabled, timeout=60, what="the trigger to be disabled")
    assert definition.disabled_reason.startswith("crash loop: 3 triggered runs in a row")
    assert "a_dependency_missing_on_the_runner" in definition.disabled_reason
    shown = deployment.cli("routine", "show", "broken")
    assert json.loads(shown.stdout)["enabled"] is False
    assert "trigger disabled: crash loop" in shown.stderr
    failed = await runs_of(client, "broken")
    assert len(failed) == 4
    assert all(r["status"] == "failed" for r in failed)
    events = await client.trigger_events("broken")
    assert [e["status"] for e in events].count("disabled") == 1

    # While disabled, completions upstream are skipped with the reason, not run.
    deployment.cli("run", "tick", "--wait", "--timeout", "60")

    async def skipped() -> list[dict[str, Any]]:
        events = await client.trigger_events("broken")
        return [
            e for e in events if "crash loop" in (e["reason"] or "") and e["status"] == "skipped"
        ]

    [skip] = await eventually(skipped, timeout=60, what="a skipped firing")
    assert skip["reason"].startswith("trigger disabled: crash loop")
    assert len(await runs_of(client, "broken")) == 4

    # `routine enable` re-arms: one more start failure does not disable it again at once.
    deployment.cli("routine", "enable", "broken")
    deployment.cli("run", "tick", "--wait", "--timeout", "60")
    await eventually(lambda: finished_runs(client, "broken", 5), timeout=60)
    await eventually(
        functools.partial(consumer_idle, client.js, "dispatcher-completed"), what="dispatcher idle"
    )
    assert (await (await client.store()).get("broken")).enabled

    register(deployment, tmp_path / "v2", "broken", FIXED)
    deployment.cli("run", "tick", "--wait", "--timeout", "60")

    async def fixed_run() -> list[dict[str, Any]]:
        return [r for r in await runs_of(client, "broken") if r["status"] == "completed"]

    [run] = await eventually(fixed_run, timeout=60, what="a run of the fixed routine")
    assert run["outputs"]["fixed"] is True


async def test_external_workflow_completion_fires_routines_and_bad_ones_are_parked(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    register(
        system,
        tmp_path,
        "after-etl",
        (
            "from mainspring import Routine, on_workflow_success\n"
            "class AfterEtl(Routine):\n"
            "    def run(self, done=on_workflow_success('nightly-etl')) -> dict:\n"
            "        return {'rows': done.outputs['rows'], 'upstream': done.run_id}\n"
        ),
    )
    dead = await client.nc.subscribe("deadletter.>")
    await client.nc.flush()  # the CLI calls below block this loop: subscribe before them

    refused = system.cli(
        "publish", "run.completed.nightly-etl.completed", '{"run_id": "x"}', check=False
    )
    assert refused.returncode != 0
    assert "report a workflow outside Mainspring on external.completed" in refused.stderr
    system.cli(
        "publish",
        "external.completed.nightly-etl.completed",
        json.dumps(
            {
                "run_id": "etl-2026-11-25",
                "routine": "nightly-etl",
                "status": "completed",
                "outputs": {"rows": 1200},
            }
        ),
    )
    system.cli(
        "publish",
        "external.completed.nightly-etl.done",
        '{"routine": "nightly-etl", "status": "done"}',
    )

    [run] = await eventually(lambda: finished_runs(client, "after-etl", 1), timeout=60)
    assert run["outputs"] == {"rows": 1200, "upstream": "etl-2026-11-25"}
    assert run["parent_run_id"] == "etl-2026-11-25"
    assert run["hop"] == 1
    parked = await dead.next_msg(timeout=30)
    await dead.unsubscribe()
    assert parked.subject == "deadletter.external.completed.nightly-etl.done"
    assert "malformed RunCompleted" in parked_reason(parked)
    assert "run_id: Field required" in parked_reason(parked)
    await eventually(
        functools.partial(consumer_idle, client.js, "dispatcher-external-completed"),
        what="dispatcher idle",
    )
    assert await stored_count(client, "deadletter.external.completed.nightly-etl.done") == 1
    assert all(s.alive() for s in system.services.values())
    shown = system.cli("runs", "show", run["id"]).stdout
    assert "parent: nightly-etl #? completed (-) etl-2026-11-25" in shown


async def test_chain_fires_exactly_once_per_completion_across_dispatcher_kills(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    # A completion the killed dispatcher held comes back after the ack wait: short, so the
    # test waits on the redelivery rather than on the default 30 s.
    deployment.extra_env["MAINSPRING_DISPATCH_ACK_WAIT_S"] = "5"
    deployment.start_all()
    register(deployment, tmp_path, "extract", EXTRACT)
    register(deployment, tmp_path, "transform", TRANSFORM)
    register(deployment, tmp_path, "load", LOAD)
    upstream_runs = 10

    run_ids = [await client.submit("extract") for _ in range(upstream_runs)]
    landed = 0
    for _ in range(2):
        # Aimed at a completion being handled (fetched, not yet acknowledged).
        dispatcher = deployment.services["dispatcher"]
        landed += await kill_holding(dispatcher, client.js, "dispatcher-completed")
        deployment.start("dispatcher")

    # Thirty runs take seconds to flow through: at least one kill must have landed while the
    # dispatcher held a completion it had not acknowledged, or the test proves too little.
    assert landed >= 1, "no kill landed while a completion was being handled"
    loads = await eventually(
        lambda: finished_runs(client, "load", upstream_runs), timeout=150, what="every load run"
    )
    transforms = await runs_of(client, "transform")
    extracts = await runs_of(client, "extract")
    assert sorted(r["id"] for r in extracts) == sorted(run_ids)
    assert sorted(r["parent_run_id"] for r in transforms) == sorted(run_ids)
    assert sorted(r["parent_run_id"] for r in loads) == sorted(r["id"] for r in transforms)
    assert all(r["status"] == "completed" for r in [*extracts, *transforms, *loads])
    for consumer in ("dispatcher-completed", "runner"):
        await eventually(
            functools.partial(consumer_idle, client.js, consumer), timeout=60, what=consumer
        )
    # Exactly once on the bus, not just in the database (which is keyed by run id).
    assert await stored_count(client, subjects.RUN_REQUESTED) == 3 * upstream_runs
    assert await stored_count(client, subjects.RUN_COMPLETED_ANY) == 3 * upstream_runs
    assert len(await runs_of(client, "load")) == upstream_runs


async def test_failed_firings_count_once_each_toward_the_crash_loop(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    # A poll function that raises is recorded by the ticker as a failed firing; here the
    # failures are published the way any producer of trigger.recorded would.
    deployment.extra_env["MAINSPRING_CRASH_LOOP_THRESHOLD"] = "3"
    deployment.start_all()
    register(deployment, tmp_path, "tick", TICK)

    def fail(key: str) -> None:
        deployment.cli(
            "publish",
            "trigger.recorded",
            json.dumps(
                {
                    "routine": "tick",
                    "kind": "poll",
                    "status": "failed",
                    "event_key": key,
                    "fired_at": "2026-11-25T10:00:00+00:00",
                    "reason": "poll function raised ConnectionError: upstream API down",
                }
            ),
        )

    for key in ("poll:1", "poll:1", "poll:2"):  # the same firing twice counts once
        fail(key)
    await eventually(
        functools.partial(consumer_idle, client.js, "dispatcher-trigger-failures"),
        what="dispatcher idle",
    )
    assert (await (await client.store()).get("tick")).enabled

    fail("poll:3")

    async def disabled() -> Any:
        definition = await (await client.store()).get("tick")
        return None if definition.enabled else definition

    definition = await eventually(disabled, timeout=60, what="the trigger to be disabled")
    assert "upstream API down" in definition.disabled_reason
    events = await client.trigger_events("tick")
    assert [e["status"] for e in events].count("disabled") == 1
