"""Recorder handlers: load the row, merge the event (core), persist; answer run queries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from nats.js import JetStreamContext
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mainspring import subjects
from mainspring.ledger import mark_cancelled
from mainspring.messages import (
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunProgressed,
    RunQueued,
    RunStarted,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.records import (
    ProgressRecord,
    RunQuery,
    RunRecord,
    TriggerEventRecord,
    as_utc,
    list_runs,
)
from mainspring.service import durable, parse_or_park
from services.recorder import core
from services.recorder.settings import RecorderSettings

log = logging.getLogger("mainspring.recorder")

_DATETIME_FIELDS = ("created_at", "queued_at", "started_at", "finished_at", "updated_at")


def run_as_dict(record: RunRecord) -> dict[str, Any]:
    """A run row as JSON-ready data (UTC ISO times)."""
    data = record.model_dump()
    for key in _DATETIME_FIELDS:
        value = as_utc(data.get(key))
        data[key] = value.isoformat() if value else None
    return data


class RunHistory:
    """The recorder's writes, one short transaction per event."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def apply(self, run_id: str, changes: dict[str, Any], now: datetime) -> None:
        """Merge changes into the run row (insert when new)."""
        with Session(self.engine) as session:
            record = session.get(RunRecord, run_id)
            current = record.model_dump() if record else None
            merged = core.merge(current, changes)
            merged["updated_at"] = now
            if record is None:
                session.add(RunRecord(id=run_id, **{k: v for k, v in merged.items() if k != "id"}))
            else:
                for key, value in merged.items():
                    setattr(record, key, value)
            session.commit()

    def add_progress(self, event: RunProgressed) -> None:
        """Keep each progress message in the run's history."""
        with Session(self.engine) as session:
            session.add(
                ProgressRecord(
                    run_id=event.run_id, fraction=event.fraction, message=event.message, at=event.at
                )
            )
            session.commit()

    def add_trigger_event(self, event: TriggerRecorded) -> None:
        """One history row per firing (redeliveries overwrite the same row)."""
        with Session(self.engine) as session:
            session.merge(
                TriggerEventRecord(
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
                )
            )
            session.commit()

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

    def runs(self, query: RunQuery) -> list[dict[str, Any]]:
        """Runs matching a query, newest first."""
        with Session(self.engine) as session:
            return [run_as_dict(r) for r in list_runs(session, query)]

    def running(self) -> list[tuple[str, datetime | None, str | None]]:
        """Runs recorded as running: (id, started_at, queue_reason)."""
        with Session(self.engine) as session:
            rows = session.exec(select(RunRecord).where(RunRecord.status == "running")).all()
            return [(r.id, as_utc(r.started_at), r.queue_reason) for r in rows]

    def trigger_events(self, routine: str, limit: int) -> list[dict[str, Any]]:
        """Latest firings of a routine's trigger."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(TriggerEventRecord)
                .where(TriggerEventRecord.routine == routine)
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
                }
                for r in rows
            ]


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


def _now() -> datetime:
    return datetime.now(UTC)


# The run subjects that change a run's row, and the model each one carries.
RUN_EVENT_MODELS: dict[str, type[core.RunEvent]] = {
    subjects.RUN_SUBMITTED: SubmitRun,
    subjects.RUN_REQUESTED: RequestRun,
    subjects.RUN_IN_MEMORY: RequestRun,
    subjects.RUN_STARTED: RunStarted,
    subjects.RUN_QUEUED: RunQueued,
    subjects.RUN_PROGRESS: RunProgressed,
    subjects.RUN_COMPLETED: RunCompleted,
}


def register(broker: NatsBroker, history: RunHistory) -> None:
    """Subscribe the recorder to every run subject and answer queries."""

    @broker.subscriber(**durable("recorder-runs", "run.>"))
    async def on_run_event(message: NatsMessage) -> None:
        model = RUN_EVENT_MODELS.get(message.raw_message.subject)
        if model is None:
            return  # run.cancel and the like change no row
        event = await parse_or_park(broker, message, model)
        if event is None:
            return
        if isinstance(event, RunProgressed):
            await asyncio.to_thread(history.add_progress, event)
        run_id, changes = core.changes_for(event, _now())
        await asyncio.to_thread(history.apply, run_id, changes, _now())

    @broker.subscriber(**durable("recorder-triggers", subjects.TRIGGER_RECORDED))
    async def on_trigger_recorded(message: NatsMessage) -> None:
        recorded = await parse_or_park(broker, message, TriggerRecorded)
        if recorded:
            await asyncio.to_thread(history.add_trigger_event, recorded)

    @broker.subscriber(subjects.API_RUNS_GET)
    async def on_runs_get(message: NatsMessage) -> bytes:
        run_id = json.loads(message.body or b"{}").get("run_id", "")
        return json.dumps({"run": await asyncio.to_thread(history.get, run_id)}).encode()

    @broker.subscriber(subjects.API_RUNS_LIST)
    async def on_runs_list(message: NatsMessage) -> bytes:
        query = RunQuery.model_validate_json(message.body or b"{}")
        return json.dumps({"runs": await asyncio.to_thread(history.runs, query)}).encode()

    @broker.subscriber(subjects.API_TRIGGER_EVENTS)
    async def on_trigger_events(message: NatsMessage) -> bytes:
        request = json.loads(message.body or b"{}")
        rows = await asyncio.to_thread(
            history.trigger_events, request.get("routine", ""), int(request.get("limit", 50))
        )
        return json.dumps({"events": rows}).encode()


class StaleRunSweep:
    """Fails runs that stay `running` while no runner heartbeats them (every runner gone).

    While any runner lives, a lost run is redelivered within the runners' ack wait and
    beats again; this sweep covers the case where none is left to take it over. It writes
    the run history only (the recorder publishes nothing) and leaves a cancel mark so a
    runner that comes back later does not start the run behind the record's back.
    """

    def __init__(self, history: RunHistory, settings: RecorderSettings) -> None:
        self.history = history
        self.settings = settings
        self.last_beats: dict[str, datetime] = {}
        self.watching_since = _now()
        self.js: JetStreamContext | None = None

    def beat(self, heartbeat: RunHeartbeat) -> None:
        """Remember the latest heartbeat of a run."""
        self.last_beats[heartbeat.run_id] = heartbeat.at

    async def sweep_once(self) -> list[str]:
        """Fail the stale runs now; returns their ids."""
        now = _now()
        running = await asyncio.to_thread(self.history.running)
        stale = core.stale_runs(
            running, self.last_beats, self.watching_since, now, self.settings.stale_run_after_s
        )
        for run_id in stale:
            if self.js is not None:
                await mark_cancelled(self.js, run_id, "stale run sweep")
            changes = core.changes_for_stale(self.settings.stale_run_after_s, now)
            await asyncio.to_thread(self.history.apply, run_id, changes, now)
            log.warning("run %s failed: no runner heartbeat", run_id)
        running_ids = {run_id for run_id, _, _ in running}
        for run_id in list(self.last_beats):
            if run_id not in running_ids:
                del self.last_beats[run_id]
        return stale

    async def run_forever(self) -> None:
        """Sweep every stale_sweep_every_s until cancelled."""
        while True:
            await asyncio.sleep(self.settings.stale_sweep_every_s)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("stale run sweep failed; trying again")


def register_stale_sweep(broker: NatsBroker, sweep: StaleRunSweep) -> None:
    """Listen to runner heartbeats (core NATS) for the stale run sweep."""

    @broker.subscriber(subjects.RUN_HEARTBEAT)
    async def on_heartbeat(message: NatsMessage) -> None:
        with contextlib.suppress(ValidationError):
            sweep.beat(RunHeartbeat.model_validate_json(message.body))
