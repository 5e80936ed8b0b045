"""Random and malformed messages on every subject the services consume, against a real system.

Each malformed message a durable consumer receives must be dead-lettered with a reason, each
request must be answered (an error for a bad one), and afterwards every service is alive,
every durable has handled everything, and a normal run still completes. Hypothesis draws the
messages; `MAINSPRING_FUZZ_EXAMPLES` (see `just fuzz`) makes the run longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from pydantic import BaseModel, ValidationError

from mainspring.contract import subjects
from mainspring.contract.messages import (
    CancelRun,
    DatasetAppended,
    DeleteRuns,
    FireTrigger,
    PollCompleted,
    PollRequested,
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunProgressed,
    RunQueued,
    RunStarted,
    ScheduleFired,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.contract.queries import RunLookup, RunQuery, TriggerEventsQuery
from mainspring.runtime.deadletters import ERROR_HEADER
from tests.harness import Deployment, consumer_idle, deployment_context, eventually, write_routine

pytestmark = pytest.mark.e2e

T = TypeVar("T")
EXAMPLES = int(os.environ.get("MAINSPRING_FUZZ_EXAMPLES", "200"))
FUZZ_ID = "X-Fuzz-Id"
AT = "2026-01-01T00:00:00Z"
STEADY = """
from mainspring import Routine, on_schedule

class Steady(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {"ok": True}
"""

# A valid body of each consumed model: the seed that mutations break. Routine names are not
# registered, so a mutation that stays valid is refused or ignored, never run.
SAMPLES: dict[type[BaseModel], dict[str, Any]] = {
    SubmitRun: {"request_id": "fuzz-run", "routine": "fuzz-none"},
    ScheduleFired: {"routine": "fuzz-none", "scheduled_at": AT, "fired_at": AT},
    DatasetAppended: {
        "dataset": "fuzz-none",
        "from_version": 0,
        "to_version": 1,
        "added_records": 1,
    },
    RunCompleted: {"run_id": "fuzz-run", "routine": "fuzz-none", "status": "completed"},
    CancelRun: {"run_id": "fuzz-run"},
    FireTrigger: {"request_id": "fuzz-run", "trigger": "fuzz-none", "requested_at": AT},
    TriggerRecorded: {
        "routine": "fuzz-none",
        "kind": "schedule",
        "status": "fired",
        "event_key": "k",
        "fired_at": AT,
    },
    PollCompleted: {"routine": "fuzz-none", "scheduled_at": AT, "finished_at": AT},
    RequestRun: {
        "run_id": "fuzz-run",
        "routine": "fuzz-none",
        "routine_version": "d",
        "entrypoint": "r.py:R",
        "run_number": 1,
        "source": "api",
        "trigger_kind": "manual",
        "requested_at": AT,
    },
    PollRequested: {
        "routine": "fuzz-none",
        "routine_version": "d",
        "fn": "f",
        "scheduled_at": AT,
    },
    RunStarted: {"run_id": "fuzz-run", "routine": "fuzz-none", "runner": "r", "started_at": AT},
    RunProgressed: {"run_id": "fuzz-run", "fraction": 0.5, "at": AT},
    RunHeartbeat: {"run_id": "fuzz-run", "runner": "r", "at": AT},
    RunQueued: {"run_id": "fuzz-run", "routine": "fuzz-none", "reason": "r", "at": AT},
}

TOKEN = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)


@dataclass(frozen=True)
class Consumed:
    """A stream subject (a strategy, for those with variable tokens) and the model each of
    its durable consumers parses: a body one of them rejects is dead-lettered (the stream
    keeps one dead letter per stored message, whoever parks it first)."""

    subject: st.SearchStrategy[str]
    models: tuple[type[BaseModel], ...]


CONSUMED = [
    Consumed(st.just(subjects.RUN_SUBMITTED), (SubmitRun, SubmitRun)),
    Consumed(st.just(subjects.SCHEDULE_FIRED), (ScheduleFired,)),
    Consumed(st.just(subjects.DATASET_APPENDED), (DatasetAppended,)),
    Consumed(st.builds(subjects.run_completed_subject, TOKEN, TOKEN), (RunCompleted, RunCompleted)),
    Consumed(
        st.builds(subjects.external_completed_subject, TOKEN, TOKEN),
        (RunCompleted, RunCompleted),
    ),
    Consumed(st.just(subjects.RUN_IN_MEMORY_REPORTED), (RunCompleted,)),
    # The runners' core subscription parks a bad cancel too; only the durable is counted.
    Consumed(st.just(subjects.RUN_CANCEL), (CancelRun,)),
    Consumed(st.just(subjects.TRIGGER_RECORDED), (TriggerRecorded, TriggerRecorded)),
    Consumed(st.just(subjects.POLL_COMPLETED), (PollCompleted,)),
    Consumed(st.just(subjects.TRIGGER_FIRE), (FireTrigger,)),
    Consumed(st.just(subjects.RUN_REQUESTED), (RequestRun, RequestRun)),
    Consumed(st.just(subjects.POLL_REQUESTED), (PollRequested,)),
    Consumed(st.just(subjects.RUN_STARTED), (RunStarted,)),
    Consumed(st.just(subjects.RUN_PROGRESS), (RunProgressed,)),
    Consumed(st.just(subjects.RUN_QUEUED), (RunQueued,)),
]
# Request subjects and the model each reads its request as.
REQUESTS: dict[str, type[BaseModel]] = {
    subjects.API_RUNS_LIST: RunQuery,
    subjects.API_RUNS_GET: RunLookup,
    subjects.API_RUNS_DELETE: DeleteRuns,
    subjects.API_TRIGGER_EVENTS: TriggerEventsQuery,
}
# Durables that must have handled every fuzzed message by the end.
DURABLES = [
    "dispatcher-submitted",
    "dispatcher-schedule",
    "dispatcher-dataset",
    "dispatcher-completed",
    "dispatcher-external-completed",
    "dispatcher-in-memory",
    "dispatcher-cancel",
    "dispatcher-trigger-failures",
    "dispatcher-poll",
    "dispatcher-trigger-fire",
    subjects.RUNNER_POLL_CONSUMER,
    subjects.RECORDER_RUNS_CONSUMER,
    "recorder-triggers",
    "recorder-external",
]

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Header text: anything but the control characters that would end the header line.
HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=100)


@st.composite
def mutated(draw: st.DrawFn, model: type[BaseModel]) -> bytes:
    """A valid body with required fields dropped or given values of the wrong type."""
    body = dict(SAMPLES[model])
    required = sorted(k for k, f in model.model_fields.items() if f.is_required())
    broken = draw(st.lists(st.sampled_from(required), min_size=1, unique=True))
    for key in broken:
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(JSON_VALUE)
    return json.dumps(body).encode()


@st.composite
def huge_field(draw: st.DrawFn, model: type[BaseModel], room: int) -> bytes:
    """A valid body with one string field hundreds of kilobytes long."""
    body = dict(SAMPLES[model])
    key = draw(st.sampled_from(sorted(k for k, v in body.items() if isinstance(v, str))))
    body[key] = "x" * draw(st.integers(10_000, room - 1000))
    return json.dumps(body).encode()


def deeply_nested(depth: int, kind: str) -> bytes:
    """JSON nested `depth` levels deep (far past any parser's recursion limit at the top)."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def bodies(model: type[BaseModel], room: int) -> st.SearchStrategy[bytes]:
    """Every kind of bad body, and some that happen to be valid."""
    return st.one_of(
        st.binary(max_size=300),
        JSON_VALUE.map(lambda value: json.dumps(value).encode()),
        mutated(model),
        huge_field(model, room),
        st.builds(deeply_nested, st.integers(50, 100_000), st.sampled_from(["list", "dict"])),
        # Near the server's max payload, with the headers' room left.
        st.integers(room - 2000, room).map(lambda size: b"\xff" * size),
    )


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    """Garbage headers, bad message ids and trace contexts, plus the id that finds the message."""
    drawn = draw(
        st.dictionaries(
            st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True), HEADER_TEXT, max_size=4
        )
    )
    if draw(st.booleans()):
        drawn["Nats-Msg-Id"] = draw(HEADER_TEXT)
    if draw(st.booleans()):
        drawn["traceparent"] = draw(
            HEADER_TEXT
            | st.from_regex(r"0[0-9a-f]-[0-9a-z]{1,40}-[0-9a-f]{0,20}-0[0-3]", fullmatch=True)
        )
    if draw(st.booleans()):
        drawn["tracestate"] = draw(HEADER_TEXT)
    # Random, not drawn: hypothesis would repeat a drawn id across examples, and a dead
    # letter of an earlier example would then count for a later one.
    drawn[FUZZ_ID] = uuid.uuid4().hex
    return drawn


@dataclass(frozen=True)
class Fuzzed:
    """One message to publish on the stream, and how many of its consumers find it malformed
    (a dead letter is due when any does)."""

    subject: str
    body: bytes
    headers: dict[str, str]
    rejected_by: int


def rejections(models: tuple[type[BaseModel], ...], body: bytes) -> int:
    """How many of a subject's consumers find the body malformed."""
    rejected = 0
    for model in models:
        try:
            model.model_validate_json(body)
        except ValidationError:
            rejected += 1
    return rejected


@st.composite
def stream_messages(draw: st.DrawFn, room: int) -> Fuzzed:
    """A fuzzed message on one of the consumed stream subjects."""
    consumed = draw(st.sampled_from(CONSUMED))
    subject = draw(consumed.subject)
    body = draw(bodies(consumed.models[0], room))
    return Fuzzed(subject, body, draw(headers()), rejections(consumed.models, body))


class Bus:
    """A nats-py connection on its own loop thread, so a synchronous hypothesis test can drive
    it; it keeps every dead letter it sees, by the fuzzed message's id."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.parked: dict[str, list[Msg]] = {}
        self.nc: NatsClient = self.call(nats.connect(url))
        self.call(self.nc.subscribe(f"{subjects.DEAD_LETTER_PREFIX}.>", cb=self._keep))

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the bus's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=120)

    async def _keep(self, message: Msg) -> None:
        fuzz_id = (message.headers or {}).get(FUZZ_ID)
        if fuzz_id is not None:
            self.parked.setdefault(fuzz_id, []).append(message)

    def close(self) -> None:
        """Close the connection and stop the loop."""
        self.call(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass(repr=False)
class FuzzedSystem:
    """The running system and the test's connection to its bus."""

    deployment: Deployment
    bus: Bus

    def __repr__(self) -> str:
        # Hypothesis prints the arguments of a failing example: not the whole environment.
        return f"FuzzedSystem(home={self.deployment.home})"


@pytest.fixture(scope="module")
def fuzzed_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedSystem]:
    """One running system for every example (a system per example would take minutes)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    with deployment_context(tmp, "sqlite") as deployment:
        deployment.start_all()
        deployment.cli(
            "routine", "create", str(write_routine(tmp / "steady", STEADY)), "--name", "steady"
        )
        # A run through every service: each has bound its durables before the first example.
        deployment.cli("run", "steady", "--wait", "--timeout", "90", timeout=120)
        bus = Bus(deployment.nats.url)
        try:
            yield FuzzedSystem(deployment, bus)
        finally:
            bus.close()
            if any(not s.alive() for s in deployment.services.values()):
                print(deployment.logs())


def run_sync(bus: Bus, check: Awaitable[T]) -> T:
    """Await on the bus's loop from the test's thread."""

    async def wrapped() -> T:
        return await check

    return bus.call(wrapped())


@pytest.mark.timeout(60 + EXAMPLES * 40)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # No shrinking: each step re-runs an example against the live system (up to a minute when
    # it fails). The failure shows the drawn messages, whose bodies and reasons say enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_malformed_messages_are_parked_and_every_service_keeps_serving(
    fuzzed_system: FuzzedSystem, data: st.DataObject
) -> None:
    bus = fuzzed_system.bus
    # Room for the body under the server's max payload, with room left for the drawn headers
    # (at most about 3 kB): the test's own publish must fit.
    room = bus.nc.max_payload - 4096
    batch = data.draw(st.lists(stream_messages(room), min_size=1, max_size=6), label="messages")
    stored: list[Fuzzed] = []
    for message in batch:
        ack = bus.call(
            bus.nc.jetstream().publish(message.subject, message.body, headers=message.headers)
        )
        if not ack.duplicate:  # a repeated Nats-Msg-Id is dropped by the stream, not consumed
            stored.append(message)
    # Heartbeats are core NATS and best effort: a bad one is dropped, never parked.
    heartbeat = data.draw(bodies(RunHeartbeat, room), label="heartbeat body")
    bus.call(bus.nc.publish(subjects.RUN_HEARTBEAT, heartbeat, headers=data.draw(headers())))
    too_big = data.draw(st.integers(1, 100_000), label="bytes past the max payload")
    with pytest.raises(MaxPayloadError):
        bus.call(bus.nc.publish(subjects.RUN_SUBMITTED, b"x" * (bus.nc.max_payload + too_big)))
    subject = data.draw(st.sampled_from(sorted(REQUESTS)), label="request subject")
    body = data.draw(bodies(SubmitRun, room), label="request body")
    reply = bus.call(bus.nc.request(subject, body, timeout=30, headers=data.draw(headers())))
    answer = json.loads(reply.data)
    assert isinstance(answer, dict), answer
    if rejections((REQUESTS[subject],), body or b"{}"):
        assert str(answer.get("error", "")).startswith("bad "), answer

    async def all_parked() -> bool:
        for message in stored:
            letters = bus.parked.get(message.headers[FUZZ_ID], [])
            assert letters or not message.rejected_by, (
                f"{message.subject} ({len(message.body)} bytes) malformed for "
                f"{message.rejected_by} consumer(s), never parked: {message.body[:200]!r}"
            )
            for letter in letters:
                assert (letter.headers or {}).get(ERROR_HEADER, "").strip(), letter.headers
        return True

    run_sync(bus, eventually(all_parked, timeout=30, what="every malformed message parked"))
    dead = {name: s.alive() for name, s in fuzzed_system.deployment.services.items()}
    assert all(dead.values()), dead


def test_after_the_fuzz_every_durable_is_idle_and_a_run_completes(
    fuzzed_system: FuzzedSystem,
) -> None:
    bus = fuzzed_system.bus
    js = bus.nc.jetstream()

    async def idle() -> bool:
        for durable in DURABLES:
            assert await consumer_idle(js, durable), f"{durable} still holds or has messages"
        return True

    run_sync(bus, eventually(idle, timeout=120, interval=1, what="every durable idle"))
    result = fuzzed_system.deployment.cli("run", "steady", "--wait", "--timeout", "90", timeout=120)
    assert "status: completed" in result.stdout
    # What was parked, garbage headers and all, can be listed and shown.
    letters = json.loads(fuzzed_system.deployment.cli("deadletters", "list", "--json").stdout)
    assert letters, "the fuzz parked nothing"
    for letter in letters[:20]:
        shown = fuzzed_system.deployment.cli("deadletters", "show", str(letter["sequence"]))
        assert json.loads(shown.stdout)["reason"], shown.stdout
    alive = {name: s.alive() for name, s in fuzzed_system.deployment.services.items()}
    assert all(alive.values()), alive
