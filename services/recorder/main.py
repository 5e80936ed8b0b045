"""Recorder: writes every run event to the run history database and answers queries."""

from __future__ import annotations

import asyncio

from faststream import FastStream

from mainspring.records import open_engine
from mainspring.service import build_app as build_service_app
from mainspring.service import build_broker, configure_logging
from services.recorder.handlers import RunHistory, register
from services.recorder.settings import RecorderSettings


def build_app(settings: RecorderSettings) -> FastStream:
    """Wire the broker, the database and the handlers."""
    broker = build_broker(settings, "recorder")
    register(broker, RunHistory(open_engine(settings.resolved_database_url())))
    return build_service_app(broker, settings, "recorder")


def main() -> None:
    """Run the recorder until stopped."""
    configure_logging("recorder")
    asyncio.run(build_app(RecorderSettings()).run())


if __name__ == "__main__":
    main()
