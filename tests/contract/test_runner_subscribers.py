"""Every runner subscriber driven on FastStream's TestNatsBroker with a fake runner.

A cancel reaches the runner, a poll request becomes a poll.completed, and a malformed
message on each is parked. The run queue is no subscriber (the runner's intake pulls it,
see intake.py): pulling, ordering and parking its requests are proven end to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker

from mainspring.contract import subjects
from mainspring.contract.messages import (
    CancelRun,
    PollCompleted,
    PollRequested,
)
from mainspring.runtime.service import STREAM
from mainspring_services.runner.handlers import register
from mainspring_services.runner.poll import register_poll
from mainspring_services.runner.settings import RunnerSettings

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


@dataclass
class Admissions:
    """The runner reduced to what its subscribers call."""

    settings: RunnerSettings = field(default_factory=RunnerSettings)
    cancelled: list[str] = field(default_factory=list)

    async def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)


@dataclass
class Wired:
    broker: NatsBroker
    runner: Admissions
    polled: list[PollRequested]
    published: dict[str, list[dict[str, Any]]]


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    broker = NatsBroker()
    runner = Admissions()
    polled: list[PollRequested] = []

    async def run_poll(request: PollRequested) -> PollCompleted:
        polled.append(request)
        return PollCompleted(
            routine=request.routine,
            scheduled_at=request.scheduled_at,
            payload={"new": 1},
            finished_at=T0,
        )

    register(broker, runner)
    register_poll(broker, runner.settings, run_poll)
    published: dict[str, list[dict[str, Any]]] = {}
    for subject in (subjects.POLL_COMPLETED, f"{subjects.DEAD_LETTER_PREFIX}.>"):

        @broker.subscriber(subject, stream=STREAM)
        async def capture(body: dict[str, Any], message: NatsMessage) -> None:
            published.setdefault(message.raw_message.subject, []).append(body)

    async with TestNatsBroker(broker) as test_broker:
        yield Wired(test_broker, runner, polled, published)


async def test_a_cancel_reaches_the_runner(wired: Wired) -> None:
    cancel = CancelRun(run_id="r-2")
    await wired.broker.publish(cancel.model_dump_json().encode(), subjects.RUN_CANCEL)

    assert wired.runner.cancelled == ["r-2"]


async def test_a_poll_request_is_answered_with_its_result(wired: Wired) -> None:
    request = PollRequested(routine="watch", routine_version="d1", fn="f", scheduled_at=T0)
    await wired.broker.publish(request.model_dump_json().encode(), subjects.POLL_REQUESTED)

    assert [p.routine for p in wired.polled] == ["watch"]
    (completed,) = wired.published[subjects.POLL_COMPLETED]
    assert completed["payload"] == {"new": 1}


@pytest.mark.parametrize("subject", [subjects.RUN_CANCEL, subjects.POLL_REQUESTED])
async def test_every_subscriber_parks_a_malformed_message(wired: Wired, subject: str) -> None:
    await wired.broker.publish(b'{"run_id": 7, "routine": []}', subject)

    (parked,) = wired.published[subjects.dead_letter_subject(subject)]
    assert parked == {"run_id": 7, "routine": []}
    assert not wired.runner.cancelled
    assert not wired.polled
