"""Recorder: writes every run event to the run history database and answers queries."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from faststream import FastStream
from sqlalchemy.exc import SQLAlchemyError

from mainspring.contract import subjects
from mainspring.runtime.deadletters import RedeliveryPolicy
from mainspring.runtime.service import build_app as build_service_app
from mainspring.runtime.service import build_broker, configure_logging, run_service
from mainspring.storage.ledger import LedgerMarks
from mainspring.storage.records import open_engine
from mainspring_services.recorder.handlers import (
    AUDIT_DURABLE,
    EXTERNAL_DURABLE,
    PROGRESS_DURABLE,
    QUERY_WORKERS,
    TRIGGERS_DURABLE,
    EventBatches,
    QueryReplies,
    Retention,
    RunDeletion,
    StaleRunSweep,
    register,
    register_stale_sweep,
)
from mainspring_services.recorder.history import RunHistory, RunQueries
from mainspring_services.recorder.settings import RecorderSettings


def build_app(settings: RecorderSettings) -> FastStream:
    """Wire the broker, the database (a write engine and a read engine) and the handlers."""
    broker = build_broker(settings, "recorder")
    url = settings.resolved_database_url()
    history = RunHistory(open_engine(url))
    # One writer thread: batches, trigger history and the sweep never merge the same row at
    # once. Queries get their own engine and threads, so none waits behind a commit.
    writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder-write")
    reads = ThreadPoolExecutor(max_workers=QUERY_WORKERS, thread_name_prefix="recorder-read")
    replies = QueryReplies(RunQueries(open_engine(url, migrate=False)), reads)
    deletion = RunDeletion(history, writes, settings.resolved_artifact_root())
    retention = Retention(deletion, settings)
    register(broker, replies, deletion)
    batches = functools.partial(
        EventBatches,
        broker,
        history,
        writes,
        settings.record_batch_size,
        ack_wait_s=settings.record_ack_wait_s,
    )
    consumers = [
        batches(keep_runs=settings.record_runs),
        batches(
            consumer=PROGRESS_DURABLE,
            subject=subjects.RUN_PROGRESS,
            stream=subjects.PROGRESS_STREAM,
            keep_runs=settings.record_runs,
            unknown_run=RedeliveryPolicy(max_deliveries=settings.unknown_run_deliveries),
        ),
        batches(consumer=TRIGGERS_DURABLE, subject=subjects.TRIGGER_RECORDED),
        batches(
            consumer=EXTERNAL_DURABLE,
            subject=subjects.EXTERNAL_COMPLETED_ANY,
            keep_runs=settings.record_runs,
        ),
        batches(consumer=AUDIT_DURABLE, subject=subjects.AUDIT_RECORDED),
    ]

    async def database_reachable() -> str | None:
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(reads, replies.queries.ping), 5
            )
        except (TimeoutError, OSError, SQLAlchemyError) as exc:
            return f"the run history database does not answer ({type(exc).__name__})"
        return None

    app = build_service_app(broker, settings, "recorder", ready_checks=[database_reachable])
    tasks: list[asyncio.Task[None]] = []
    sweeps: list[StaleRunSweep] = []

    @app.on_startup
    async def wire_sweep() -> None:
        # The sweep settles outcomes in the run ledger: built once the bus is connected, and
        # subscribed to heartbeats before the broker starts consuming.
        ledger = LedgerMarks(broker.connection.jetstream())
        sweep = StaleRunSweep(history, settings, writes, broker, ledger)
        register_stale_sweep(broker, sweep)
        sweeps.append(sweep)

    @app.after_startup
    async def start_tasks() -> None:
        js = broker.connection.jetstream()
        replies.max_payload = broker.connection.max_payload
        tasks.extend(asyncio.create_task(consumer.run_forever(js)) for consumer in consumers)
        tasks.extend(asyncio.create_task(sweep.run_forever()) for sweep in sweeps)
        if retention.enabled():
            tasks.append(asyncio.create_task(retention.run_forever()))

    @app.on_shutdown
    async def stop_tasks() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writes.shutdown(wait=True)
        reads.shutdown(wait=True)

    return app


def main() -> None:
    """Run the recorder until stopped."""
    configure_logging("recorder")
    run_service(build_app(RecorderSettings()), "recorder")


if __name__ == "__main__":
    main()
