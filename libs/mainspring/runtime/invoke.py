"""Calling one routine instance: setup, run, cleanup, outputs and state, the same everywhere.

Runs executed by a runner's child process and in-memory runs both go through `invoke`, so a
routine behaves the same whichever way it was started.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mainspring.base import tracing
from mainspring.contract.messages import RequestRun
from mainspring.sdk.routine import CONSTRUCTOR, Routine, RunContext, RunInfo, constructor_parameters
from mainspring.sdk.triggers import CompletionEvent, ManualEvent, PollEvent, ScheduleEvent


def outputs_as_json(value: Any) -> dict[str, Any]:
    """run()'s return value as small JSON outputs: a dict stays, anything else is wrapped."""
    if value is None:
        return {}
    outputs = value if isinstance(value, dict) else {"result": value}
    return dict(json.loads(json.dumps(outputs, default=str)))


def invoke(
    cls: type[Routine],
    arguments: dict[str, Any],
    context: RunContext,
    run_info: RunInfo,
    state: dict[str, Any] | None,
    catch: type[BaseException] = Exception,
    memory_error_reason: str | None = None,
    method: str = "run",
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one instance to a result dict: status, outputs, error, traceback, and `state` when
    run() changed it. Routine faults (those of type `catch`) become a failed result; where a
    memory limit is set, a MemoryError is reported as `memory_error_reason`."""
    # A routine configured through `__init__` is built with its instance's configuration.
    taken = constructor_parameters(cls)
    built_with = {k: v for k, v in (config or {}).items() if k in taken}
    instance = cls(**built_with)
    instance._context = context
    instance._run_info = run_info
    initial_state = json.dumps(state or {}, sort_keys=True, default=str)
    instance._state = json.loads(initial_state)
    instance._config = dict(config or {})
    with RunLoop() as loop:
        try:
            with tracing.span("setup"):
                call(loop, instance.setup)
            try:
                with tracing.span(method):
                    if method == CONSTRUCTOR and not hasattr(instance, CONSTRUCTOR):
                        # Building the instance above was its constructor run.
                        value = built_with
                    else:
                        value = call(loop, getattr(instance, method), **arguments)
            finally:
                with tracing.span("cleanup"):
                    call(loop, instance.cleanup)
        except SystemExit as exc:
            return {"status": "failed", "error": f"routine called sys.exit({exc.code!r})"}
        except MemoryError as exc:
            if memory_error_reason is None:
                return _failed(exc)
            return {"status": "failed", "error": memory_error_reason}
        except catch as exc:
            return _failed(exc)
    result: dict[str, Any] = {"status": "completed", "outputs": outputs_as_json(value)}
    final_state = json.dumps(instance.state, sort_keys=True, default=str)
    if final_state != initial_state:
        result["state"] = json.loads(final_state)
    return result


class RunLoop:
    """The event loop of one run, made only when a routine method turns out to be async.

    One loop serves setup, run and cleanup, so what an async setup() opens (a client
    session, a connection pool) is still usable in run() and cleanup().
    """

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def wait_for(self, awaitable: Any) -> Any:
        """Run an awaitable to its end on the run's loop."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(_awaited(awaitable))

    def __enter__(self) -> RunLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.close()


def call(loop: RunLoop, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a routine method; an `async def` one is awaited to its end on the run's loop."""
    result = method(*args, **kwargs)
    if inspect.isawaitable(result):
        return loop.wait_for(result)
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _failed(exc: BaseException) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
    }


def run_info(request: RequestRun) -> RunInfo:
    """Who a requested run is, as the routine sees it (`self.run`), wherever it executes."""
    return RunInfo(
        id=request.run_id,
        number=request.run_number,
        routine=request.routine,
        source=request.source,
        labels=request.labels,
        attributes=request.attributes,
        hop=request.hop,
        parent_run_id=request.parent_run_id,
    )


def method_arguments(
    request: RequestRun, trigger_param: str, inputs: dict[str, Any], dataset_root: str
) -> dict[str, Any]:
    """What the requested method is called with: run() gets its trigger's event besides its
    inputs; any other method its inputs alone."""
    if request.method != "run":
        return dict(inputs)
    batch_size = int(inputs.get("batch_size", 1024) or 1024)
    return {trigger_param: build_event(request, batch_size, dataset_root), **inputs}


def build_event(request: RequestRun, batch_size: int, dataset_root: str) -> Any:
    """The typed event the trigger parameter receives, built from a run request."""
    data = request.event
    if request.trigger_kind == "schedule":
        return ScheduleEvent(
            scheduled_at=datetime.fromisoformat(data["scheduled_at"]),
            fired_at=datetime.fromisoformat(data["fired_at"]),
        )
    if request.trigger_kind == "completion":
        return CompletionEvent.model_validate(data)
    if request.trigger_kind == "poll":
        return PollEvent(
            scheduled_at=datetime.fromisoformat(data["scheduled_at"]),
            payload=data.get("payload", {}),
        )
    if request.trigger_kind == "dataset":
        from mainspring.storage.datasets import dataset_event

        return dataset_event(dataset_root, data, batch_size)
    return ManualEvent(requested_by=data.get("requested_by"), request_id=data.get("request_id", ""))
