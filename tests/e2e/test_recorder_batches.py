"""The recorder at scale: batched writes acked after their commit, paged listings, honest errors."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlmodel import Session, SQLModel, select

from mainspring.base.settings import Settings
from mainspring.client import Client, RunRefused, ServiceUnavailable
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, RunCompleted, RunProgressed, RunStarted
from mainspring.contract.queries import RunQuery
from mainspring.runtime.service import build_broker
from mainspring.storage.records import RunRecord, open_engine
from mainspring_services.recorder.handlers import PROGRESS_DURABLE, RUNS_DURABLE, EventBatches
from mainspring_services.recorder.history import RunHistory
from tests.harness import Deployment, eventually, parked_reason

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 4, 1, 8, tzinfo=UTC)
RUNS = 2500
# Well above the time one batch takes to commit, so a live recorder's batch is not handed out
# again while it is being recorded.
RECORD_ACK_WAIT_S = 5.0


def run_events(index: int) -> list[tuple[str, bytes]]:
    """The events the dispatcher and a runner publish for one run, as they would."""
    run_id = f"run-{index:05d}"
    # Ten runs share each creation time, so paging must break ties on the id.
    created = T0 + timedelta(seconds=index // 10)
    request = RequestRun(
        run_id=run_id,
        routine="even" if index % 2 == 0 else "odd",
        routine_version="d1",
        entrypoint="r.py:R",
        run_number=index + 1,
        source="trigger",
        trigger_kind="schedule",
        labels=["nightly"] if index % 3 == 0 else [],
        attributes={"team": "ml" if index % 4 == 0 else "web"},
        requested_at=created,
    )
    started = RunStarted(run_id=run_id, routine=request.routine, runner="r1", started_at=created)
    completed = RunCompleted(
        run_id=run_id, routine=request.routine, status="completed", finished_at=created
    )
    return [
        (subjects.RUN_REQUESTED, request.model_dump_json().encode()),
        (subjects.RUN_STARTED, started.model_dump_json().encode()),
        (completed.subject(), completed.model_dump_json().encode()),
    ]


async def publish_all(js: JetStreamContext, messages: list[tuple[str, bytes]]) -> None:
    """Publish in order, a few hundred in flight at a time (each acked by the stream)."""
    for start in range(0, len(messages), 300):
        chunk = messages[start : start + 300]
        await asyncio.gather(*(js.publish(subject, body) for subject, body in chunk))


async def all_acked(js: JetStreamContext) -> bool:
    info = await js.consumer_info(subjects.STREAM, RUNS_DURABLE)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


@pytest.mark.parametrize(
    "deployment", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_thousands_of_runs_are_recorded_and_page_without_gaps_or_duplicates(
    deployment: Deployment, client: Client
) -> None:
    deployment.start("recorder")
    await client.wait_ready()
    dead = await client.nc.subscribe("deadletter.run.>")
    messages = [m for i in range(RUNS) for m in run_events(i)]
    # One malformed completion in the middle of the burst: parked alone, the rest recorded.
    messages.insert(
        len(messages) // 2, (subjects.run_completed_subject("x", "completed"), b'{"run_id": "x"}')
    )

    await publish_all(client.js, messages)

    await eventually(lambda: all_acked(client.js), timeout=120, what="every run event acked")
    parked = await dead.next_msg(timeout=10)
    assert parked.subject == "deadletter.run.completed.x.completed"
    assert parked.headers is not None
    assert "malformed RunCompleted" in parked.headers["Mainspring-Error"]
    expected = [f"run-{i:05d}" for i in reversed(range(RUNS))]

    paged = [run async for run in client.iter_runs(RunQuery(limit=100_000), page_size=97)]

    assert [r["id"] for r in paged] == expected
    assert {r["status"] for r in paged} == {"completed"}
    listed = json.loads(deployment.cli("runs", "list", "--limit", "100000", "--json").stdout)
    assert [r["id"] for r in listed] == expected
    nightly_ml = await client.list_runs(
        RunQuery(routine="even", label="nightly", attribute={"team": "ml"}, limit=100_000)
    )
    assert [r["id"] for r in nightly_ml] == [
        run_id for run_id in expected if int(run_id[4:]) % 12 == 0
    ]
    head = json.loads(deployment.cli("runs", "list", "--json").stdout)
    assert [r["id"] for r in head] == expected[:50]


async def test_a_database_error_acks_nothing_and_the_batch_comes_back(
    deployment: Deployment, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_engine(deployment.database_url)
    with Session(engine) as session:
        # The table the batch writes to is gone: a real database error on every commit.
        session.execute(text("DROP TABLE runs"))
        session.commit()
    settings = Settings(nats_url=deployment.nats.url)
    broker = build_broker(settings, "recorder")
    await broker.connect()
    batches = EventBatches(broker, RunHistory(engine), None, batch_size=50)
    consuming = asyncio.create_task(batches.run_forever(client.js))
    try:
        with caplog.at_level(logging.ERROR, logger="mainspring.recorder"):
            await publish_all(client.js, [m for i in range(3) for m in run_events(i)])

            async def redelivered_unacked() -> bool:
                info = await client.js.consumer_info(subjects.STREAM, RUNS_DURABLE)
                return bool(info.num_redelivered >= 9 and info.ack_floor.stream_seq == 0)

            await eventually(redelivered_unacked, what="the failed batch redelivered, none acked")
        assert "events of run.> in the run history database" in caplog.text
        assert "no such table: runs" in caplog.text

        SQLModel.metadata.create_all(engine)

        await eventually(
            lambda: all_acked(client.js), what="the batch recorded once the table is back"
        )
        with Session(engine) as session:
            rows = session.exec(select(RunRecord.id, RunRecord.status)).all()
        assert sorted(rows) == [(f"run-{i:05d}", "completed") for i in range(3)]
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await broker.stop()


async def test_errors_name_whether_the_recorder_is_busy_or_not_running(
    deployment: Deployment, client: Client
) -> None:
    recorder = deployment.start("recorder")
    await client.wait_ready()
    assert recorder.process is not None

    recorder.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(ServiceUnavailable, match=r"did not answer api\.runs\.list within 5s"):
            await client.list_runs()
        frozen = deployment.cli("runs", "list", check=False)
    finally:
        recorder.process.send_signal(signal.SIGCONT)
    assert frozen.returncode == 1
    assert "did not answer" in frozen.stderr
    assert "start it" not in frozen.stderr

    recorder.kill()
    stopped = deployment.cli("runs", "list", check=False)
    assert "the recorder is not running: start it" in stopped.stderr


async def test_a_missing_routine_is_refused_in_one_line_without_reading_the_registry(
    deployment: Deployment, client: Client
) -> None:
    deployment.start("recorder")
    deployment.start("dispatcher")
    await client.wait_ready()

    result = deployment.cli("run", "nope", check=False)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mainspring: error: routine 'nope' is not registered: "
        "create it with `mainspring routine create DIR --name nope`"
    )
    with pytest.raises(RunRefused, match="routine 'nope' is not registered"):
        await client.dispatched(await client.submit("nope"))
    assert client._store is None, "submit read the routine registry"


async def test_an_undispatched_submit_names_the_service_holding_it_up(
    deployment: Deployment, client: Client
) -> None:
    deployment.start("recorder")
    await client.wait_ready()
    first = await client.submit("hello")

    with pytest.raises(TimeoutError, match="no dispatcher ever ran on this bus: start it"):
        await client.dispatched(first, timeout=1)

    dispatcher = deployment.start("dispatcher")

    async def refused() -> bool:
        try:
            await client.dispatched(first, timeout=1)
        except RunRefused as exc:
            return "not registered" in str(exc)
        return False

    await eventually(refused, what="the dispatcher's decision on the first submit")
    dispatcher.kill()

    with pytest.raises(TimeoutError, match=r"the dispatcher has not taken it yet \(1 submits"):
        await client.dispatched(await client.submit("hello"), timeout=1)


@pytest.mark.parametrize(
    "deployment", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_recorder_killed_mid_backlog_loses_and_doubles_nothing(
    deployment: Deployment, client: Client
) -> None:
    # What the killed recorder held comes back after the ack wait: short, so the test waits
    # on the recovery rather than on the default 30 s.
    deployment.extra_env["MAINSPRING_RECORD_ACK_WAIT_S"] = str(RECORD_ACK_WAIT_S)
    recorder = deployment.start("recorder")
    await client.wait_ready()
    assert recorder.process is not None
    recorder.process.send_signal(signal.SIGSTOP)
    await publish_all(client.js, [m for i in range(RUNS) for m in run_events(i)])
    recorder.process.send_signal(signal.SIGCONT)

    async def some_acked() -> Any:
        info = await client.js.consumer_info(subjects.STREAM, RUNS_DURABLE)
        return info if info.ack_floor.stream_seq > 0 else None

    await eventually(some_acked, timeout=60, interval=0.005, what="a first batch acked")
    recorder.kill(signal.SIGKILL)
    at_kill = await client.js.consumer_info(subjects.STREAM, RUNS_DURABLE)
    assert at_kill.num_pending + at_kill.num_ack_pending > 0, (
        "the backlog was drained before the kill"
    )

    deployment.start("recorder", "recorder-again")
    await eventually(lambda: all_acked(client.js), timeout=120, what="the backlog recorded")
    runs = [run async for run in client.iter_runs(RunQuery(limit=100_000))]
    assert sorted(r["id"] for r in runs) == [f"run-{i:05d}" for i in range(RUNS)]
    assert {r["status"] for r in runs} == {"completed"}


async def progress_acked(js: JetStreamContext) -> bool:
    info = await js.consumer_info(subjects.PROGRESS_STREAM, PROGRESS_DURABLE)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def test_progress_of_an_unknown_run_is_parked_after_its_redeliveries_and_its_batch_recorded(
    deployment: Deployment, client: Client
) -> None:
    parked: list[Msg] = []

    async def keep(message: Msg) -> None:
        parked.append(message)

    await client.nc.subscribe(subjects.dead_letter_subject(subjects.RUN_PROGRESS), cb=keep)
    # Two deliveries (a pause of 2s between them) instead of twenty, so the test is short.
    recorder = deployment.start("recorder", env={"MAINSPRING_UNKNOWN_RUN_DELIVERIES": "2"})
    await client.wait_ready()
    assert recorder.process is not None
    # Frozen while the events arrive, so they are one batch when it wakes.
    recorder.process.send_signal(signal.SIGSTOP)
    orphan = RunProgressed(run_id="never-requested", fraction=0.5, at=T0)
    known = RunProgressed(run_id="run-00000", fraction=0.25, message="a quarter", at=T0)
    await publish_all(
        client.js,
        [
            *run_events(0),
            (subjects.RUN_PROGRESS, orphan.model_dump_json().encode()),
            (subjects.RUN_PROGRESS, known.model_dump_json().encode()),
        ],
    )
    recorder.process.send_signal(signal.SIGCONT)

    await eventually(lambda: all_acked(client.js), what="the batch recorded and acked")
    assert [r["id"] for r in await client.list_runs()] == ["run-00000"]

    async def orphan_parked() -> list[Msg]:
        return parked

    await eventually(orphan_parked, what="the orphan progress parked")
    [letter] = parked
    assert "still does not have after every redelivery" in parked_reason(letter)
    await eventually(lambda: progress_acked(client.js), what="the progress consumer drained")
    shown = await client.get_run("run-00000")
    assert shown is not None
    assert [p["message"] for p in shown["progress_history"]] == ["a quarter"]


async def test_progress_that_overtakes_its_request_waits_for_it_and_is_recorded(
    deployment: Deployment, client: Client
) -> None:
    # Progress has its own stream and consumer: it can reach the recorder before the run.
    deployment.start("recorder")
    await client.wait_ready()
    early = RunProgressed(run_id="run-00000", fraction=0.5, message="early", at=T0)
    await client.js.publish(subjects.RUN_PROGRESS, early.model_dump_json().encode())

    async def handed_back() -> Any:
        info = await client.js.consumer_info(subjects.PROGRESS_STREAM, PROGRESS_DURABLE)
        return info if info.num_redelivered > 0 or info.delivered.stream_seq > 0 else None

    await eventually(handed_back, what="the early progress delivered and waiting")
    assert await client.list_runs() == []
    await publish_all(client.js, run_events(0)[:2])  # requested and started, not completed

    async def recorded() -> list[dict[str, Any]] | None:
        shown = await client.get_run("run-00000")
        return shown["progress_history"] if shown and shown["progress_history"] else None

    [progress] = await eventually(recorded, what="the early progress recorded on its run")
    assert progress["message"] == "early"
    shown = await client.get_run("run-00000")
    assert shown is not None
    assert (shown["status"], shown["progress"]) == ("running", 0.5)
    assert await progress_acked(client.js)


@pytest.mark.parametrize(
    ("subject", "body", "reason"),
    [
        (subjects.API_RUNS_GET, b"[1]", "bad run request: body: Input should be an object"),
        (subjects.API_RUNS_GET, b"\xff", "bad run request: body: Invalid JSON"),
        (
            subjects.API_TRIGGER_EVENTS,
            b'{"routine": "r", "limit": "many"}',
            "bad trigger events request: limit: Input should be a valid integer",
        ),
        (
            subjects.API_RUNS_LIST,
            b'{"limit": -1, "since": "yesterday"}',
            "bad runs list request: since: Input should be a valid datetime or date, input is too "
            "short (+1 more)",
        ),
    ],
)
async def test_a_malformed_query_is_answered_with_a_one_line_reason(
    deployment: Deployment, client: Client, subject: str, body: bytes, reason: str
) -> None:
    deployment.start("recorder")
    await client.wait_ready()

    reply = await client.nc.request(subject, body, timeout=10)

    error = json.loads(reply.data)["error"]
    assert error.startswith(reason), error
    assert "\n" not in error
