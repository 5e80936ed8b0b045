"""Every recorder subscriber driven on FastStream's TestNatsBroker, over a real SQLite history.

The request/reply API (`api.runs.*`, `api.trigger.events`) answers from the database or with a
one-line reason; heartbeats feed the stale-run sweep, which settles a silent run failed
through its ledger and publishes the outcome. (The event batches are pull loops, proven end
to end in tests/e2e/test_recorder_batches.py.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from mainspring.contract import subjects
from mainspring.contract.messages import (
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunStarted,
    TriggerRecorded,
)
from mainspring.runtime.service import STREAM
from mainspring.storage.records import open_engine
from mainspring_services.recorder import core
from mainspring_services.recorder.handlers import (
    QueryReplies,
    RunDeletion,
    StaleRunSweep,
    register,
    register_stale_sweep,
)
from mainspring_services.recorder.history import RunHistory, RunQueries
from mainspring_services.recorder.settings import RecorderSettings
from tests.contract import fakes
from tests.messages import a_request

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def requested(run_id: str, routine: str = "hello") -> RequestRun:
    return a_request(run_id, routine=routine, requested_at=T0)


@dataclass
class Recorder:
    broker: NatsBroker
    history: RunHistory
    sweep: StaleRunSweep
    ledger: fakes.Ledger
    completed: list[dict[str, Any]]

    async def ask(self, subject: str, body: Any) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = await self.broker.request(raw, subject, timeout=10)
        decoded = await reply.decode()
        answer: dict[str, Any] = decoded if isinstance(decoded, dict) else json.loads(str(decoded))
        return answer


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[Recorder]:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    history = RunHistory(open_engine(url))
    history.record_batch(
        [
            core.changes_for(requested("done"), T0),
            core.changes_for(
                RunCompleted(run_id="done", routine="hello", status="completed", finished_at=T0),
                T0,
            ),
            core.changes_for(requested("busy"), T0),
            core.changes_for(
                RunStarted(run_id="busy", routine="hello", runner="r1", started_at=T0), T0
            ),
        ],
        [],
        T0,
        [
            TriggerRecorded(
                routine="hello", kind="schedule", status="fired", event_key="k1", fired_at=T0
            )
        ],
    )
    writes = ThreadPoolExecutor(max_workers=1)
    reads = ThreadPoolExecutor(max_workers=2)
    broker = NatsBroker()
    register(
        broker,
        QueryReplies(RunQueries(open_engine(url, migrate=False)), reads),
        RunDeletion(history, writes, str(tmp_path / "artifacts")),
    )
    ledger = fakes.Ledger()
    settings = RecorderSettings(stale_run_after_s=30.0)
    sweep = StaleRunSweep(history, settings, writes, broker, ledger)
    register_stale_sweep(broker, sweep)
    completed: list[dict[str, Any]] = []

    @broker.subscriber(subjects.RUN_COMPLETED_ANY, stream=STREAM)
    async def capture(body: dict[str, Any]) -> None:
        completed.append(body)

    try:
        async with TestNatsBroker(broker) as test_broker:
            yield Recorder(test_broker, history, sweep, ledger, completed)
    finally:
        writes.shutdown(wait=True)
        reads.shutdown(wait=True)


async def test_a_run_is_answered_by_id(recorder: Recorder) -> None:
    answer = await recorder.ask(subjects.API_RUNS_GET, {"run_id": "done"})

    assert (answer["run"]["id"], answer["run"]["status"]) == ("done", "completed")


async def test_an_unknown_run_is_answered_with_none(recorder: Recorder) -> None:
    assert await recorder.ask(subjects.API_RUNS_GET, {"run_id": "nope"}) == {"run": None}


async def test_runs_are_listed_by_query(recorder: Recorder) -> None:
    answer = await recorder.ask(subjects.API_RUNS_LIST, {"routine": "hello", "status": "running"})

    assert [run["id"] for run in answer["runs"]] == ["busy"]


async def test_trigger_events_are_answered(recorder: Recorder) -> None:
    answer = await recorder.ask(subjects.API_TRIGGER_EVENTS, {"routine": "hello"})

    assert [e["event_key"] for e in answer["events"]] == ["k1"]


async def test_a_delete_removes_finished_runs_only(recorder: Recorder) -> None:
    answer = await recorder.ask(subjects.API_RUNS_DELETE, {"run_ids": ["done", "busy"]})

    assert answer["deleted"] == ["done"]
    assert await recorder.ask(subjects.API_RUNS_GET, {"run_id": "done"}) == {"run": None}


@pytest.mark.parametrize(
    "subject",
    [
        subjects.API_RUNS_GET,
        subjects.API_RUNS_LIST,
        subjects.API_TRIGGER_EVENTS,
        subjects.API_RUNS_DELETE,
    ],
)
async def test_a_malformed_request_is_answered_with_the_reason(
    recorder: Recorder, subject: str
) -> None:
    answer = await recorder.ask(subject, b'["not", "an", "object"]')

    assert answer["error"].startswith("bad "), answer


async def test_a_heartbeat_keeps_a_run_from_the_sweep_and_silence_fails_it(
    recorder: Recorder,
) -> None:
    recorder.sweep.watching_since = T0
    beat = RunHeartbeat(run_id="busy", runner="r1", at=datetime.now(UTC))
    await recorder.broker.publish(beat.model_dump_json().encode(), subjects.RUN_HEARTBEAT)

    assert await recorder.sweep.sweep_once() == [], "a run heartbeated just now is alive"
    recorder.sweep.last_beats["busy"] = datetime.now(UTC) - timedelta(seconds=60)

    assert await recorder.sweep.sweep_once() == ["busy"]
    assert recorder.ledger.cancelled == {"busy": "stale run sweep"}
    ((outcome,),) = [[c for c in recorder.completed if c["run_id"] == "busy"]]
    assert outcome["status"] == "failed"
