"""The fence of a redelivered trigger: when it looks, what it reads, what it still publishes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mainspring.contract.messages import RequestRun
from mainspring_services.dispatcher import fence
from tests.messages import a_request

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW_S = 600.0


def request(run_id: str) -> RequestRun:
    return a_request(
        run_id, routine="embed", source="trigger", trigger_kind="dataset", requested_at=NOW
    )


@pytest.mark.parametrize(
    ("delivery", "looks"),
    [
        (None, False),  # not from a stream
        (fence.Delivery(7, 1, NOW - timedelta(hours=1)), False),  # first deliveries never look
        (fence.Delivery(7, 2, NOW - timedelta(seconds=10)), False),  # the window still drops
        (fence.Delivery(7, 2, NOW - timedelta(seconds=299)), False),
        (fence.Delivery(7, 2, NOW - timedelta(seconds=300)), True),  # half the window: clocks
        (fence.Delivery(7, 5, NOW - timedelta(hours=3)), True),
        (fence.Delivery(7, 2, None), True),  # no stored time: look to be sure
    ],
)
def test_only_a_redelivery_older_than_half_the_window_looks(
    delivery: fence.Delivery | None, looks: bool
) -> None:
    assert fence.must_look(delivery, NOW, WINDOW_S) is looks


@pytest.mark.parametrize(
    ("headers", "body", "run_id"),
    [
        ({"Nats-Msg-Id": "run:abc"}, b'{"run_id": "other"}', "abc"),
        ({"traceparent": "00-x"}, b'{"run_id": "from-body"}', "from-body"),
        (None, b'{"run_id": "from-body"}', "from-body"),
        ({"Nats-Msg-Id": "submit:abc"}, b"not json", None),
        (None, b"[1, 2]", None),
        (None, None, None),
        (None, b'{"run_id": 3}', None),
    ],
)
def test_a_stored_request_is_known_by_its_message_id_else_its_body(
    headers: dict[str, str] | None, body: bytes | None, run_id: str | None
) -> None:
    assert fence.requested_run_id(headers, body) == run_id


def test_only_the_requests_not_stored_yet_remain_in_their_order() -> None:
    requests = [request("a"), request("b"), request("c")]

    assert [r.run_id for r in fence.unpublished(requests, set())] == ["a", "b", "c"]
    assert [r.run_id for r in fence.unpublished(requests, {"b"})] == ["a", "c"]
    assert fence.unpublished(requests, {"a", "b", "c", "zz"}) == []
    assert fence.unpublished([], {"a"}) == []
