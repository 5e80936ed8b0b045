"""In-memory runs: execute a routine in the caller's process and still record it.

Only routines that opt in (`allow_in_memory = True`) run this way: there is no separate
process, so no memory limit, timeout or crash isolation. The run is recorded like any other
like any other: the dispatcher answers a SubmitRun with execution `in_memory` by numbering
the run and publishing its RequestRun on run.in_memory (hop and parent included), then this
process executes it and reports run.started, run.progress and run.completed. Completion
triggers fire on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from mainspring.base import tracing
from mainspring.client.instances import apply_configuration
from mainspring.contract import subjects
from mainspring.contract.messages import (
    InvocationType,
    Message,
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunOptions,
    RunProgressed,
    RunResources,
    RunStarted,
    SubmitRun,
)
from mainspring.runtime.bus import message_headers
from mainspring.runtime.invoke import invoke, method_arguments, run_info
from mainspring.sdk.bundle import extract_bundle, import_entrypoint
from mainspring.sdk.routine import inspect_contract, validate_inputs
from mainspring.storage.artifacts import run_location, save_artifact
from mainspring.storage.registry import in_memory_refusal, method_input_specs, unknown_method
from mainspring.storage.state import (
    StateConflict,
    StateTooLarge,
    load_state,
    save_state,
    state_bucket,
)

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
            options=self.request.options,
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


async def _publish(
    client: Client, event: Message, subject: str, message_id: str | None = None
) -> None:
    headers = message_headers(event)
    if message_id is not None:
        headers["Nats-Msg-Id"] = message_id
    await client.js.publish(
        subject,
        event.model_dump_json().encode(),
        stream=subjects.stream_of(subject),
        headers=headers,
    )


# How long the caller waits for the dispatcher to answer an in-memory request.
DISPATCH_TIMEOUT_S = 30.0


async def _requested(client: Client, submitted: SubmitRun) -> RequestRun:
    """Submit an in-memory run and wait for the dispatcher's request (or its refusal)."""
    answer: asyncio.Future[RequestRun] = asyncio.get_running_loop().create_future()

    async def on_request(message: Msg) -> None:
        request = RequestRun.model_validate_json(message.data)
        if request.run_id == submitted.request_id and not answer.done():
            answer.set_result(request)

    async def on_refusal(message: Msg) -> None:
        refused = RunCompleted.model_validate_json(message.data)
        if refused.run_id == submitted.request_id and not answer.done():
            answer.set_exception(InMemoryRefused(refused.error or "refused by the dispatcher"))

    # Listening before submitting: the answer cannot pass by unseen.
    listening = [
        await client.nc.subscribe(subjects.RUN_IN_MEMORY, cb=on_request),
        # A refusal is the run's failed completion, on its routine's completion subject.
        await client.nc.subscribe(
            subjects.run_completed_subject(submitted.routine, "failed"), cb=on_refusal
        ),
    ]
    try:
        await client.js.publish(
            subjects.RUN_SUBMITTED,
            submitted.model_dump_json().encode(),
            headers=dict(tracing.inject({"Nats-Msg-Id": f"submit:{submitted.request_id}"})),
        )
        try:
            return await asyncio.wait_for(answer, DISPATCH_TIMEOUT_S)
        except TimeoutError:
            raise TimeoutError(
                f"the dispatcher did not answer in-memory run {submitted.request_id} of "
                f"{submitted.routine} within {DISPATCH_TIMEOUT_S:g}s: is it running?"
            ) from None
    finally:
        for subscription in listening:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


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
    invocation: InvocationType = "direct",
    method: str = "run",
) -> dict[str, Any]:
    """Run a routine here and now; returns the terminal record (id, status, outputs, error)."""
    definition = await (await client.store()).get(routine)
    problem = unknown_method(definition, method) or in_memory_refusal(definition, method)
    if problem is not None:
        raise InMemoryRefused(problem)
    if method == definition.constructor():
        # A constructor run sets the instance's configuration first, as a background one does.
        inputs = await apply_configuration(client, routine, inputs)
        definition = await (await client.store()).get(routine)
    # A bad input fails here, at once.
    validate_inputs(method_input_specs(definition, method), inputs)
    now = datetime.now(UTC)
    # The dispatcher numbers the run and builds its request, as for any run; this process
    # only executes it.
    request = await _requested(
        client,
        SubmitRun(
            request_id=str(uuid.uuid4()),
            routine=routine,
            inputs=inputs,
            labels=labels or [],
            attributes=attributes or {},
            name=name,
            description=description,
            started_by=started_by,
            options=RunOptions(
                execution="in_memory",
                statistics=statistics,
                previews=previews,
                store_artifacts=store_artifacts,
            ),
            submitted_at=now,
            invocation=invocation,
            method=method,
            # Read-your-writes: a constructor run's configuration was written just before.
            registry_revision=(await client.store()).written_revision,
        ),
    )
    run_id = request.run_id
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
            artifact_location=run_location(client.settings.resolved_artifact_root(), run_id),
        ),
        subjects.RUN_STARTED,
    )
    state_kv = await state_bucket(client.js)
    state, revision = await load_state(state_kv, routine)
    context = _Context(client, asyncio.get_running_loop(), request)
    beating = asyncio.create_task(_heartbeat(client, run_id, runner))
    wall_start = time.monotonic()
    try:
        result = await asyncio.to_thread(
            _execute,
            folder,
            definition.entrypoint,
            request,
            context,
            state,
            client.settings.resolved_dataset_root(),
        )
    finally:
        beating.cancel()
    # Peak memory is left out: the caller's process holds more than this run.
    resources = RunResources(
        cpu_seconds=result.pop("cpu_seconds", None), wall_seconds=time.monotonic() - wall_start
    )
    status, outputs = result["status"], result.get("outputs", {})
    error, trace, final_state = result.get("error"), result.get("traceback"), result.get("state")
    if status == "completed" and final_state is not None:
        try:
            await save_state(state_kv, routine, final_state, revision)
        except (StateConflict, StateTooLarge) as exc:
            status, error = "failed", str(exc)
    from mainspring.contract.messages import ArtifactRef

    completed = RunCompleted(
        run_id=run_id,
        routine=routine,
        run_number=request.run_number,
        status=status,
        outputs=outputs,
        artifacts=[ArtifactRef.model_validate(a) for a in context.artifacts],
        error=error,
        traceback=trace,
        hop=request.hop,
        parent_run_id=request.parent_run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        resources=resources,
        **request.carried_forward(),
    )
    # The outcome is the dispatcher's to publish: it settles it like any run's.
    await _publish(client, completed, subjects.RUN_IN_MEMORY_REPORTED, f"reported:{run_id}")
    return {
        "id": run_id,
        "routine": routine,
        "method": method,
        "run_number": request.run_number,
        "status": status,
        "outputs": outputs,
        "error": error,
        "traceback": trace,
        "artifacts": context.artifacts,
    }


def _execute(
    folder: Any,
    entrypoint: str,
    request: RequestRun,
    context: _Context,
    state: dict[str, Any],
    dataset_root: str,
) -> dict[str, Any]:
    cls = import_entrypoint(folder, entrypoint)
    contract = inspect_contract(cls)
    info = run_info(request)
    # The same event a runner would build: the dispatcher chose it (rows since the cursor,
    # an upstream run's completion, a tick at now, a poll payload); other methods get none.
    arguments = method_arguments(request, contract.trigger_param, request.inputs, dataset_root)
    # This thread's CPU time only: the caller's other threads are not the run's.
    cpu_start = time.thread_time()
    result = invoke(
        cls,
        arguments,
        context,
        info,
        state,
        method=request.method,
        config=request.configuration,
    )
    return {**result, "cpu_seconds": time.thread_time() - cpu_start}
