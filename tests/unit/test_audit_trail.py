"""The audit trail's message, its row, and its table on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, select

from mainspring.client.audit import runs_target
from mainspring.contract import subjects
from mainspring.contract.messages import AuditRecorded, RequestRun
from mainspring.contract.queries import AuditQuery
from mainspring.storage.records import AuditRecord, open_engine
from mainspring_services.recorder import core
from mainspring_services.recorder.handlers import parse_batch
from mainspring_services.recorder.history import RunHistory, RunQueries
from tests.harness import create_postgres_database, drop_postgres_database
from tests.messages import a_request

T0 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield open_engine(f"sqlite:///{tmp_path / 'runs.db'}")
        return
    url = create_postgres_database()
    try:
        engine = open_engine(url)
        yield engine
        engine.dispose()
    finally:
        drop_postgres_database(url)


def entry(entry_id: str, at: datetime, **fields: Any) -> AuditRecorded:
    values: dict[str, Any] = {
        "who": "alice",
        "action": "routine.disable",
        "target_kind": "routine",
        "target": "train",
        "routine": "train",
        **fields,
    }
    return AuditRecorded(entry_id=entry_id, at=at, **values)


def requested(run_id: str, routine: str) -> RequestRun:
    return a_request(run_id, routine=routine, requested_at=T0)


def test_an_entry_needs_a_known_action_and_an_aware_time() -> None:
    with pytest.raises(ValidationError, match="action"):
        entry("e1", T0, action="routine.paint")
    with pytest.raises(ValidationError, match="at"):
        entry("e1", T0.replace(tzinfo=None))
    assert entry("e1", T0).message_id() == "audit:e1"


def test_a_row_takes_a_runs_routine_from_the_history_only_when_the_client_did_not_name_it() -> None:
    cancel = entry(
        "e1", T0, action="run.cancel", target_kind="run", target="r1", routine=None, run_id="r1"
    )
    named = entry("e2", T0, action="run.rerun", target_kind="run", target="r1", run_id="r1")

    assert core.audit_row(cancel, {"r1": "long"})["routine"] == "long"
    assert core.audit_row(cancel, {})["routine"] is None
    assert core.audit_row(named, {"r1": "long"})["routine"] == "train"
    assert core.audit_row(entry("e3", T0, details={}), {})["details"] is None


def test_a_batch_sets_audit_entries_apart_and_parks_a_malformed_one() -> None:
    body = entry("e1", T0).model_dump_json().encode()
    good = Msg(None, subject=subjects.AUDIT_RECORDED, data=body)  # type: ignore[arg-type]
    bad = Msg(None, subject=subjects.AUDIT_RECORDED, data=b'{"entry_id": "e2"}')  # type: ignore[arg-type]

    batch = parse_batch([good, bad], T0)

    assert [a.entry_id for a in batch.audits] == ["e1"]
    assert batch.changes == []
    assert [m for m, _ in batch.malformed] == [bad]
    assert "AuditRecorded" in batch.malformed[0][1]


def test_many_deleted_runs_are_named_by_the_first_few_and_a_count() -> None:
    assert runs_target(["a", "b"]) == "a b"
    assert runs_target([f"r{i}" for i in range(8)]) == "r0 r1 r2 r3 r4 (+3 more)"


def test_entries_are_kept_once_listed_newest_first_and_filtered_by_routine(engine: Engine) -> None:
    history = RunHistory(engine)
    history.record_batch([core.changes_for(requested("r1", "long"), T0)], [], T0)
    entries = [
        entry("e1", T0, reason="bad input"),
        entry("e2", T0 + timedelta(minutes=1), action="routine.enable"),
        entry(
            "e3",
            T0 + timedelta(minutes=2),
            action="run.cancel",
            target_kind="run",
            target="r1",
            routine=None,
            run_id="r1",
        ),
    ]

    history.record_batch([], [], T0, audits=entries)
    # A redelivered batch writes the same rows again, not new ones.
    history.record_batch([], [], T0, audits=entries[:1])

    with Session(engine) as session:
        assert len(session.exec(select(AuditRecord)).all()) == 3
    queries = RunQueries(engine)
    listed = queries.audit(AuditQuery())
    assert [(e["id"], e["action"], e["routine"]) for e in listed] == [
        ("e3", "run.cancel", "long"),
        ("e2", "routine.enable", "train"),
        ("e1", "routine.disable", "train"),
    ]
    assert listed[2]["reason"] == "bad input"
    assert listed[2]["who"] == "alice"
    assert listed[0]["at"] == (T0 + timedelta(minutes=2)).isoformat()
    assert listed[0]["details"] == {}
    assert [e["id"] for e in queries.audit(AuditQuery(routine="train"))] == ["e2", "e1"]
    assert [e["id"] for e in queries.audit(AuditQuery(limit=1))] == ["e3"]
