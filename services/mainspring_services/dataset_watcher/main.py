"""Dataset watcher: announces appended versions of every dataset under the dataset root."""

from __future__ import annotations

import asyncio

from faststream import FastStream

from mainspring.contract import subjects
from mainspring.runtime.service import build_app as build_service_app
from mainspring.runtime.service import build_broker, configure_logging, run_service
from mainspring_services.dataset_watcher.settings import WatcherSettings
from mainspring_services.dataset_watcher.version_watch import Watcher, cancel_all


def build_app(settings: WatcherSettings) -> FastStream:
    """Wire the broker, the state bucket and the watch loops."""
    broker = build_broker(settings, "dataset_watcher")
    app = build_service_app(broker, settings, "dataset_watcher")
    watcher = Watcher(broker, settings)
    tasks: list[asyncio.Task[None]] = []

    @app.after_startup
    async def start_watching() -> None:
        watcher.kv = await broker.connection.jetstream().key_value(subjects.WATCHER_BUCKET)
        tasks.extend(asyncio.create_task(loop) for loop in watcher.loops())

    @app.on_shutdown
    async def stop_watching() -> None:
        await cancel_all(tasks)

    return app


def main() -> None:
    """Run the watcher until stopped."""
    configure_logging("dataset_watcher")
    run_service(build_app(WatcherSettings()), "dataset_watcher")


if __name__ == "__main__":
    main()
