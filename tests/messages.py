"""Bus messages for tests: one run request with every required field filled, so a test
names only what it is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mainspring.contract.messages import RequestRun

REQUESTED_AT = datetime(2026, 5, 1, 12, tzinfo=UTC)


def a_request(run_id: str = "r1", **fields: Any) -> RequestRun:
    """A manual request for run 1 of `hello`, with `fields` in place of the defaults."""
    defaults: dict[str, Any] = {
        "routine": "hello",
        "routine_version": "d1",
        "entrypoint": "hello.py:Hello",
        "run_number": 1,
        "source": "manual",
        "trigger_kind": "manual",
        "requested_at": REQUESTED_AT,
    }
    return RequestRun(run_id=run_id, **{**defaults, **fields})
