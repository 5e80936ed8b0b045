"""In-memory runs: execute a routine in the caller's process and still record it.

Only routines that opt in (`allow_in_memory = True`) run this way: there is no separate
process, so no memory limit, timeout or crash isolation. The run is recorded like any other
(run.in_memory, run.started, run.progress, run.completed from this process) with source
`manual`, and completion triggers fire on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainspring import subjects
from mainspring.artifacts import save_artifact
from mainspring.bundle import extract_bundle, import_entrypoint
from mainspring.bus import publish
from mainspring.invoke import invoke
from mainspring.messages import (
    Message,
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunProgressed,
    RunStarted,
)
from mainspring.numbers import next_run_number
from mainspring.routine import RunInfo, inspect_contract, validate_inputs
from mainspring.state import StateConflict, StateTooLarge, load_state, save_state, state_bucket
from mainspring.triggers import ManualEvent

if TYPE_CHECKING:
    from mainspring.client import Client


class InMemoryRefused(ValueError):
    """The routine does not allow in-memory runs."""


class _Context:
    """The RunContext of an in-memory run: progress goes on the bus from the caller's loop."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, request: RequestRun
    ) -> None:
        self.client = client
        self.loop = loop
        self.request = request
        self.artifacts: list[dict[str, Any]] = []

    def progress(self, fraction: float, message: str) -> None:
        event = RunProgressed(
            run_id=self.request.run_id, fraction=fraction, message=message, at=datetime.now(UTC)
        )
        asyncio.run_coroutine_threadsafe(
            _publish(self.client, event, subjects.RUN_PROGRESS), self.loop
        ).result()

    def save_artifact(self, name: str, data: Any) -> str:
        ref = save_artifact(
            self.client.settings.resolved_artifact_root(),
            self.request.run_id,
            name,
            data,
            statistics=self.request.statistics,
            previews=self.request.previews,
            store=self.request.store_artifacts,
        )
        self.artifacts.append(ref.model_dump())
        return ref.uri


async def _heartbeat(client: Client, run_id: str, runner: str, every_s: float = 5.0) -> None:
    # The recorder fails runs nobody heartbeats; this process is the run's runner.
    while True:
        await asyncio.sleep(every_s)
        beat = RunHeartbeat(run_id=run_id, runner=runner, at=datetime.now(UTC))
        with contextlib.suppress(Exception):
            await client.nc.publish(subjects.RUN_HEARTBEAT, beat.model_dump_json().encode())


async def _publish(client: Client, event: Message, subject: str) -> None:
    await publish(client.js, event, subject)


async def run_in_memory(
    client: Client,
    routine: str,
    inputs: dict[str, Any],
    *,
    labels: list[str] | None = None,
    attributes: dict[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
    statistics: bool = False,
    previews: bool = False,
    store_artifacts: bool = True,
    started_by: str | None = None,
) -> dict[str, Any]:
    """Run a routine here and now; returns the terminal record (id, status, outputs, error)."""
    definition = await (await client.store()).get(routine)
    if not definition.options.allow_in_memory:
        raise InMemoryRefused(
            f"routine {routine} does not allow in-memory runs: set `allow_in_memory = True` "
            "on its class and re-register it, or run it without --in-memory"
        )
    validated = validate_inputs(definition.input_specs(), inputs)
    now = datetime.now(UTC)
    run_id = str(uuid.uuid4())
    dispatch = await client.js.key_value(subjects.DISPATCH_BUCKET)
    request = RequestRun(
        run_id=run_id,
        routine=routine,
        routine_version=definition.version,
        entrypoint=definition.entrypoint,
        run_number=await next_run_number(dispatch, routine),
        source="manual",
        trigger_kind="manual",
        event={"requested_by": started_by, "request_id": run_id},
        inputs=validated,
        labels=labels or [],
        attributes=attributes or {},
        name=name,
        description=description,
        started_by=started_by,
        statistics=statistics,
        previews=previews,
        store_artifacts=store_artifacts,
        requested_at=now,
        submitted_at=now,
    )
    await _publish(client, request, subjects.RUN_IN_MEMORY)
    folder = client.settings.home.resolve() / "bundles" / definition.version
    store = await client.store()
    if not (folder / ".complete").exists():
        extract_bundle(await store.get_bundle(definition.version), folder)
    started_at = datetime.now(UTC)
    runner = f"in-memory@{socket.gethostname()}:{os.getpid()}"
    await _publish(
        client,
        RunStarted(
            run_id=run_id,
            routine=routine,
            runner=runner,
            started_at=started_at,
        ),
        subjects.RUN_STARTED,
    )
    state_kv = await state_bucket(client.js)
    state, revision = await load_state(state_kv, routine)
    context = _Context(client, asyncio.get_running_loop(), request)
    beating = asyncio.create_task(_heartbeat(client, run_id, runner))
    try:
        result = await asyncio.to_thread(
            _execute, folder, definition.entrypoint, request, context, state
        )
    finally:
        beating.cancel()
    status, outputs = result["status"], result.get("outputs", {})
    error, trace, final_state = result.get("error"), result.get("traceback"), result.get("state")
    if status == "completed" and final_state is not None:
        try:
            await save_state(state_kv, routine, final_state, revision)
        except (StateConflict, StateTooLarge) as exc:
            status, error = "failed", str(exc)
    from mainspring.messages import ArtifactRef

    completed = RunCompleted(
        run_id=run_id,
        routine=routine,
        run_number=request.run_number,
        status=status,
        outputs=outputs,
        artifacts=[ArtifactRef.model_validate(a) for a in context.artifacts],
        error=error,
        traceback=trace,
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )
    await _publish(client, completed, completed.subject())
    return {
        "id": run_id,
        "routine": routine,
        "run_number": request.run_number,
        "status": status,
        "outputs": outputs,
        "error": error,
        "traceback": trace,
        "artifacts": context.artifacts,
    }


def _execute(
    folder: Any, entrypoint: str, request: RequestRun, context: _Context, state: dict[str, Any]
) -> dict[str, Any]:
    cls = import_entrypoint(folder, entrypoint)
    contract = inspect_contract(cls)
    run_info = RunInfo(
        id=request.run_id,
        number=request.run_number,
        routine=request.routine,
        source=request.source,
        labels=request.labels,
        attributes=request.attributes,
    )
    event = ManualEvent(requested_by=request.started_by, request_id=request.run_id)
    return invoke(cls, {contract.trigger_param: event, **request.inputs}, context, run_info, state)
