"""The process a run executes in: import the routine, build its event, call setup/run/cleanup.

The runner talks to it over a pipe (fd given in MAINSPRING_CONTROL_FD): the request comes
in on stdin; progress, artifacts and the result go out as JSON lines. Routine output on
stdout/stderr goes to the run's log and never mixes with the protocol.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from mainspring.bundle import BundleError, import_entrypoint
from mainspring.invoke import invoke
from mainspring.messages import RequestRun
from mainspring.routine import ContractError, InputError, RunInfo, inspect_contract, validate_inputs
from mainspring.triggers import CompletionEvent, ManualEvent, PollEvent, ScheduleEvent
from services.runner.core import MEMORY_EXCEEDED


class Control:
    """The pipe back to the runner; also the RunContext a routine instance sees."""

    def __init__(self, fd: int, request: RequestRun, artifact_root: str) -> None:
        self._pipe = os.fdopen(fd, "w", buffering=1)
        self._request = request
        self._artifact_root = artifact_root
        self.artifacts: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        """One JSON line to the runner."""
        self._pipe.write(json.dumps(message, default=str) + "\n")
        self._pipe.flush()

    def progress(self, fraction: float, message: str) -> None:
        """Forward progress to the runner."""
        self.send({"type": "progress", "fraction": fraction, "message": message})

    def save_artifact(self, name: str, data: Any) -> str:
        """Write an artifact to the store and tell the runner at once (kept if cancelled later)."""
        from mainspring.artifacts import save_artifact

        ref = save_artifact(
            self._artifact_root,
            self._request.run_id,
            name,
            data,
            statistics=self._request.statistics,
            previews=self._request.previews,
            store=self._request.store_artifacts,
        )
        payload = ref.model_dump()
        self.artifacts.append(payload)
        self.send({"type": "artifact", "artifact": payload})
        return ref.uri


def build_event(request: RequestRun, batch_size: int, dataset_root: str) -> Any:
    """The typed event the trigger parameter receives."""
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
        from mainspring.datasets import dataset_event

        return dataset_event(dataset_root, data, batch_size)
    return ManualEvent(requested_by=data.get("requested_by"), request_id=data.get("request_id", ""))


def execute(
    request: RequestRun,
    bundle_dir: Path,
    control: Control,
    dataset_root: str,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one request to a result dict (never raises for routine faults)."""
    try:
        cls = import_entrypoint(bundle_dir, request.entrypoint)
        contract = inspect_contract(cls)
        inputs = validate_inputs(contract.inputs, request.inputs)
    except (BundleError, ContractError, InputError) as exc:
        return {"status": "failed", "error": str(exc), "phase": "start"}
    batch_size = int(inputs.get("batch_size", 1024) or 1024)
    event = build_event(request, batch_size, dataset_root)
    run_info = RunInfo(
        id=request.run_id,
        number=request.run_number,
        routine=request.routine,
        source=request.source,
        labels=request.labels,
        attributes=request.attributes,
        hop=request.hop,
        parent_run_id=request.parent_run_id,
    )
    os.environ["MAINSPRING_RUN_ID"] = request.run_id
    os.environ["MAINSPRING_RUN_HOP"] = str(request.hop)
    # In its own process the run may catch everything: nothing above it needs an interrupt.
    arguments = {contract.trigger_param: event, **inputs}
    return invoke(
        cls,
        arguments,
        control,
        run_info,
        state,
        catch=BaseException,
        memory_error_reason=MEMORY_EXCEEDED,
    )


def _die_with_parent() -> None:
    # A runner killed with SIGKILL cannot stop its children; the kernel does it for us
    # (PR_SET_PDEATHSIG), so a redelivered run never executes twice at once.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)


def _preload() -> None:
    # The point of a warm worker: pay for heavy imports before the request arrives.
    for module in ("pyarrow", "pyarrow.parquet", "pyarrow.compute", "mainspring.artifacts"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _redirect_output(log_path: str) -> None:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def main() -> None:
    """Entry point of a warm worker: `python -m services.runner.child`, one job line on stdin."""
    _die_with_parent()
    _preload()
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return  # the runner stopped before handing this worker a run
    job = json.loads(line)
    _redirect_output(job["log_path"])
    request = RequestRun.model_validate(job["request"])
    control = Control(
        int(os.environ["MAINSPRING_CONTROL_FD"]),
        request,
        os.environ.get("MAINSPRING_ARTIFACT_ROOT", ".mainspring/artifacts"),
    )
    result = execute(
        request,
        Path(job["bundle_dir"]),
        control,
        os.environ.get("MAINSPRING_DATASET_ROOT", ""),
        job.get("state"),
    )
    result["artifacts"] = control.artifacts
    control.send({"type": "result", **result})


if __name__ == "__main__":
    main()
