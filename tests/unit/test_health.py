"""The operations endpoint: /healthz answers while alive, /readyz lists what is not ready."""

from __future__ import annotations

import pytest

from mainspring.base.health import OpsServer, Reply, encode, readiness, request_target
from mainspring.runtime import metrics


@pytest.mark.parametrize(
    ("line", "target"),
    [
        (b"GET /readyz HTTP/1.1", ("GET", "/readyz")),
        (b"get /metrics?name[]=x HTTP/1.0", ("GET", "/metrics")),
        (b"garbage", None),
        (b"GET / SMTP", None),
    ],
)
def test_request_lines(line: bytes, target: tuple[str, str] | None) -> None:
    assert request_target(line) == target


def test_ready_is_200_and_not_ready_is_503_with_one_problem_a_line() -> None:
    assert readiness([]).status == 200
    assert readiness(["not connected to NATS", "db down"]) == Reply(
        503, "text/plain; charset=utf-8", b"not connected to NATS\ndb down\n"
    )


def test_a_reply_has_its_length_and_closes() -> None:
    raw = encode(Reply(200, "text/plain", b"ok\n"))

    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 3\r\n" in raw
    assert raw.endswith(b"Connection: close\r\n\r\nok\n")


async def test_readyz_runs_every_check_and_healthz_does_not() -> None:
    async def bus() -> str | None:
        return "not connected to NATS"

    async def database() -> str | None:
        return None

    server = OpsServer(0, [bus, database])

    assert (await server.answer("GET", "/healthz")).status == 200
    assert (await server.answer("GET", "/readyz")).body == b"not connected to NATS\n"
    assert (await server.answer("GET", "/nope")).status == 404
    assert (await server.answer("POST", "/healthz")).status == 405


async def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    metrics.RUNS.labels("hello", "completed").inc()

    reply = await OpsServer(0, []).answer("GET", "/metrics")

    assert reply.content_type.startswith("text/plain; version=")
    assert b'mainspring_runs_total{routine="hello",status="completed"}' in reply.body
