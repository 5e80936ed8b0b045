"""The audit entry of a routine the dispatcher switched off itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mainspring.contract.messages import TriggerRecorded
from mainspring_services.dispatcher import core

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _tripped(key: str) -> TriggerRecorded:
    return TriggerRecorded(
        routine="busy", kind="schedule", status="disabled", event_key=key, fired_at=NOW
    )


def test_a_pause_is_audited_as_the_dispatchers_once_per_tripping_event() -> None:
    entry = core.pause_audit(
        "busy", "crash loop: 5 start failures", "crash_loop", [_tripped("a")], NOW
    )
    again = core.pause_audit(
        "busy", "crash loop: 5 start failures", "crash_loop", [_tripped("a")], NOW + timedelta(1)
    )
    other = core.pause_audit(
        "busy", "crash loop: 5 start failures", "crash_loop", [_tripped("b")], NOW
    )

    assert (entry.who, entry.action, entry.target, entry.details) == (
        "mainspring:dispatcher",
        "routine.disable",
        "busy",
        {"by": "crash_loop"},
    )
    # A redelivered event trips the same pause: the recorder keeps one row per entry id.
    assert again.entry_id == entry.entry_id
    assert other.entry_id != entry.entry_id
