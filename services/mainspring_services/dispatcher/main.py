"""Dispatcher: turns triggers (ticks, appends, completions, manual requests) into run requests."""

from __future__ import annotations

from faststream import FastStream

from mainspring.contract import subjects
from mainspring.runtime.service import build_app as build_service_app
from mainspring.runtime.service import build_broker, configure_logging, run_service
from mainspring.storage.numbers import RunNumbers
from mainspring.storage.registry import RoutineCatalog, RoutineStore
from mainspring_services.dispatcher.handlers import (
    CrashLoopCounts,
    Dispatcher,
    OverlapGate,
    register,
    register_datasets,
    register_timed,
)
from mainspring_services.dispatcher.settings import DispatcherSettings


def build_app(settings: DispatcherSettings) -> FastStream:
    """Wire broker, registry, state and handlers; the registry binds after the bus is declared."""
    broker = build_broker(settings, "dispatcher")
    app = build_service_app(broker, settings, "dispatcher")
    catalog = RoutineCatalog()
    dispatcher = Dispatcher(broker, None, catalog, None, settings)  # type: ignore[arg-type]
    register(broker, dispatcher)
    register_datasets(broker, dispatcher)
    register_timed(broker, dispatcher)

    @app.on_startup
    async def bind_state() -> None:
        js = broker.connection.jetstream()
        dispatcher.store = await RoutineStore.open(js)
        dispatcher.numbers = RunNumbers(await js.key_value(subjects.DISPATCH_BUCKET))
        dispatcher.crashes = CrashLoopCounts(await js.key_value(subjects.DISPATCH_BUCKET))
        dispatcher.overlap = OverlapGate(await js.key_value(subjects.DISPATCH_BUCKET))
        await catalog.start(dispatcher.store)

    return app


def main() -> None:
    """Run the dispatcher until stopped."""
    configure_logging("dispatcher")
    run_service(build_app(DispatcherSettings()), "dispatcher")


if __name__ == "__main__":
    main()
