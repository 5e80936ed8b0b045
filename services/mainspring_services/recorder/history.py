"""The run history database: batched writes (RunHistory) and reads on their own engine (RunQueries)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, bindparam, delete, insert, text, update
from sqlmodel import Session, and_, col, or_, select

from mainspring.contract.messages import (
    TERMINAL_STATUSES,
    AuditRecorded,
    DeleteRuns,
    RunProgressed,
    TriggerRecorded,
)
from mainspring.contract.queries import AuditQuery, RunQuery
from mainspring.storage.records import (
    AuditRecord,
    ProgressRecord,
    RunRecord,
    TriggerEventRecord,
    as_utc,
    list_runs,
    run_cursor,
)
from mainspring_services.recorder import core

_DATETIME_FIELDS = ("created_at", "queued_at", "started_at", "finished_at", "updated_at")
# The runs table for Core statements (SQLModel types the attribute only on instances).
RUNS_TABLE: Table = RunRecord.__table__  # type: ignore[attr-defined]
# Rows one listing request reads at most; the client asks again with the cursor for more.
MAX_PAGE_ROWS = 2000


def run_as_dict(record: RunRecord) -> dict[str, Any]:
    """A run row as JSON-ready data (UTC ISO times)."""
    data = record.model_dump()
    for key in _DATETIME_FIELDS:
        value = as_utc(data.get(key))
        data[key] = value.isoformat() if value else None
    return data


@dataclass(frozen=True)
class RecordedBatch:
    """What a committed batch wrote: run rows, and the runs it could not record."""

    rows: int
    unattached: frozenset[str]


class RunHistory:
    """The recorder's writes: one transaction per batch of events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_batch(
        self,
        changes: Sequence[tuple[str, dict[str, Any]]],
        progress: Sequence[RunProgressed],
        now: datetime,
        triggers: Sequence[TriggerRecorded] = (),
        audits: Sequence[AuditRecorded] = (),
    ) -> RecordedBatch:
        """Merge a batch of run changes (core.fold), progress reports, firings and audit
        entries in one commit.

        Returns how many run rows were written and the runs left out (core.unattached).
        """
        run_ids = sorted({run_id for run_id, _ in changes})
        runs = RUNS_TABLE
        with Session(self.engine) as session:
            # Rows as plain dicts and written with executemany, not ORM objects: the unit of
            # work's bookkeeping cost more than the merge itself. FOR UPDATE (PostgreSQL)
            # keeps a second recorder from merging the same rows at the same time; SQLite
            # has one writer anyway.
            found = session.execute(
                runs.select().where(runs.c.id.in_(run_ids)).with_for_update()
            ).mappings()
            current = {row["id"]: core.in_utc(dict(row)) for row in found}
            rows = core.fold(current, changes)
            unattached = core.unattached(current, rows)
            inserts: list[dict[str, Any]] = []
            updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for run_id, row in rows.items():
                if run_id in unattached:
                    continue
                if run_id in current:
                    changed = {**row, "updated_at": now, "id": run_id}
                    updates.setdefault(tuple(sorted(changed)), []).append(changed)
                else:
                    # Through the model: its defaults fill what no event has said yet.
                    inserts.append(
                        RunRecord(**{**row, "updated_at": now, "id": run_id}).model_dump()
                    )
            if inserts:
                session.execute(insert(runs), inserts)
            for columns, batch in updates.items():
                values: dict[str, Any] = {c: bindparam(f"new_{c}") for c in columns if c != "id"}
                session.execute(
                    update(runs).where(runs.c.id == bindparam("new_id")).values(values),
                    [{f"new_{c}": v for c, v in row.items()} for row in batch],
                )
            for fired in triggers:
                # One history row per firing: a redelivery overwrites the same row.
                session.merge(trigger_event_record(fired))
            if audits:
                self._record_audits(session, audits)
            for event in progress:
                if event.run_id in unattached:
                    continue
                session.add(
                    ProgressRecord(
                        run_id=event.run_id,
                        fraction=event.fraction,
                        message=event.message,
                        at=core.in_utc({"at": event.at})["at"],
                    )
                )
            session.commit()
        return RecordedBatch(rows=len(rows) - len(unattached), unattached=frozenset(unattached))

    def _record_audits(self, session: Session, audits: Sequence[AuditRecorded]) -> None:
        asked = sorted({a.run_id for a in audits if a.run_id and a.routine is None})
        run_routines = (
            dict(
                session.exec(
                    select(RunRecord.id, RunRecord.routine).where(col(RunRecord.id).in_(asked))
                ).all()
            )
            if asked
            else {}
        )
        for entry in audits:
            # One row per entry: a redelivery overwrites the same row.
            session.merge(AuditRecord(**core.audit_row(entry, run_routines)))

    def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def apply(self, run_id: str, changes: dict[str, Any], now: datetime) -> None:
        """Merge one change into a run row (insert when new)."""
        self.record_batch([(run_id, changes)], [], now)

    def running(self) -> list[tuple[str, datetime | None, str | None]]:
        """Runs recorded as running: (id, started_at, queue_reason)."""
        with Session(self.engine) as session:
            rows = session.exec(select(RunRecord).where(RunRecord.status == "running")).all()
            return [(r.id, as_utc(r.started_at), r.queue_reason) for r in rows]

    def statuses(self, request: DeleteRuns) -> dict[str, str]:
        """The recorded runs a delete request names, with their status."""
        statement = select(RunRecord.id, RunRecord.status)
        if request.run_ids:
            statement = statement.where(col(RunRecord.id).in_(request.run_ids))
        else:
            statement = statement.where(RunRecord.routine == request.routine)
            if request.status:
                statement = statement.where(RunRecord.status == request.status)
            if request.before:
                statement = statement.where(col(RunRecord.created_at) < as_utc(request.before))
        with Session(self.engine) as session:
            return {run_id: status for run_id, status in session.exec(statement).all()}

    def past_retention(
        self, cutoff: datetime | None, keep_per_routine: int | None, limit: int
    ) -> list[str]:
        """Finished runs past the retention, at most `limit`: created before the cutoff, or
        older than the newest keep_per_routine finished runs of their routine."""
        finished = col(RunRecord.status).in_(sorted(TERMINAL_STATUSES))
        found: set[str] = set()
        with Session(self.engine) as session:
            if cutoff is not None:
                found.update(
                    session.exec(
                        select(RunRecord.id)
                        .where(finished, col(RunRecord.created_at) < cutoff)
                        .limit(limit)
                    ).all()
                )
            if keep_per_routine is not None:
                routines = session.exec(select(RunRecord.routine).where(finished).distinct()).all()
                for routine in routines:
                    found.update(
                        session.exec(
                            select(RunRecord.id)
                            .where(RunRecord.routine == routine, finished)
                            .order_by(col(RunRecord.created_at).desc(), col(RunRecord.id).desc())
                            .offset(keep_per_routine)
                            .limit(limit)
                        ).all()
                    )
        return sorted(found)[:limit]

    def delete(self, run_ids: Sequence[str]) -> int:
        """Delete finished runs' rows and progress history; returns how many runs went."""
        ids = list(run_ids)
        with Session(self.engine) as session:
            # The status is checked again in the same transaction: only a finished run goes.
            gone = list(
                session.exec(
                    select(RunRecord.id).where(
                        col(RunRecord.id).in_(ids),
                        col(RunRecord.status).in_(sorted(TERMINAL_STATUSES)),
                    )
                ).all()
            )
            session.exec(delete(ProgressRecord).where(col(ProgressRecord.run_id).in_(gone)))
            session.exec(delete(RunRecord).where(col(RunRecord.id).in_(gone)))
            session.commit()
        return len(gone)

    def rows(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of some runs, by id (times in UTC)."""
        with Session(self.engine) as session:
            found = session.exec(select(RunRecord).where(col(RunRecord.id).in_(run_ids))).all()
            return {r.id: core.in_utc(r.model_dump()) for r in found}


def trigger_event_record(event: TriggerRecorded) -> TriggerEventRecord:
    """The trigger history row of one firing."""
    return TriggerEventRecord(
        id=event.message_id(),
        routine=event.routine,
        kind=event.kind,
        status=event.status,
        event_key=event.event_key,
        fired_at=event.fired_at,
        scheduled_at=event.scheduled_at,
        run_id=event.run_id,
        reason=event.reason,
        chain=event.chain or None,
        trigger=event.trigger,
        payload=event.payload,
    )


@dataclass(frozen=True)
class RunPage:
    """Runs of one listing reply, JSON-encoded one by one, and the cursor to the next page."""

    runs: list[bytes]
    next: str | None


class ReplyTooLarge(ValueError):
    """One item alone is larger than the bus lets a reply be."""


class RunQueries:
    """The recorder's reads, on an engine of their own so no query waits behind a batch commit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (for /readyz)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def get(self, run_id: str) -> dict[str, Any] | None:
        """A run with its progress history, parent and children."""
        with Session(self.engine) as session:
            record = session.get(RunRecord, run_id)
            if record is None:
                matches = session.exec(
                    select(RunRecord).where(col(RunRecord.id).startswith(run_id)).limit(2)
                ).all()
                record = matches[0] if len(matches) == 1 else None
            if record is None:
                return None
            data = run_as_dict(record)
            history = session.exec(
                select(ProgressRecord)
                .where(ProgressRecord.run_id == record.id)
                .order_by(col(ProgressRecord.id))
            ).all()
            data["progress_history"] = [
                {"fraction": p.fraction, "message": p.message, "at": _iso(p.at)} for p in history
            ]
            children = session.exec(
                select(RunRecord.id).where(RunRecord.parent_run_id == record.id)
            ).all()
            data["children"] = list(children)
            data["lineage"] = lineage_of(session, record)
            return data

    def page(self, query: RunQuery, max_bytes: int) -> RunPage:
        """Runs matching a query, newest first, as many as fit in max_bytes of reply."""
        wanted = min(query.limit, MAX_PAGE_ROWS)
        if wanted == 0:
            return RunPage([], None)
        with Session(self.engine) as session:
            # One row more than wanted tells whether another page follows.
            records = list_runs(session, query, limit=wanted + 1)
        encoded: list[bytes] = []
        size = 0
        for record in records[:wanted]:
            row = json.dumps(run_as_dict(record)).encode()
            if size + len(row) + 1 > max_bytes:
                if not encoded:
                    raise ReplyTooLarge(
                        f"run {record.id} alone is {len(row)} bytes, more than the "
                        f"{max_bytes} bytes a reply may carry: read it with `mainspring runs show`"
                    )
                return RunPage(encoded, run_cursor(records[len(encoded) - 1]))
            encoded.append(row)
            size += len(row) + 1
        more = len(records) > wanted
        return RunPage(encoded, run_cursor(records[wanted - 1]) if more else None)

    def trigger_events(
        self, routine: str, limit: int, trigger: str | None = None
    ) -> list[dict[str, Any]]:
        """Latest firings of a routine's triggers, or of the trigger named `trigger`.

        A routine's own trigger is the trigger named after the routine, so a name matches
        the named trigger of that name and the own trigger of the routine of that name.
        """
        if trigger is not None:
            which = or_(
                col(TriggerEventRecord.trigger) == trigger,
                and_(
                    col(TriggerEventRecord.trigger).is_(None),
                    col(TriggerEventRecord.routine) == trigger,
                ),
            )
        else:
            which = col(TriggerEventRecord.routine) == routine
        with Session(self.engine) as session:
            rows = session.exec(
                select(TriggerEventRecord)
                .where(which)
                .order_by(col(TriggerEventRecord.fired_at).desc())
                .limit(limit)
            ).all()
            return [
                {
                    "fired_at": _iso(r.fired_at),
                    "scheduled_at": _iso(r.scheduled_at),
                    "kind": r.kind,
                    "status": r.status,
                    "run_id": r.run_id,
                    "reason": r.reason,
                    "event_key": r.event_key,
                    "chain": r.chain or [],
                    "trigger": r.trigger or r.routine,
                    "target": r.routine,
                    "payload": r.payload,
                }
                for r in rows
            ]

    def audit(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The latest audit entries, newest first, of one routine when the query names it."""
        statement = select(AuditRecord)
        if query.routine:
            statement = statement.where(AuditRecord.routine == query.routine)
        statement = statement.order_by(col(AuditRecord.at).desc(), col(AuditRecord.id).desc())
        with Session(self.engine) as session:
            rows = session.exec(statement.limit(query.limit)).all()
            return [audit_as_dict(r) for r in rows]


def audit_as_dict(record: AuditRecord) -> dict[str, Any]:
    """An audit row as JSON-ready data (UTC ISO time)."""
    return {**record.model_dump(), "details": record.details or {}, "at": _iso(record.at)}


def lineage_of(session: Session, record: RunRecord) -> dict[str, Any]:
    """A run's parent and children in brief (routine, number, status), for `runs show`."""

    def brief(run: RunRecord) -> dict[str, Any]:
        return {
            "id": run.id,
            "routine": run.routine,
            "run_number": run.run_number,
            "status": run.status,
            "trigger_kind": run.trigger_kind,
        }

    parent = session.get(RunRecord, record.parent_run_id) if record.parent_run_id else None
    children = session.exec(
        select(RunRecord)
        .where(RunRecord.parent_run_id == record.id)
        .order_by(col(RunRecord.created_at))
    ).all()
    return {
        "parent": brief(parent) if parent else None,
        "children": [brief(c) for c in children],
    }


def _iso(value: datetime | None) -> str | None:
    utc = as_utc(value)
    return utc.isoformat() if utc else None
