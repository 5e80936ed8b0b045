"""Recorder: writes every run event to the run history database and answers queries."""

from __future__ import annotations

import asyncio

from faststream import FastStream

from mainspring.records import open_engine
from mainspring.service import build_app as build_service_app
from mainspring.service import build_broker, configure_logging
from services.recorder.handlers import RunHistory, StaleRunSweep, register, register_stale_sweep
from services.recorder.settings import RecorderSettings


def build_app(settings: RecorderSettings) -> FastStream:
    """Wire the broker, the database and the handlers."""
    broker = build_broker(settings, "recorder")
    history = RunHistory(open_engine(settings.resolved_database_url()))
    register(broker, history)
    sweep = StaleRunSweep(history, settings)
    register_stale_sweep(broker, sweep)
    app = build_service_app(broker, settings, "recorder")
    tasks: list[asyncio.Task[None]] = []

    @app.after_startup
    async def start_sweep() -> None:
        sweep.js = broker.connection.jetstream()
        tasks.append(asyncio.create_task(sweep.run_forever()))

    @app.on_shutdown
    async def stop_sweep() -> None:
        for task in tasks:
            task.cancel()

    return app


def main() -> None:
    """Run the recorder until stopped."""
    configure_logging("recorder")
    asyncio.run(build_app(RecorderSettings()).run())


if __name__ == "__main__":
    main()
