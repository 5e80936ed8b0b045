"""Ticker: fires schedule and poll triggers on time, exactly once."""

from __future__ import annotations

import asyncio

from faststream import FastStream

from mainspring.contract import subjects
from mainspring.runtime import metrics
from mainspring.runtime.service import build_app as build_service_app
from mainspring.runtime.service import build_broker, configure_logging, run_service
from mainspring.storage.named_triggers import TriggerStore
from mainspring.storage.registry import RoutineStore
from mainspring_services.ticker.settings import TickerSettings
from mainspring_services.ticker.timers import Ticker


def build_app(settings: TickerSettings) -> FastStream:
    """Wire the broker, the state bucket and the tick loop."""
    broker = build_broker(settings, "ticker")
    app = build_service_app(broker, settings, "ticker")
    ticker = Ticker(settings, lag_observer=metrics.tick_published)
    tasks: list[asyncio.Task[None]] = []

    @app.after_startup
    async def start_ticking() -> None:
        js = broker.connection.jetstream()
        ticker.js = js
        ticker.kv = await js.key_value(subjects.TICKER_BUCKET)
        await ticker.load_cursors()
        store = await RoutineStore.open(js)
        tasks.append(asyncio.create_task(ticker.follow_registry(store)))
        triggers = await TriggerStore.open(js)
        tasks.append(asyncio.create_task(ticker.follow_triggers(triggers)))
        tasks.append(asyncio.create_task(ticker.loop()))
        tasks.append(asyncio.create_task(ticker.persist_loop()))

    @app.on_shutdown
    async def stop_ticking() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return app


def main() -> None:
    """Run the ticker until stopped."""
    configure_logging("ticker")
    run_service(build_app(TickerSettings()), "ticker")


if __name__ == "__main__":
    main()
