"""The run history database (SQLite or PostgreSQL through sqlmodel): tables and queries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Engine, Text, inspect, text
from sqlmodel import Field, Session, SQLModel, col, create_engine, select


def _json() -> Any:
    return Field(default=None, sa_column=Column(JSON))


def _when() -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RunRecord(SQLModel, table=True):
    """One run: its inputs, lifecycle, progress, outputs and provenance."""

    __tablename__ = "runs"

    id: str = Field(primary_key=True)
    routine: str = Field(index=True)
    routine_version: str = ""
    run_number: int = 0
    status: str = Field(default="created", index=True)
    source: str = "trigger"
    trigger_kind: str = ""
    trigger_event: dict[str, Any] | None = _json()
    inputs: dict[str, Any] | None = _json()
    name: str | None = None
    description: str | None = None
    labels: list[str] | None = _json()
    attributes: dict[str, Any] | None = _json()
    started_by: str | None = None
    created_at: datetime | None = _when()
    queued_at: datetime | None = _when()
    started_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    updated_at: datetime | None = _when()
    memory_limit: int | None = None
    timeout_s: float | None = None
    progress: float | None = None
    progress_message: str | None = None
    outputs: dict[str, Any] | None = _json()
    artifacts: list[dict[str, Any]] | None = _json()
    error: str | None = Field(default=None, sa_column=Column(Text))
    traceback: str | None = Field(default=None, sa_column=Column(Text))
    hop: int = 0
    parent_run_id: str | None = Field(default=None, index=True)
    trace_id: str | None = None
    runner: str | None = None
    attempt: int = 0
    queue_reason: str | None = None
    isolation: str | None = None
    # The run this one repeats with the same inputs and event (`runs rerun`).
    rerun_of: str | None = None


class ProgressRecord(SQLModel, table=True):
    """One progress report of a run (the history `runs show` prints)."""

    __tablename__ = "run_progress"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    fraction: float
    message: str = ""
    at: datetime | None = _when()


class TriggerEventRecord(SQLModel, table=True):
    """One firing of a routine's trigger: fired, skipped, failed or blocked, and why."""

    __tablename__ = "trigger_events"

    id: str = Field(primary_key=True)
    routine: str = Field(index=True)
    kind: str
    status: str
    event_key: str
    fired_at: datetime | None = _when()
    scheduled_at: datetime | None = _when()
    run_id: str | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))
    chain: list[str] | None = _json()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written the common way."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_engine(url: str) -> Engine:
    """An engine with the schema created or migrated (new columns added)."""
    url = normalise_url(url)
    connect_args = {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    if url.startswith("sqlite"):
        with engine.connect() as conn:
            # WAL lets the CLI read while the recorder writes.
            conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.commit()
    SQLModel.metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )


class RunQuery(SQLModel):
    """Filters for listing runs (CLI, SDK and the recorder's API share it)."""

    routine: str | None = None
    status: str | None = None
    label: str | None = None
    attribute: dict[str, Any] | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    chain: str | None = None
    limit: int = 50


def list_runs(session: Session, query: RunQuery) -> list[RunRecord]:
    """Runs matching the query, newest first."""
    statement = select(RunRecord)
    if query.routine:
        statement = statement.where(RunRecord.routine == query.routine)
    if query.status:
        statement = statement.where(RunRecord.status == query.status)
    if query.source:
        statement = statement.where(RunRecord.source == query.source)
    if query.since:
        statement = statement.where(col(RunRecord.created_at) >= query.since)
    if query.until:
        statement = statement.where(col(RunRecord.created_at) < query.until)
    statement = statement.order_by(col(RunRecord.created_at).desc())
    rows = list(session.exec(statement))
    # Label and attribute filters run in Python: JSON operators differ between SQLite and PostgreSQL.
    if query.label:
        rows = [r for r in rows if query.label in (r.labels or [])]
    if query.attribute:
        rows = [
            r
            for r in rows
            if all((r.attributes or {}).get(k) == v for k, v in query.attribute.items())
        ]
    if query.chain:
        chain = chain_of(session, query.chain)
        rows = [r for r in rows if r.id in chain]
    return rows[: query.limit]


def chain_of(session: Session, run_id: str) -> set[str]:
    """Every run id in the chain of run_id: its ancestors and all their descendants."""
    root = session.get(RunRecord, run_id)
    seen: set[str] = set()
    while root is not None and root.parent_run_id and root.parent_run_id not in seen:
        seen.add(root.id)
        parent = session.get(RunRecord, root.parent_run_id)
        if parent is None:
            break
        root = parent
    if root is None:
        return set()
    members, frontier = {root.id}, [root.id]
    while frontier:
        children = session.exec(
            select(RunRecord.id).where(col(RunRecord.parent_run_id).in_(frontier))
        ).all()
        frontier = [c for c in children if c not in members]
        members.update(frontier)
    return members
