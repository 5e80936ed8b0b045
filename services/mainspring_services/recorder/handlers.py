"""Recorder handlers: run events recorded in batches, trigger history, and run queries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream.nats import NatsBroker, NatsMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from mainspring.base import tracing
from mainspring.contract import subjects
from mainspring.contract.messages import (
    AuditRecorded,
    DeleteRuns,
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunProgressed,
    RunQueued,
    RunStarted,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.contract.queries import AuditQuery, RunLookup, RunQuery, TriggerEventsQuery
from mainspring.runtime.deadletters import REDELIVERY, RedeliveryPolicy
from mainspring.runtime.service import (
    RETRY_DELAY_S,
    delivered,
    durable,
    failure_reason,
    malformed_reason,
    one_line,
    park_message,
    publish_event,
    subscriber,
)
from mainspring.storage.artifacts import delete_run_files
from mainspring.storage.records import CursorError
from mainspring_services.recorder import core
from mainspring_services.recorder.history import ReplyTooLarge, RunHistory, RunQueries
from mainspring_services.recorder.ports import OutcomeLedger
from mainspring_services.recorder.settings import RecorderSettings

log = logging.getLogger("mainspring.recorder")

T = TypeVar("T")

RUNS_DURABLE = subjects.RECORDER_RUNS_CONSUMER
TRIGGERS_DURABLE = "recorder-triggers"
# External workflows' completions are recorded like runs, so a chain shows its outside parent.
EXTERNAL_DURABLE = "recorder-external"
AUDIT_DURABLE = subjects.RECORDER_AUDIT_CONSUMER
PROGRESS_DURABLE = subjects.RECORDER_PROGRESS_CONSUMER
# How long one fetch waits for the first event; an idle recorder asks again after it.
FETCH_WAIT_S = 5.0
# How long a batch stays with the recorder that fetched it unless it says it is still on it.
ACK_WAIT_S: float = RecorderSettings.model_fields["record_ack_wait_s"].default


def database_retry(ack_wait_s: float) -> RedeliveryPolicy:
    """Pauses between tries of a database that does not answer: from 1s, doubling, at most
    10s, and always well within the consumer's ack wait, which each try renews for the
    held batch."""
    longest = min(10.0, ack_wait_s / 3)
    return RedeliveryPolicy(first_delay_s=min(1.0, longest), max_delay_s=longest)


# Room left in a reply for its envelope around the encoded runs.
REPLY_ENVELOPE_BYTES = 1024


def _now() -> datetime:
    return datetime.now(UTC)


# The run subjects that change a run's row, and the model each one carries.
RUN_EVENT_MODELS: dict[str, type[core.RunEvent]] = {
    subjects.RUN_SUBMITTED: SubmitRun,
    **dict.fromkeys(subjects.RUN_REQUESTED_SUBJECTS, RequestRun),
    subjects.RUN_IN_MEMORY: RequestRun,
    subjects.RUN_STARTED: RunStarted,
    subjects.RUN_QUEUED: RunQueued,
    subjects.RUN_PROGRESS: RunProgressed,
}


def event_model(
    subject: str,
) -> type[core.RunEvent] | type[TriggerRecorded] | type[AuditRecorded] | None:
    """The model a recorded subject carries; None for subjects that change no row."""
    if subjects.is_run_completed(subject) or subject.startswith(f"{subjects.EXTERNAL_COMPLETED}."):
        return RunCompleted
    if subject == subjects.TRIGGER_RECORDED:
        return TriggerRecorded
    if subject == subjects.AUDIT_RECORDED:
        return AuditRecorded
    if subject.startswith(f"{subjects.RUN_HELD}."):
        # A request the dispatcher holds for a free slot: recorded queued like run.requested.
        return RequestRun
    return RUN_EVENT_MODELS.get(subject)


@dataclass
class ParsedBatch:
    """A fetched batch split into row changes, progress reports, firings, audit entries and
    bodies to park."""

    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    progress: list[RunProgressed] = field(default_factory=list)
    triggers: list[TriggerRecorded] = field(default_factory=list)
    audits: list[AuditRecorded] = field(default_factory=list)
    malformed: list[tuple[Msg, str]] = field(default_factory=list)
    # Each message that changes a row, with the run it changes.
    runs: list[tuple[Msg, str]] = field(default_factory=list)


def parse_batch(messages: Sequence[Msg], now: datetime) -> ParsedBatch:
    """Each event of a batch as what it writes, in stream order; bad bodies set apart."""
    batch = ParsedBatch()
    for message in messages:
        model = event_model(message.subject)
        if model is None:
            continue  # run.cancel and the like change no row
        try:
            event = model.model_validate_json(message.data)
        except ValidationError as exc:
            batch.malformed.append((message, malformed_reason(model, message.subject, exc)))
            continue
        if isinstance(event, TriggerRecorded):
            batch.triggers.append(event)
            continue
        if isinstance(event, AuditRecorded):
            batch.audits.append(event)
            continue
        if isinstance(event, RunProgressed):
            batch.progress.append(event)
        change = core.changes_for(event, now)
        batch.changes.append(change)
        batch.runs.append((message, change[0]))
    return batch


class EventBatches:
    """Records the events of one durable a batch at a time: one commit each, acked after it.

    A pull fetch returns as soon as any event is there, with everything already waiting
    (up to batch_size): one event alone is recorded at once, a burst in few commits.
    """

    def __init__(
        self,
        broker: NatsBroker,
        history: RunHistory,
        writes: Executor | None,
        batch_size: int,
        *,
        consumer: str = RUNS_DURABLE,
        subject: str = "run.>",
        stream: str = subjects.STREAM,
        keep_runs: bool = True,
        ack_wait_s: float = ACK_WAIT_S,
        unknown_run: RedeliveryPolicy = REDELIVERY,
    ) -> None:
        self.broker = broker
        # False (embedded mode without provenance): run events are acked and dropped, so no
        # run row or node table is kept; trigger firings are still recorded.
        self.keep_runs = keep_runs
        self.history = history
        self.writes = writes
        self.batch_size = batch_size
        self.consumer = consumer
        self.subject = subject
        self.stream = stream
        self.ack_wait_s = ack_wait_s
        self.database_retry = database_retry(ack_wait_s)
        # How an event of a run the history does not have yet waits for it.
        self.unknown_run = unknown_run

    async def run_forever(self, js: JetStreamContext) -> None:
        """Fetch and record batches until cancelled."""
        options = durable(self.consumer, self.subject, ack_wait_s=self.ack_wait_s)
        while True:
            try:
                subscription = await js.pull_subscribe(
                    options["subject"],
                    durable=self.consumer,
                    stream=self.stream,
                    config=options["config"],
                )
                break
            except Exception as exc:  # noqa: BLE001 - retried until bound
                log.warning(
                    "cannot consume %s yet (%s); trying again", self.subject, _first_line(exc)
                )
                await asyncio.sleep(RETRY_DELAY_S)
        try:
            while True:
                await self.fetch_and_record(subscription)
        finally:
            # A pull request still open may deliver more events to this subscription; left
            # subscribed, the connection's drain at shutdown would wait for them forever.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def fetch_and_record(self, subscription: JetStreamContext.PullSubscription) -> None:
        """Fetch what is waiting (or wait for the next event) and record it."""
        try:
            messages = await subscription.fetch(batch=self.batch_size, timeout=FETCH_WAIT_S)
        except TimeoutError:
            return  # idle, or the bus is reconnecting: ask again
        except Exception as exc:  # noqa: BLE001 - retried after a pause
            log.warning("fetching run events failed (%s); trying again", _first_line(exc))
            await asyncio.sleep(RETRY_DELAY_S)
            return
        try:
            await self.record(messages)
        except Exception:
            # Nothing acked: the events come back after the consumer's ack wait.
            log.exception("recording %d run events failed; they will be redelivered", len(messages))

    async def record(self, messages: Sequence[Msg]) -> None:
        """Park malformed events, commit the rest in one transaction, then ack the batch."""
        traced = [(m.subject, m.headers, len(m.data)) for m in messages]
        with tracing.handling_batch(traced):
            await self._record(messages)

    async def _record(self, messages: Sequence[Msg]) -> None:
        loop = asyncio.get_running_loop()
        now = _now()
        batch = await loop.run_in_executor(self.writes, parse_batch, messages, now)
        if not self.keep_runs:
            batch.changes, batch.progress = [], []
        for message, reason in batch.malformed:
            await park_message(self.broker, message, reason)
        while True:
            try:
                recorded = await loop.run_in_executor(
                    self.writes,
                    self.history.record_batch,
                    batch.changes,
                    batch.progress,
                    now,
                    batch.triggers,
                    batch.audits,
                )
                break
            except Exception as exc:  # noqa: BLE001 - not acked: held, or retried then parked
                if await self.database_answers():
                    # The database is there and refused this batch: its events must come
                    # back (and, failing for long, be parked) like any failed message.
                    await self.retry_later(messages, exc)
                    return
                await self.hold_until_database_answers(messages, exc)
        waiting: set[int] = set()
        for message, run_id in batch.runs:
            if run_id not in recorded.unattached:
                continue
            # Progress travels on its own stream, so it may overtake its run's request on
            # the way to the history: it waits for the request, and only a run still
            # unknown after every redelivery is parked.
            count = delivered(message)
            if self.unknown_run.exhausted(count):
                await park_message(
                    self.broker,
                    message,
                    core.unattached_reason(message.subject, run_id),
                    deliveries=count,
                )
            else:
                waiting.add(id(message))
                await message.nak(delay=self.unknown_run.delay_s(count))
        for message in messages:
            if id(message) not in waiting:
                await message.ack()

    async def database_answers(self) -> bool:
        """Does the run history database answer a trivial query now?"""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.writes, self.history.ping)
        except Exception:  # noqa: BLE001 - any failure means it does not answer
            return False
        return True

    async def hold_until_database_answers(self, messages: Sequence[Msg], error: Exception) -> None:
        """Keep a batch unacked, and in progress on the server, until the database answers.

        A database that is away is nobody's message's fault: nak'ing each batch would fetch,
        fail and nak every new event in a tight loop, and burn the deliveries that dead-letter
        a message after a quarter of an hour, so a long outage would park the whole history.
        Holding the batch stops fetching, tries the database with a growing pause, and records
        the same batch the moment it answers.
        """
        log.error(
            "the run history database does not answer (%s); holding %d events of %s unacked "
            "until it does",
            _first_line(error),
            len(messages),
            self.subject,
        )
        attempt = 0
        while True:
            attempt += 1
            await asyncio.sleep(self.database_retry.delay_s(attempt))
            # Below the consumer's ack wait, so the server does not hand the batch out again.
            for message in messages:
                await message.in_progress()
            if await self.database_answers():
                log.warning("the run history database answers again; recording %s", self.subject)
                return

    async def retry_later(self, messages: Sequence[Msg], error: Exception) -> None:
        """Nak a batch that could not be committed with the shared redelivery policy; an event
        past its delivery limit (about 15 minutes of failures) is dead-lettered instead."""
        delay = REDELIVERY.delay_s(max(delivered(m) for m in messages))
        log.error(
            "could not record %d events of %s in the run history database (%s); "
            "none acked, they come back in %.0fs",
            len(messages),
            self.subject,
            _first_line(error),
            delay,
        )
        for message in messages:
            count = delivered(message)
            if self.unknown_run.exhausted(count):
                reason = failure_reason(message.subject, count, error)
                await park_message(self.broker, message, reason, deliveries=count)
                await message.ack()
            else:
                await message.nak(delay=self.unknown_run.delay_s(count))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class QueryReplies:
    """Answers run queries on their own threads and engine; every failure answers with its cause."""

    def __init__(self, queries: RunQueries, reads: Executor) -> None:
        self.queries = queries
        self.reads = reads
        self.max_payload = 1024 * 1024

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """Run a database read on the query threads."""
        return await asyncio.get_running_loop().run_in_executor(self.reads, work, *args)

    def fit(self, what: str, reply: dict[str, Any]) -> bytes:
        """The reply encoded, or an error reply when it would exceed the bus's max payload."""
        body = json.dumps(reply).encode()
        if len(body) <= self.max_payload:
            return body
        # `what` may name a requested id of any length: cut, so the error reply itself fits.
        return error_reply(
            f"{what[:200]} is {len(body)} bytes, more than the bus's max payload of "
            f"{self.max_payload} bytes: raise max_payload in the nats-server configuration"
        )

    async def runs_page(self, body: bytes) -> bytes:
        """A page of runs, cut below the max payload, with the cursor to the next one."""
        query = RunQuery.model_validate_json(body or b"{}")
        page = await self.read(self.queries.page, query, self.max_payload - REPLY_ENVELOPE_BYTES)
        next_cursor = json.dumps(page.next).encode()
        return b'{"runs": [' + b", ".join(page.runs) + b'], "next": ' + next_cursor + b"}"


def error_reply(reason: str) -> bytes:
    """A query reply that carries why it could not be answered."""
    return json.dumps({"error": reason}).encode()


async def answer(what: str, produce: Callable[[], Any]) -> bytes:
    """The reply of a query, or an error reply naming the real cause (never silence)."""
    try:
        reply: bytes = await produce()
        return reply
    except ValidationError as exc:
        return error_reply(f"bad {what} request: {one_line(exc)}")
    except CursorError as exc:
        return error_reply(f"bad {what} request: {exc}")
    except ReplyTooLarge as exc:
        return error_reply(str(exc))
    except Exception as exc:
        log.exception("answering %s failed", what)
        return error_reply(f"the recorder could not read {what}: {_first_line(exc)}")


# Queries answered side by side; the database reads run on as many threads.
QUERY_WORKERS = 4
# Run ids a delete reply lists at most (the counts are whole): it must fit one message.
DELETE_REPLY_IDS = 1000
# Runs the retention deletes per transaction.
RETENTION_BATCH = 500


class RunDeletion:
    """Deletes finished runs: their files (logs, artifacts) first, then rows and progress.

    Files first, so a run whose files could not be removed stays listed and a second delete
    tries again. Rows are deleted on the writer thread, never beside a batch merging them.
    """

    def __init__(self, history: RunHistory, writes: Executor | None, artifact_root: str) -> None:
        self.history = history
        self.writes = writes
        self.artifact_root = artifact_root

    async def delete(self, request: DeleteRuns) -> dict[str, Any]:
        """Delete what a request names (or say what it would); running runs are only named."""
        loop = asyncio.get_running_loop()
        statuses = await loop.run_in_executor(self.writes, self.history.statuses, request)
        finished, unfinished = core.split_deletable(statuses)
        if finished and not request.dry_run:
            await self.remove(finished)
        return {
            "dry_run": request.dry_run,
            "deleted": finished[:DELETE_REPLY_IDS],
            "deleted_count": len(finished),
            "running": unfinished[:DELETE_REPLY_IDS],
            "running_count": len(unfinished),
            "missing": sorted(set(request.run_ids) - statuses.keys())[:DELETE_REPLY_IDS],
        }

    async def remove(self, run_ids: Sequence[str]) -> int:
        """Delete finished runs' files, rows and progress; returns how many rows went."""
        for run_id in run_ids:
            await asyncio.to_thread(delete_run_files, self.artifact_root, run_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.writes, self.history.delete, list(run_ids))


class Retention:
    """Deletes finished runs past the retention setting, every retention_every_s."""

    def __init__(self, deletion: RunDeletion, settings: RecorderSettings) -> None:
        self.deletion = deletion
        self.settings = settings

    def enabled(self) -> bool:
        """Is any retention set (else every run is kept)?"""
        return (
            self.settings.retention_days is not None
            or self.settings.retention_runs_per_routine is not None
        )

    async def apply_once(self) -> int:
        """Delete what is past the retention now; returns how many runs went."""
        cutoff = core.retention_cutoff(_now(), self.settings.retention_days)
        keep = self.settings.retention_runs_per_routine
        loop = asyncio.get_running_loop()
        deleted = 0
        while True:
            past = await loop.run_in_executor(
                self.deletion.writes,
                self.deletion.history.past_retention,
                cutoff,
                keep,
                RETENTION_BATCH,
            )
            if past:
                deleted += await self.deletion.remove(past)
            if len(past) < RETENTION_BATCH:
                return deleted

    async def run_forever(self) -> None:
        """Apply the retention at start and then every retention_every_s, until cancelled."""
        while True:
            try:
                deleted = await self.apply_once()
                if deleted:
                    log.info("retention: deleted %d finished run(s)", deleted)
            except Exception:
                log.exception("applying the retention failed; trying again")
            await asyncio.sleep(self.settings.retention_every_s)


def register(broker: NatsBroker, replies: QueryReplies, deletion: RunDeletion) -> None:
    """Answer run queries and delete requests."""

    @subscriber(broker, subjects.API_RUNS_DELETE)
    async def on_runs_delete(message: NatsMessage) -> bytes:
        async def produce() -> bytes:
            request = DeleteRuns.model_validate_json(message.body or b"{}")
            return json.dumps(await deletion.delete(request)).encode()

        return await answer("runs delete", produce)

    @subscriber(broker, subjects.API_RUNS_GET, max_workers=QUERY_WORKERS)
    async def on_runs_get(message: NatsMessage) -> bytes:
        async def produce() -> bytes:
            run_id = RunLookup.model_validate_json(message.body or b"{}").run_id
            run = await replies.read(replies.queries.get, run_id)
            return replies.fit(f"run {run_id}", {"run": run})

        return await answer("run", produce)

    @subscriber(broker, subjects.API_RUNS_LIST, max_workers=QUERY_WORKERS)
    async def on_runs_list(message: NatsMessage) -> bytes:
        return await answer("runs list", lambda: replies.runs_page(message.body))

    @subscriber(broker, subjects.API_TRIGGER_EVENTS, max_workers=QUERY_WORKERS)
    async def on_trigger_events(message: NatsMessage) -> bytes:
        async def produce() -> bytes:
            query = TriggerEventsQuery.model_validate_json(message.body or b"{}")
            rows = await replies.read(
                replies.queries.trigger_events, query.routine, query.limit, query.trigger
            )
            named = query.trigger or query.routine
            return replies.fit(f"the trigger history of {named}", {"events": rows})

        return await answer("trigger events", produce)

    @subscriber(broker, subjects.API_AUDIT_LIST, max_workers=QUERY_WORKERS)
    async def on_audit_list(message: NatsMessage) -> bytes:
        async def produce() -> bytes:
            query = AuditQuery.model_validate_json(message.body or b"{}")
            entries = await replies.read(replies.queries.audit, query)
            return replies.fit("the audit trail", {"entries": entries})

        return await answer("audit list", produce)


class StaleRunSweep:
    """Fails runs that stay `running` while no runner heartbeats them (every runner gone).

    While any runner lives, a lost run is redelivered within the runners' ack wait and
    beats again; this sweep covers the case where none is left to take it over. It settles
    the run's outcome in the run ledger and publishes it as the run's RunCompleted, exactly
    as a runner would: the run history records it from the stream, completion triggers
    fire, and a runner that comes back later finds the outcome settled and cannot
    contradict it. The cancel mark keeps such a runner from starting the run again.
    """

    def __init__(
        self,
        history: RunHistory,
        settings: RecorderSettings,
        writes: Executor | None,
        broker: NatsBroker,
        ledger: OutcomeLedger,
    ) -> None:
        self.history = history
        self.settings = settings
        self.writes = writes
        self.broker = broker
        self.ledger = ledger
        self.last_beats: dict[str, datetime] = {}
        self.watching_since = _now()

    def beat(self, heartbeat: RunHeartbeat) -> None:
        """Remember the latest heartbeat of a run."""
        self.last_beats[heartbeat.run_id] = heartbeat.at

    async def sweep_once(self) -> list[str]:
        """Fail the stale runs now; returns their ids."""
        loop = asyncio.get_running_loop()
        now = _now()
        running = await loop.run_in_executor(self.writes, self.history.running)
        stale = core.stale_runs(
            running, self.last_beats, self.watching_since, now, self.settings.stale_run_after_s
        )
        rows = await loop.run_in_executor(self.writes, self.history.rows, stale) if stale else {}
        for run_id in stale:
            if run_id in rows:  # else deleted meanwhile: nothing left to end
                await self.fail(rows[run_id], now)
        running_ids = {run_id for run_id, _, _ in running}
        for run_id in list(self.last_beats):
            if run_id not in running_ids:
                del self.last_beats[run_id]
        return stale

    async def fail(self, row: dict[str, Any], now: datetime) -> None:
        """Settle a stale run failed and publish its outcome (or the one settled before)."""
        await self.ledger.mark_cancelled(row["id"], "stale run sweep")
        ours = core.completion_for_stale(row, self.settings.stale_run_after_s, now)
        settled = await self.ledger.settle(ours)
        await publish_event(self.broker, settled, settled.subject())
        log.warning("run %s %s: %s", row["id"], settled.status, settled.error)

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

    @subscriber(broker, subjects.RUN_HEARTBEAT)
    async def on_heartbeat(message: NatsMessage) -> None:
        with contextlib.suppress(ValidationError):
            sweep.beat(RunHeartbeat.model_validate_json(message.body))
