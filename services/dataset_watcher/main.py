"""Dataset watcher: announces appended versions of registered datasets."""

from __future__ import annotations

import asyncio

from faststream import FastStream

from mainspring.service import build_app as build_service_app
from mainspring.service import build_broker, configure_logging
from mainspring.settings import Settings


def build_app(settings: Settings) -> FastStream:
    """Wire the broker."""
    broker = build_broker(settings, "dataset_watcher")
    return build_service_app(broker, settings, "dataset_watcher")


def main() -> None:
    """Run the watcher until stopped."""
    configure_logging("dataset_watcher")
    asyncio.run(build_app(Settings()).run())


if __name__ == "__main__":
    main()
