"""A run's claim is stale once its holder has not refreshed it for the ack wait."""

from __future__ import annotations

import json

import pytest

from mainspring_services.runner.coordination import claim_is_done, claim_is_stale


@pytest.mark.parametrize(
    ("age_s", "stale"), [(0.0, False), (4.9, False), (5.1, True), (3600.0, True)]
)
def test_a_claim_goes_stale_after_the_ack_wait(age_s: float, stale: bool) -> None:
    value = json.dumps({"holder": "runner@host:1", "at": 1000.0}).encode()
    assert claim_is_stale(value, 1000.0 + age_s, stale_after_s=5.0) is stale


@pytest.mark.parametrize("value", [b"", b"not json", b'{"holder": "x"}', b'{"at": "soon"}'])
def test_an_unreadable_claim_is_stale(value: bytes) -> None:
    assert claim_is_stale(value, 1000.0, stale_after_s=5.0)


def test_a_claim_marked_done_says_so_and_older_claims_do_not() -> None:
    assert claim_is_done(json.dumps({"holder": "r", "at": 1.0, "done": True}).encode())
    assert not claim_is_done(json.dumps({"holder": "r", "at": 1.0}).encode())
    assert not claim_is_done(b"not json")
