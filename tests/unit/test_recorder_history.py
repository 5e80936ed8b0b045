"""The recorder's database layer on SQLite and PostgreSQL: one commit per batch, SQL-side paging."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, select

from mainspring.contract.messages import (
    DeleteRuns,
    RequestRun,
    RunCompleted,
    RunProgressed,
    RunStarted,
    TriggerRecorded,
)
from mainspring.contract.queries import RunQuery
from mainspring.storage.records import CursorError, ProgressRecord, RunRecord, open_engine
from mainspring_services.recorder import core
from mainspring_services.recorder.history import RunHistory, RunQueries
from tests.harness import create_postgres_database, drop_postgres_database
from tests.messages import a_request

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


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


def requested(run_id: str, at: datetime, routine: str = "hello", **fields: Any) -> RequestRun:
    return a_request(run_id, routine=routine, requested_at=at, **fields)


def count_commits(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    return commits


def test_a_batch_of_several_runs_is_one_commit_with_one_row_each(engine: Engine) -> None:
    history = RunHistory(engine)
    events: list[core.RunEvent] = [
        RunCompleted(run_id="a", routine="hello", status="completed", finished_at=T0),
        requested("a", T0 - timedelta(seconds=2)),
        requested("b", T0),
        RunStarted(run_id="b", routine="hello", runner="r1", started_at=T0),
        RunProgressed(run_id="b", routine="hello", fraction=0.5, message="half", at=T0),
    ]
    progress = [e for e in events if isinstance(e, RunProgressed)]
    commits = count_commits(engine)

    written = history.record_batch([core.changes_for(e, T0) for e in events], progress, T0)

    assert written.rows == 2
    assert len(commits) == 1
    with Session(engine) as session:
        rows = {r.id: r for r in session.exec(select(RunRecord))}
        history_rows = list(session.exec(select(ProgressRecord)))
    assert (rows["a"].status, rows["a"].run_number) == ("completed", 1)
    assert rows["b"].status == "running"
    assert rows["b"].progress == 0.5
    assert [p.message for p in history_rows] == ["half"]


def test_a_later_batch_merges_onto_stored_rows_and_never_moves_them_back(engine: Engine) -> None:
    history = RunHistory(engine)
    history.record_batch([core.changes_for(requested("a", T0), T0)], [], T0)
    done = RunCompleted(run_id="a", routine="hello", status="failed", error="boom", finished_at=T0)
    history.record_batch([core.changes_for(done, T0)], [], T0)

    late = RunStarted(run_id="a", routine="hello", runner="r1", started_at=T0)
    history.record_batch([core.changes_for(late, T0)], [], T0)

    with Session(engine) as session:
        row = session.get(RunRecord, "a")
    assert row is not None
    assert (row.status, row.error) == ("failed", "boom")


def test_pages_walk_every_run_once_newest_first_with_filters_in_sql(engine: Engine) -> None:
    history = RunHistory(engine)
    # Ten runs share each creation time: the id breaks the tie between them.
    events = [
        requested(
            f"run-{i:03d}",
            T0 + timedelta(seconds=i // 10),
            routine="even" if i % 2 == 0 else "odd",
            labels=["nightly"] if i % 3 == 0 else [],
            attributes={"team": "ml" if i % 4 == 0 else "web", "size": i % 5},
        )
        for i in range(95)
    ]
    history.record_batch([core.changes_for(e, T0) for e in events], [], T0)
    queries = RunQueries(engine)

    def walk(query: RunQuery, page_size: int) -> list[str]:
        seen: list[str] = []
        after = None
        while True:
            page = queries.page(
                query.model_copy(update={"limit": page_size, "after": after}), 1_000_000
            )
            seen += [json.loads(run)["id"] for run in page.runs]
            if page.next is None:
                return seen
            after = page.next

    newest_first = [e.run_id for e in sorted(events, key=lambda e: (e.requested_at, e.run_id))]
    newest_first.reverse()
    assert walk(RunQuery(), 7) == newest_first
    assert walk(RunQuery(routine="odd"), 4) == [r for r in newest_first if int(r[4:]) % 2]
    assert walk(RunQuery(label="nightly"), 5) == [r for r in newest_first if int(r[4:]) % 3 == 0]
    assert walk(RunQuery(attribute={"team": "ml", "size": 0}), 3) == [
        r for r in newest_first if int(r[4:]) % 20 == 0
    ]
    assert walk(RunQuery(since=T0 + timedelta(seconds=9)), 2) == newest_first[:5]


def test_a_page_stops_below_the_byte_budget_and_continues_after_it(engine: Engine) -> None:
    history = RunHistory(engine)
    events = [requested(f"run-{i}", T0 + timedelta(seconds=i)) for i in range(10)]
    history.record_batch([core.changes_for(e, T0) for e in events], [], T0)
    queries = RunQueries(engine)
    one_run = len(queries.page(RunQuery(limit=1), 1_000_000).runs[0])

    page = queries.page(RunQuery(limit=10), 3 * one_run + 10)

    assert len(page.runs) == 3
    assert page.next is not None
    rest = queries.page(RunQuery(limit=10, after=page.next), 1_000_000)
    assert [json.loads(r)["id"] for r in page.runs + rest.runs] == [
        f"run-{i}" for i in reversed(range(10))
    ]
    assert rest.next is None


def test_a_cursor_not_given_out_is_refused_with_the_fix(engine: Engine) -> None:
    with pytest.raises(CursorError, match="pass the `next` value"):
        RunQueries(engine).page(RunQuery(after="not-a-cursor"), 1_000_000)


def test_firings_are_written_in_the_batch_commit_and_a_redelivery_keeps_one_row(
    engine: Engine,
) -> None:
    fired = TriggerRecorded(
        routine="hello", kind="schedule", status="fired", event_key="k1", fired_at=T0, run_id="a"
    )
    commits = count_commits(engine)

    RunHistory(engine).record_batch([], [], T0, [fired, fired.model_copy()])

    assert len(commits) == 1
    assert [e["run_id"] for e in RunQueries(engine).trigger_events("hello", 10)] == ["a"]


def test_a_trigger_name_finds_its_own_firings_with_payloads_newest_first(engine: Engine) -> None:
    def firing(key: str, second: int, trigger: str | None, **fields: Any) -> TriggerRecorded:
        return TriggerRecorded(
            routine="hello",
            kind="schedule",
            status="fired",
            event_key=key,
            fired_at=T0 + timedelta(seconds=second),
            trigger=trigger,
            **fields,
        )

    RunHistory(engine).record_batch(
        [],
        [],
        T0,
        [
            firing("own", 1, None, run_id="o"),
            firing("n1", 2, "orders", run_id="a", payload={"city": "Oslo"}),
            firing("n2", 3, "orders", run_id="b", payload={"city": "Lima"}),
            firing("m1", 4, "other", run_id="c"),
        ],
    )
    queries = RunQueries(engine)

    orders = queries.trigger_events("", 10, "orders")
    assert [(e["run_id"], e["payload"], e["trigger"]) for e in orders] == [
        ("b", {"city": "Lima"}, "orders"),
        ("a", {"city": "Oslo"}, "orders"),
    ]
    # The routine's own trigger is the trigger named after it; by routine, all its firings.
    assert [e["run_id"] for e in queries.trigger_events("", 10, "hello")] == ["o"]
    assert [e["run_id"] for e in queries.trigger_events("hello", 10)] == ["c", "b", "a", "o"]


def test_runs_are_found_by_part_of_their_name_or_description(engine: Engine) -> None:
    history = RunHistory(engine)
    events = [
        requested("a", T0, name="Nightly eval", description="red kite 100%"),
        requested("b", T0, name="nightly_load", description="blue"),
        requested("c", T0),
    ]
    history.record_batch([core.changes_for(e, T0) for e in events], [], T0)
    queries = RunQueries(engine)

    def ids(**filters: Any) -> list[str]:
        return sorted(run["id"] for run in page_runs(queries, RunQuery(**filters)))

    assert ids(name="NIGHTLY") == ["a", "b"]
    assert ids(name="y_l") == ["b"], "an underscore is looked for as itself"
    assert ids(description="100%") == ["a"]
    assert ids(description="kite", name="load") == []


def page_runs(queries: RunQueries, query: RunQuery) -> list[dict[str, Any]]:
    return [json.loads(row) for row in queries.page(query, 1 << 20).runs]


def test_retention_and_deletion_take_only_finished_runs_with_their_progress(
    engine: Engine,
) -> None:
    history = RunHistory(engine)
    events: list[core.RunEvent] = []
    for index in range(4):
        at = T0 + timedelta(minutes=index)
        events += [
            requested(f"old{index}", at),
            RunCompleted(run_id=f"old{index}", routine="hello", status="completed", finished_at=at),
        ]
    events += [
        requested("other", T0, routine="other"),
        RunCompleted(run_id="other", routine="other", status="failed", finished_at=T0),
        requested("busy", T0),
        RunStarted(run_id="busy", routine="hello", runner="r1", started_at=T0),
        RunProgressed(run_id="old0", fraction=0.5, at=T0),
    ]
    progress = [e for e in events if isinstance(e, RunProgressed)]
    history.record_batch([core.changes_for(e, T0) for e in events], progress, T0)

    by_count = history.past_retention(None, 2, limit=100)
    by_age = history.past_retention(T0 + timedelta(seconds=90), None, limit=100)
    named = history.statuses(DeleteRuns(routine="hello", before=T0 + timedelta(minutes=10)))
    deleted = history.delete(["old0", "busy"])

    assert by_count == ["old0", "old1"], "the two newest finished runs of each routine stay"
    assert by_age == ["old0", "old1", "other"]
    assert named == {f"old{i}": "completed" for i in range(4)} | {"busy": "running"}
    assert deleted == 1, "a running run is never deleted"
    assert set(history.rows(["old0", "busy"])) == {"busy"}
    with Session(engine) as session:
        assert list(session.exec(select(ProgressRecord))) == []


def test_progress_of_a_run_the_history_does_not_have_is_left_out_not_failing_the_batch(
    engine: Engine,
) -> None:
    history = RunHistory(engine)
    orphan = RunProgressed(run_id="gone", fraction=0.5, at=T0)
    events: list[core.RunEvent] = [requested("a", T0), orphan]

    recorded = history.record_batch([core.changes_for(e, T0) for e in events], [orphan], T0)

    assert (recorded.rows, recorded.unattached) == (1, frozenset({"gone"}))
    with Session(engine) as session:
        assert [r.id for r in session.exec(select(RunRecord))] == ["a"]
        assert list(session.exec(select(ProgressRecord))) == []
