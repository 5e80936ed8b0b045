"""The run history database (SQLite or PostgreSQL through sqlmodel): tables and queries."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Text,
    TextClause,
    event,
    inspect,
    or_,
    text,
)
from sqlmodel import Field, Session, SQLModel, and_, col, create_engine, select

from mainspring.contract.queries import RunQuery as RunQuery


def _json() -> Any:
    return Field(default=None, sa_column=Column(JSON))


def _when() -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RunRecord(SQLModel, table=True):
    """One run: its inputs, lifecycle, progress, outputs and provenance."""

    __tablename__ = "runs"
    # Listing pages newest first on (created_at, id), alone or within one routine or status.
    __table_args__ = (
        Index("ix_runs_created_at_id", "created_at", "id"),
        Index("ix_runs_routine_created_at_id", "routine", "created_at", "id"),
        Index("ix_runs_status_created_at_id", "status", "created_at", "id"),
    )

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
    # high | normal | low: which runs a runner with a free slot took first.
    priority: str | None = None
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
    # How it got its inputs (workflow | direct) and where it executed (background | in_memory).
    invocation: str | None = None
    execution: str | None = None
    # The run options its artifacts were saved with.
    statistics: bool | None = None
    previews: bool | None = None
    store_artifacts: bool | None = None
    # Resources used: peak resident memory of the run's process tree, CPU and wall seconds.
    peak_memory_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    # The run's folder in the artifact store, and its stdout/stderr log file there.
    artifact_location: str | None = None
    log_uri: str | None = None
    # The run model: the routine (blueprint) and version, the instance (`routine` above, the
    # name runs were always listed by), the method run, and the instance's configuration.
    # None on runs recorded before instances: their routine and instance share the name.
    blueprint: str | None = None
    instance: str | None = None
    method: str | None = None
    configuration: dict[str, Any] | None = _json()
    # A DAG run's node table and edges (mainspring.contract.messages.DagRecord as JSON).
    dag: dict[str, Any] | None = _json()


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
    # The named trigger that fired (None: the routine's own) and the payload it fired with.
    trigger: str | None = Field(default=None, index=True)
    payload: dict[str, Any] | None = _json()


class AuditRecord(SQLModel, table=True):
    """One action a person (or tool) took: who did what to which target, when and why."""

    __tablename__ = "audit"
    # The trail is read newest first, alone or within one routine.
    __table_args__ = (
        Index("ix_audit_at_id", "at", "id"),
        Index("ix_audit_routine_at_id", "routine", "at", "id"),
    )

    id: str = Field(primary_key=True)
    who: str
    action: str
    target_kind: str
    target: str = Field(sa_column=Column(Text, nullable=False))
    routine: str | None = None
    run_id: str | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))
    details: dict[str, Any] | None = _json()
    at: datetime | None = _when()


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


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine with the schema created or migrated (new columns and indexes added)."""
    url = normalise_url(url)
    connect_args = {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_durable_commits)
        with engine.connect() as conn:
            # WAL lets queries read while the recorder writes.
            conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.commit()
    if migrate:
        SQLModel.metadata.create_all(engine)
        _add_missing_columns(engine)
        _add_missing_indexes(engine)
        _fill_missing_created_at(engine)
    return engine


def _sqlite_durable_commits(dbapi_connection: Any, _record: Any) -> None:
    # The recorder acks events only after their commit: FULL fsyncs the WAL at each commit,
    # so an acked event survives a machine crash. Batching pays that fsync once per batch.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _add_missing_indexes(engine: Engine) -> None:
    for table in SQLModel.metadata.sorted_tables:
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def _fill_missing_created_at(engine: Engine) -> None:
    # Rows written before every event carried a creation time: page them by their first step.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE runs SET created_at = "
                "COALESCE(queued_at, started_at, finished_at, updated_at) WHERE created_at IS NULL"
            )
        )


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


class CursorError(ValueError):
    """A page cursor this recorder did not give out."""


def run_cursor(run: RunRecord) -> str:
    """An opaque cursor that continues a listing after this run."""
    created = as_utc(run.created_at)
    key = [created.isoformat() if created else None, run.id]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor continues after."""
    try:
        created, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return as_utc(datetime.fromisoformat(created)) or datetime.min, str(run_id)
    except (ValueError, TypeError, binascii.Error):
        raise CursorError(
            f"cursor {cursor[:40]!r} is not one a runs listing gave out: "
            "pass the `next` value of the previous page unchanged"
        ) from None


def list_runs(session: Session, query: RunQuery, limit: int | None = None) -> list[RunRecord]:
    """Runs matching the query, newest first, after its cursor; filters and limit in SQL."""
    statement = select(RunRecord)
    if query.routine:
        statement = statement.where(RunRecord.routine == query.routine)
    if query.status:
        statement = statement.where(RunRecord.status == query.status)
    if query.source:
        statement = statement.where(RunRecord.source == query.source)
    if query.name:
        statement = statement.where(
            col(RunRecord.name).ilike(f"%{_like_escaped(query.name)}%", escape="\\")
        )
    if query.description:
        statement = statement.where(
            col(RunRecord.description).ilike(f"%{_like_escaped(query.description)}%", escape="\\")
        )
    if query.since:
        statement = statement.where(col(RunRecord.created_at) >= as_utc(query.since))
    if query.until:
        statement = statement.where(col(RunRecord.created_at) < as_utc(query.until))
    dialect = session.get_bind().dialect.name
    if query.label:
        statement = statement.where(_has_label(dialect, query.label))
    for index, (key, value) in enumerate((query.attribute or {}).items()):
        statement = statement.where(_attribute_equals(dialect, index, key, value))
    if query.chain:
        statement = statement.where(col(RunRecord.id).in_(chain_of(session, query.chain)))
    if query.after:
        created, run_id = parse_cursor(query.after)
        created_at = col(RunRecord.created_at)
        # Written so both databases walk the (created_at, id) index backwards.
        statement = statement.where(
            created_at <= created,
            or_(created_at < created, and_(created_at == created, col(RunRecord.id) < run_id)),
        )
    statement = statement.order_by(col(RunRecord.created_at).desc(), col(RunRecord.id).desc())
    return list(session.exec(statement.limit(query.limit if limit is None else limit)))


def _like_escaped(text: str) -> str:
    # A `%` or `_` the user typed is looked for as itself, not as a wildcard.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_label(dialect: str, label: str) -> TextClause:
    # JSON operators differ between the two databases; both test membership in SQL.
    if dialect == "postgresql":
        return text("CAST(runs.labels AS JSONB) @> CAST(:label AS JSONB)").bindparams(
            label=json.dumps([label])
        )
    return text(
        "EXISTS (SELECT 1 FROM json_each(runs.labels) WHERE json_each.value = :label)"
    ).bindparams(label=label)


def _attribute_equals(dialect: str, index: int, key: str, value: Any) -> TextClause:
    key_name, value_name = f"attr_key_{index}", f"attr_value_{index}"
    if dialect == "postgresql":
        clause = f"(CAST(runs.attributes AS JSONB) -> :{key_name}) = CAST(:{value_name} AS JSONB)"
        key_param: str = key
    else:
        # `->` gives the value as minified JSON text; json() minifies the wanted one alike.
        clause = f"(runs.attributes -> :{key_name}) = json(:{value_name})"
        key_param = '$."' + key.replace('"', '\\"') + '"'
    return text(clause).bindparams(**{key_name: key_param, value_name: json.dumps(value)})


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
