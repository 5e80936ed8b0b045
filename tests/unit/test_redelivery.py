"""Delivery limits: growing delays, dead letters after the last failure (with the reason and the
original headers), no limit for the runner's holds, and what a replay carries back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from faststream.exceptions import AckMessage, NackMessage
from pydantic import ValidationError

from mainspring.runtime.deadletters import (
    DELIVERIES_HEADER,
    ERROR_HEADER,
    ORIGINAL_ID_HEADER,
    REDELIVERY,
    DeadLetter,
    RedeliveryPolicy,
    dead_letter_headers,
)
from mainspring.runtime.service import RetryLaterMiddleware, durable
from mainspring_services.recorder.handlers import database_retry


@pytest.mark.parametrize(
    ("delivered", "delay"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (19, 60.0)]
)
def test_delays_double_up_to_the_cap(delivered: int, delay: float) -> None:
    assert REDELIVERY.delay_s(delivered) == delay


def test_the_default_retries_for_a_quarter_of_an_hour_before_giving_up() -> None:
    waited = sum(REDELIVERY.delay_s(n) for n in range(1, REDELIVERY.max_deliveries))
    assert 600 < waited < 1200
    assert not REDELIVERY.exhausted(REDELIVERY.max_deliveries - 1)
    assert REDELIVERY.exhausted(REDELIVERY.max_deliveries)


def test_a_policy_checks_itself() -> None:
    with pytest.raises(ValidationError, match="raise max_delay_s"):
        RedeliveryPolicy(first_delay_s=10, max_delay_s=5)
    with pytest.raises(ValidationError):
        RedeliveryPolicy(max_deliveries=0)


def test_durables_get_a_server_limit_past_ours_and_the_runner_queue_none() -> None:
    limited = durable("c-limited", "schedule.fired")["config"]
    assert limited.max_deliver == REDELIVERY.max_deliveries + 1
    held = durable("c-held", "run.requested", redelivery=None)["config"]
    assert held.max_deliver == -1


def test_dead_letter_headers_keep_the_originals_and_their_id_aside() -> None:
    original = {"Nats-Msg-Id": "run:abc", "traceparent": "00-1-2-01"}
    headers = dead_letter_headers("broke", 42, original, deliveries=20)
    assert headers == {
        "traceparent": "00-1-2-01",
        ORIGINAL_ID_HEADER: "run:abc",
        ERROR_HEADER: "broke",
        DELIVERIES_HEADER: "20",
        "Nats-Msg-Id": "deadletter:42",
    }
    letter = DeadLetter(42, "deadletter.schedule.fired", "broke", headers, b"{}", datetime.now(UTC))
    assert letter.original_subject == "schedule.fired"
    assert letter.replay_headers() == {"traceparent": "00-1-2-01", "Nats-Msg-Id": "replay:42"}


@dataclass
class FakeBroker:
    published: list[tuple[bytes, str, dict[str, str]]] = field(default_factory=list)
    # What a connected broker reports: nats-server's default max payload.
    connection: Any = field(default_factory=lambda: SimpleNamespace(max_payload=1024 * 1024))

    async def publish(self, body: bytes, subject: str, **options: Any) -> None:
        self.published.append((body, subject, options["headers"]))


def message(consumer: str, delivered: int) -> Any:
    raw = SimpleNamespace(
        subject="schedule.fired",
        reply="$JS.ACK.MAINSPRING.x.1.7.7.0.0",
        data=b'{"routine": "r"}',
        headers={"traceparent": "00-1-2-01"},
        metadata=SimpleNamespace(
            consumer=consumer,
            num_delivered=delivered,
            sequence=SimpleNamespace(stream=7),
        ),
    )
    return SimpleNamespace(raw_message=raw)


async def failing(_: Any) -> None:
    raise RuntimeError("database away\nsecond line")


async def test_a_failure_before_the_limit_is_retried_later() -> None:
    durable("c-retry", "schedule.fired")
    broker = FakeBroker()
    middleware = RetryLaterMiddleware(None, context=None, broker=broker)  # type: ignore[arg-type]
    with pytest.raises(NackMessage):
        await middleware.consume_scope(failing, message("c-retry", 3))
    assert broker.published == []


async def test_the_last_failed_delivery_is_dead_lettered_with_reason_and_headers_and_acked() -> (
    None
):
    durable("c-last", "schedule.fired")
    broker = FakeBroker()
    middleware = RetryLaterMiddleware(None, context=None, broker=broker)  # type: ignore[arg-type]
    with pytest.raises(AckMessage):
        await middleware.consume_scope(failing, message("c-last", REDELIVERY.max_deliveries))
    [(body, subject, headers)] = broker.published
    assert (body, subject) == (b'{"routine": "r"}', "deadletter.schedule.fired")
    assert headers[ERROR_HEADER] == (
        "schedule.fired failed on all 20 deliveries, last with RuntimeError: database away; "
        "fix the cause, then `mainspring deadletters replay`"
    )
    assert headers["traceparent"] == "00-1-2-01"
    assert headers["Nats-Msg-Id"] == "deadletter:7"


async def test_a_consumer_without_a_limit_is_never_dead_lettered() -> None:
    durable("c-unlimited", "run.requested", redelivery=None)
    broker = FakeBroker()
    middleware = RetryLaterMiddleware(None, context=None, broker=broker)  # type: ignore[arg-type]
    with pytest.raises(NackMessage):
        await middleware.consume_scope(failing, message("c-unlimited", 10_000))
    assert broker.published == []


@pytest.mark.parametrize(
    ("ack_wait_s", "delays"),
    [(30.0, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]), (6.0, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0])],
)
def test_a_batch_held_through_a_database_outage_is_renewed_within_the_ack_wait(
    ack_wait_s: float, delays: list[float]
) -> None:
    # Each try of the database renews the held batch: a pause past the ack wait would hand
    # the batch to another recorder while this one still holds it.
    retry = database_retry(ack_wait_s)
    assert [retry.delay_s(attempt) for attempt in range(1, 7)] == delays
