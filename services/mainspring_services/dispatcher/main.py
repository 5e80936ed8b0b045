"""Dispatcher: turns triggers (ticks, appends, completions, manual requests) into run requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream import FastStream
from faststream.nats import NatsBroker

from mainspring.base.settings import Settings
from mainspring.runtime.service import build_app as build_service_app
from mainspring.runtime.service import build_broker, configure_logging, run_service
from mainspring.storage.capacity import CapacityBoard, CapacityCatalog
from mainspring.storage.registry import RoutineCatalog
from mainspring_services.dispatcher.dispatch import Dispatcher
from mainspring_services.dispatcher.handlers import (
    register,
    register_datasets,
    register_named,
    register_timed,
)
from mainspring_services.dispatcher.ports import DispatcherParts
from mainspring_services.dispatcher.settings import DispatcherSettings
from mainspring_services.dispatcher.stores import open_parts

PartsFactory = Callable[[NatsBroker, Settings], Awaitable[DispatcherParts]]


def build_app(settings: DispatcherSettings, parts: PartsFactory = open_parts) -> FastStream:
    """Wire the broker, the dispatcher's parts and its subscribers.

    The parts are opened once the bus is connected and checked (the service app's first
    start-up step), and the subscribers are declared with them, before the broker starts
    consuming: no handler ever sees a part that is not there yet.
    """
    broker = build_broker(settings, "dispatcher")
    app = build_service_app(broker, settings, "dispatcher")
    catalog = RoutineCatalog()
    capacity = CapacityCatalog(settings.runner_capacity_ttl_s)

    @app.on_startup
    async def wire() -> None:
        opened = await parts(broker, settings)
        dispatcher = Dispatcher(broker, opened, catalog, settings, capacity)
        register(broker, dispatcher)
        register_datasets(broker, dispatcher)
        register_timed(broker, dispatcher)
        register_named(broker, dispatcher)
        await catalog.start(opened.registry)
        await capacity.start(await CapacityBoard.open(broker.connection.jetstream()))

    return app


def main() -> None:
    """Run the dispatcher until stopped."""
    configure_logging("dispatcher")
    run_service(build_app(DispatcherSettings()), "dispatcher")


if __name__ == "__main__":
    main()
