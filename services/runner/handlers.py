"""Runner handlers: take a run request from the shared work queue, execute it, report it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker, NatsMessage

from mainspring import subjects
from mainspring.bundle import extract_bundle
from mainspring.messages import (
    ArtifactRef,
    CancelRun,
    RequestRun,
    RunCompleted,
    RunProgressed,
    RunStarted,
)
from mainspring.registry import RoutineStore
from mainspring.service import durable, instance_name, parse_or_park, publish_event
from services.runner.core import Outcome
from services.runner.process import ChildRun
from services.runner.settings import RunnerSettings

log = logging.getLogger("mainspring.runner")


def _now() -> datetime:
    return datetime.now(UTC)


class Runner:
    """Executes runs, one child process each, at most `runner_slots` at a time."""

    def __init__(self, broker: NatsBroker, settings: RunnerSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.name = instance_name("runner")
        self.store: RoutineStore | None = None
        self.active: dict[str, ChildRun] = {}
        self.cancelled: set[str] = set()

    async def bundle_dir(self, digest: str) -> Any:
        """The unpacked code of a routine version (fetched once per runner)."""
        target = self.settings.bundle_cache() / digest
        if not (target / ".complete").exists():
            assert self.store is not None
            extract_bundle(await self.store.get_bundle(digest), target)
        return target

    async def execute(self, request: RequestRun, message: NatsMessage) -> None:
        """Run one request to its terminal event; the message is acked by the caller."""
        attempt = message.raw_message.metadata.num_delivered or 1
        started_at = _now()
        if request.run_id in self.cancelled:
            await self.complete(
                request, Outcome("cancelled", {}, "cancelled before it started"), started_at, []
            )
            return
        try:
            bundle = await self.bundle_dir(request.routine_version)
        except Exception as exc:
            outcome = Outcome(
                "failed",
                {},
                f"cannot fetch code {request.routine_version[:12]}: {exc}",
                phase="start",
            )
            await self.complete(request, outcome, started_at, [])
            return
        await publish_event(
            self.broker,
            RunStarted(
                run_id=request.run_id,
                routine=request.routine,
                runner=self.name,
                attempt=attempt,
                started_at=started_at,
            ),
            subjects.RUN_STARTED,
        )
        child = ChildRun(
            request,
            bundle,
            self.settings.home.resolve() / "logs" / f"{request.run_id}.log",
            {
                "MAINSPRING_ARTIFACT_ROOT": self.settings.resolved_artifact_root(),
                "MAINSPRING_DATASET_ROOT": self.settings.resolved_dataset_root(),
            },
        )
        self.active[request.run_id] = child

        async def on_child_message(payload: dict[str, Any]) -> None:
            if payload.get("type") == "progress":
                await publish_event(
                    self.broker,
                    RunProgressed(
                        run_id=request.run_id,
                        fraction=payload["fraction"],
                        message=payload.get("message", ""),
                        at=_now(),
                    ),
                    subjects.RUN_PROGRESS,
                )

        heartbeat = asyncio.create_task(self._heartbeat(message))
        try:
            outcome = await child.run(on_child_message, self.settings.memory_poll_s)
        finally:
            heartbeat.cancel()
            self.active.pop(request.run_id, None)
        await self.complete(request, outcome, started_at, child.artifacts)

    async def _heartbeat(self, message: NatsMessage) -> None:
        # in_progress resets the ack timer: a live runner keeps its run, a dead one loses
        # it to redelivery within ack_wait.
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            with contextlib.suppress(Exception):
                await message.in_progress()

    async def complete(
        self,
        request: RequestRun,
        outcome: Outcome,
        started_at: datetime,
        artifacts: list[dict[str, Any]],
    ) -> None:
        """Publish the terminal event of a run."""
        log.info(
            "run %s of %s %s%s",
            request.run_id,
            request.routine,
            outcome.status,
            f": {outcome.error}" if outcome.error else "",
        )
        await publish_event(
            self.broker,
            RunCompleted(
                run_id=request.run_id,
                routine=request.routine,
                run_number=request.run_number,
                status=outcome.status,
                outputs=outcome.outputs,
                error=outcome.error,
                traceback=outcome.traceback,
                artifacts=[ArtifactRef.model_validate(a) for a in artifacts],
                hop=request.hop,
                parent_run_id=request.parent_run_id,
                started_at=started_at,
                finished_at=_now(),
                phase=outcome.phase,
                **request.carried_forward(),
            ),
            subjects.RUN_COMPLETED,
        )

    async def cancel(self, run_id: str) -> None:
        """Stop a run this runner holds; remember the id in case it arrives later."""
        self.cancelled.add(run_id)
        child = self.active.get(run_id)
        if child is not None:
            await child.cancel(self.settings.cancel_grace_s)


def register(broker: NatsBroker, runner: Runner) -> None:
    """Subscribe to the shared run queue and to cancel requests."""

    @broker.subscriber(
        **durable(
            subjects.RUNNER_CONSUMER,
            subjects.RUN_REQUESTED,
            ack_wait_s=30.0,
            max_ack_pending=10_000,
        ),
        max_workers=runner.settings.runner_slots,
    )
    async def on_run_requested(message: NatsMessage) -> None:
        request = await parse_or_park(broker, message, RequestRun)
        if request:
            await runner.execute(request, message)

    @broker.subscriber(subjects.RUN_CANCEL)
    async def on_run_cancel(message: NatsMessage) -> None:
        cancel = await parse_or_park(broker, message, CancelRun)
        if cancel:
            await runner.cancel(cancel.run_id)
