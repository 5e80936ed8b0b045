"""Runner: executes requested runs in child processes; scale it by starting more replicas."""

from __future__ import annotations

from faststream import FastStream

from mainspring.service import build_app as build_service_app
from mainspring.service import build_broker, configure_logging, run_service
from services.runner.handlers import Runner, register
from services.runner.poll import register_poll
from services.runner.settings import RunnerSettings


def build_app(settings: RunnerSettings) -> FastStream:
    """Wire broker, bundle store and handlers."""
    broker = build_broker(settings, "runner")
    app = build_service_app(broker, settings, "runner")
    runner = Runner(broker, settings)
    register(broker, runner)
    register_poll(broker, runner)

    @app.on_startup
    async def bind_store() -> None:
        await runner.bind(broker.connection.jetstream())

    @app.on_shutdown
    async def drain() -> None:
        await runner.drain()

    return app


def main() -> None:
    """Run a runner replica until stopped."""
    configure_logging("runner")
    run_service(build_app(RunnerSettings()), "runner")


if __name__ == "__main__":
    main()
