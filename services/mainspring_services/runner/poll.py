"""Poll triggers on a runner: call the routine's poll function in a child process, in time.

A runner consumes `poll.requested` with its own durable, runs the function under the
trigger's timeout_s in a separate process (the same isolation as runs) and publishes
`poll.completed` with the payload, None, or a one-line error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker, NatsMessage

from mainspring.contract import subjects
from mainspring.contract.messages import PollCompleted, PollRequested
from mainspring.runtime.service import consumer, durable, publish_event
from mainspring_services.runner.handlers import Runner
from mainspring_services.runner.settings import RunnerSettings
from mainspring_services.runner.worker_user import WorkerUser, worker_environment


async def call_in_child(
    bundle_dir: Path,
    fn: str,
    timeout_s: float,
    log_path: Path,
    worker_user: WorkerUser | None = None,
) -> dict[str, Any]:
    """Run the poll function in its own process group, as the routines' worker user and
    without the runner's credentials; kill it when it overruns."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker_user = worker_user or WorkerUser(None, None, "")
    with tempfile.TemporaryDirectory(prefix="mainspring-poll-") as tmp:
        # The child writes its result here as the worker user.
        worker_user.give(Path(tmp), folder=True)
        result_file = Path(tmp) / "result.json"
        with log_path.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mainspring_services.runner.poll_child",
                str(bundle_dir),
                str(result_file),
                stdin=asyncio.subprocess.PIPE,
                stdout=output,
                stderr=output,
                env={**worker_environment(os.environ), **worker_user.env()},
                start_new_session=True,
            )
        assert process.stdin is not None
        process.stdin.write(fn.encode())
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return {"error": f"poll function {fn} timed out after {timeout_s:g}s"}
        try:
            loaded: dict[str, Any] = json.loads(result_file.read_text())
        except (OSError, ValueError):
            return {"error": f"poll process exited with code {process.returncode} without a result"}
        return loaded


async def poll(runner: Runner, request: PollRequested) -> PollCompleted:
    """Fetch the routine's code and call its poll function."""
    try:
        bundle = await runner.bundle_dir(request.routine_version)
        logs = runner.settings.home.resolve() / "logs" / f"poll-{request.routine}.log"
        result = await call_in_child(
            bundle, request.fn, request.timeout_s, logs, runner.worker_user
        )
    except Exception as exc:  # noqa: BLE001 - reported as the poll's error
        result = {"error": f"cannot run poll function {request.fn}: {type(exc).__name__}: {exc}"}
    return PollCompleted(
        routine=request.routine,
        scheduled_at=request.scheduled_at,
        payload=result.get("payload"),
        error=result.get("error"),
        finished_at=datetime.now(UTC),
        trigger=request.trigger,
    )


async def keep_alive(message: NatsMessage, every_s: float) -> None:
    """Reset the ack timer while a long poll runs, so it is not redelivered meanwhile."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):
            await message.in_progress()


PollFunction = Callable[[PollRequested], Awaitable[PollCompleted]]


def register_poll(broker: NatsBroker, settings: RunnerSettings, run_poll: PollFunction) -> None:
    """Subscribe the runner to poll requests (its own durable, shared by replicas)."""

    @consumer(
        broker,
        PollRequested,
        **durable(subjects.RUNNER_POLL_CONSUMER, subjects.POLL_REQUESTED, ack_wait_s=30.0),
        max_workers=settings.runner_slots,
    )
    async def on_poll_requested(request: PollRequested, message: NatsMessage) -> None:
        heartbeat = asyncio.create_task(keep_alive(message, settings.heartbeat_s))
        try:
            completed = await run_poll(request)
        finally:
            heartbeat.cancel()
        await publish_event(broker, completed, subjects.POLL_COMPLETED)
