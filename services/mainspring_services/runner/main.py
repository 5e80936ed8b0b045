"""Runner: executes requested runs in child processes; scale it by starting more replicas."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from faststream import FastStream
from nats.js import JetStreamContext

from mainspring.base.settings import ConfigError
from mainspring.runtime import metrics
from mainspring.runtime.service import build_app as build_service_app
from mainspring.runtime.service import build_broker, configure_logging, instance_name, run_service
from mainspring_services.runner.handlers import Runner, register
from mainspring_services.runner.intake import Intake
from mainspring_services.runner.poll import poll, register_poll
from mainspring_services.runner.ports import RunnerParts, open_parts
from mainspring_services.runner.queue_depth import watch_queue
from mainspring_services.runner.settings import RunnerSettings

PartsFactory = Callable[[JetStreamContext, str, float], Awaitable[RunnerParts]]


def runner_gauges(runner: Runner) -> list[tuple[str, str, dict[str, str], float]]:
    """Slots and workers, read at each scrape: each admitted run holds one slot."""
    slots = max(1, runner.settings.runner_slots)
    busy = len(runner.admitted)
    slot_help = "Run slots of this runner, free and busy."
    pool_help = "Worker processes kept by this runner: idle (bound to code) and spare."
    return [
        ("mainspring_runner_slots", slot_help, {"state": "free"}, float(max(0, slots - busy))),
        ("mainspring_runner_slots", slot_help, {"state": "busy"}, float(busy)),
        ("mainspring_worker_pool_workers", pool_help, {"state": "idle"}, runner.pool.idle_count()),
        (
            "mainspring_worker_pool_workers",
            pool_help,
            {"state": "spare"},
            runner.pool.spare_count(),
        ),
    ]


def build_app(settings: RunnerSettings, parts: PartsFactory = open_parts) -> FastStream:
    """Wire the broker, the runner's parts and its subscribers.

    The parts are opened once the bus is connected and checked, and the subscribers are
    declared with the runner that holds them, before the broker starts consuming.
    """
    if settings.heartbeat_s >= settings.runner_capacity_ttl_s:
        raise ConfigError(
            f"MAINSPRING_HEARTBEAT_S ({settings.heartbeat_s:g}s) must be below "
            f"MAINSPRING_RUNNER_CAPACITY_TTL_S ({settings.runner_capacity_ttl_s:g}s), or the "
            "runner's capacity entry expires between refreshes: lower the heartbeat"
        )
    broker = build_broker(settings, "runner")
    app = build_service_app(broker, settings, "runner")
    name = instance_name("runner")
    runners: list[Runner] = []
    intakes: list[Intake] = []

    @app.on_startup
    async def wire() -> None:
        opened = await parts(broker.connection.jetstream(), name, settings.run_ack_wait_s)
        runner = Runner(broker, settings, opened, name)
        register(broker, runner)
        register_poll(broker, runner.settings, functools.partial(poll, runner))
        metrics.register_gauges(lambda: runner_gauges(runner))
        runners.append(runner)
        await runner.start()
        intake = Intake(broker, runner)
        await intake.open()
        intakes.append(intake)

    watching: list[asyncio.Task[None]] = []

    @app.after_startup
    async def start_taking_runs() -> None:
        for intake in intakes:
            intake.start()
        watching.append(asyncio.create_task(watch_queue(broker.connection.jetstream())))
        # Subscribed to run.cancel by now: marks stored before are read once, so a run's
        # first delivery is checked in memory (until then every start reads the ledger).
        for runner in runners:
            await runner.cancel_marks.load()

    @app.on_shutdown
    async def drain() -> None:
        for task in watching:
            task.cancel()
        # No more pulls first: a run pulled while draining would only be handed back.
        for intake in intakes:
            await intake.stop()
        for runner in runners:
            await runner.drain()

    return app


def main() -> None:
    """Run a runner replica until stopped."""
    configure_logging("runner")
    try:
        app = build_app(RunnerSettings())
    except ConfigError as exc:
        # A worker user that cannot work (MAINSPRING_WORKER_USER): one line, not a traceback.
        raise SystemExit(f"runner cannot start: {exc}") from None
    run_service(app, "runner")


if __name__ == "__main__":
    main()
