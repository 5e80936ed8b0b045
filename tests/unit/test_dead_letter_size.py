"""A dead letter always fits the bus's max payload (headers and body counted together) and
reads back as text whatever its headers hold."""

from __future__ import annotations

import json
from email.header import Header
from types import SimpleNamespace

import pytest

from mainspring.runtime.deadletters import (
    CUT_HEADER,
    ERROR_HEADER,
    _letter,
    dead_letter_headers,
    fit_dead_letter,
    header_bytes,
)

MAX = 4096


def wire_size(body: bytes, headers: dict[str, str]) -> int:
    # What nats-server counts: the header block (with its NATS/1.0 line and blank line) and body.
    return len(b"NATS/1.0\r\n\r\n") + header_bytes(headers) + len(body)


def test_a_small_message_is_parked_whole() -> None:
    headers = dead_letter_headers("malformed", 7, {"X-Origin": "test"})
    assert fit_dead_letter(b"{}", headers, MAX) == (b"{}", headers)


@pytest.mark.parametrize(
    ("body_size", "original_header_size"), [(MAX - 100, 50), (MAX - 10, 0), (10, MAX - 60)]
)
def test_a_message_near_the_limit_is_cut_to_fit_and_marked(
    body_size: int, original_header_size: int
) -> None:
    original = {"X-Big": "h" * original_header_size} if original_header_size else {}
    headers = dead_letter_headers("r" * 2000, 7, original, deliveries=20)
    body = b"b" * body_size

    kept, marked = fit_dead_letter(body, headers, MAX)

    assert wire_size(kept, marked) <= MAX
    assert body.startswith(kept)
    assert marked[CUT_HEADER] == f"{len(kept)} of {body_size} bytes"
    assert marked[ERROR_HEADER] == "r" * 1000


def test_a_letter_with_non_ascii_headers_reads_as_text() -> None:
    # What nats-py's get_msg returns for a stored message whose header value is not ASCII.
    stored = SimpleNamespace(
        seq=5,
        subject="deadletter.run.submitted",
        headers={ERROR_HEADER: "malformed", "X-Name": Header("café", "utf-8")},
        data=b"{}",
        time=None,
    )

    letter = _letter(stored)

    assert letter.headers == {ERROR_HEADER: "malformed", "X-Name": "café"}
    assert json.loads(json.dumps(letter.headers))["X-Name"] == "café"
