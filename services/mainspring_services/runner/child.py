"""The process runs execute in: a worker that serves runs one after another.

The runner talks to it over two pipes: jobs come in as JSON lines on MAINSPRING_JOB_FD;
`ready`, progress, artifacts and each run's result go out as JSON lines on
MAINSPRING_CONTROL_FD. A worker is pinned to one code bundle: the routine class and its
contract are loaded once and reused. Each run's stdout/stderr go through pipes to that run's
own log file, capped, and to the runner line by line (redirected for the run, restored
after); they never mix with the protocol. After each result
the worker reports what the run left behind (threads, cwd, environment, sys.path, signal
handlers) so the runner can decide to recycle it.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import json
import os
import resource
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from mainspring.base import tracing
from mainspring.contract.messages import RequestRun
from mainspring.runtime.invoke import invoke, method_arguments, run_info
from mainspring.sdk.bundle import BundleError, import_entrypoint
from mainspring.sdk.routine import (
    ContractError,
    InputError,
    Routine,
    RoutineContract,
    inspect_contract,
    method_specs,
    validate_inputs,
)
from mainspring.storage.runlogs import DEFAULT_MAX_BYTES, BoundedLog
from mainspring_services.runner.core import MEMORY_EXCEEDED, WorkerSnapshot, leftovers
from mainspring_services.runner.dag_child import DagLoader, execute_dag
from mainspring_services.runner.procfs import peak_rss_bytes, reset_peak_rss
from mainspring_services.runner.worker_user import become_worker_user

# Imported by every worker (and by the fork server before it forks) so a run does not pay
# for them: the point of keeping interpreters around.
HEAVY_MODULES = ("pyarrow", "pyarrow.parquet", "pyarrow.compute", "mainspring.storage.artifacts")
# How long a run's output may take to drain once the run returned.
OUTPUT_DRAIN_S = 2.0

# This worker's finished spans, until a run's result carries them to the runner.
SPANS = tracing.SpanCollector()
# DAGs this worker imported (a worker is pinned to one bundle, so they stay valid).
DAGS = DagLoader()


def _signal_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for signum in signal.valid_signals():
        with contextlib.suppress(ValueError):
            names[signum] = signal.Signals(signum).name
    return names


# Looked up once: building the Signals enum for each of ~64 signals cost about 0.17 ms, and
# every run takes two snapshots.
SIGNAL_NAMES = _signal_names()


class ControlPipe:
    """The pipe back to the runner: one JSON object per line."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        # The run's output thread sends too: lines must not interleave.
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """One JSON line to the runner."""
        line = json.dumps(message, default=str) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class Control:
    """The RunContext one run's routine instance sees: progress and artifacts go to the runner."""

    def __init__(self, pipe: ControlPipe, request: RequestRun, artifact_root: str) -> None:
        self._pipe = pipe
        self._request = request
        self._artifact_root = artifact_root
        self.artifacts: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        """One JSON line to the runner."""
        self._pipe.send(message)

    def progress(self, fraction: float, message: str) -> None:
        """Forward progress to the runner."""
        self.send({"type": "progress", "fraction": fraction, "message": message})

    def save_artifact(self, name: str, data: Any) -> str:
        """Write an artifact to the store and tell the runner at once (kept if cancelled later)."""
        from mainspring.storage.artifacts import save_artifact

        ref = save_artifact(
            self._artifact_root,
            self._request.run_id,
            name,
            data,
            options=self._request.options,
        )
        payload = ref.model_dump()
        self.artifacts.append(payload)
        self.send({"type": "artifact", "artifact": payload})
        return ref.uri


class RoutineLoader:
    """Routine classes and contracts of one bundle, imported once per worker."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], tuple[type[Routine], RoutineContract]] = {}
        # A module that failed to import is not imported again (its side effects ran once).
        self._failed: dict[tuple[str, str], BundleError | ContractError] = {}

    def load(self, bundle_dir: Path, entrypoint: str) -> tuple[type[Routine], RoutineContract]:
        """The class and contract of `path.py:Class` (imported on first use only)."""
        key = (str(bundle_dir), entrypoint)
        if key in self._failed:
            raise self._failed[key]
        if key not in self._loaded:
            try:
                cls = import_entrypoint(bundle_dir, entrypoint)
                self._loaded[key] = (cls, inspect_contract(cls))
            except (BundleError, ContractError) as exc:
                self._failed[key] = exc
                raise
        return self._loaded[key]


def execute(
    request: RequestRun,
    bundle_dir: Path,
    control: Control,
    dataset_root: str,
    state: dict[str, Any] | None = None,
    loader: RoutineLoader | None = None,
) -> dict[str, Any]:
    """Run one request to a result dict (never raises for routine faults)."""
    try:
        cls, contract = (loader or RoutineLoader()).load(bundle_dir, request.entrypoint)
        inputs = validate_inputs(method_specs(contract, request.method), request.inputs)
    except (BundleError, ContractError, InputError) as exc:
        return {"status": "failed", "error": str(exc), "phase": "start"}
    arguments = method_arguments(request, contract.trigger_param, inputs, dataset_root)
    info = run_info(request)
    # In its own process the run may catch everything: nothing above it needs an interrupt.
    return invoke(
        cls,
        arguments,
        control,
        info,
        state,
        catch=BaseException,
        memory_error_reason=MEMORY_EXCEEDED,
        method=request.method,
        config=request.configuration,
    )


def snapshot() -> WorkerSnapshot:
    """The process-wide state a run must leave as it found it."""
    try:
        cwd = str(Path.cwd())
    except OSError:
        cwd = ""  # deleted under us: compares unequal to any real path
    handlers: dict[str, object] = {}
    for signum, name in SIGNAL_NAMES.items():
        with contextlib.suppress(OSError, ValueError):
            handlers[name] = signal.getsignal(signum)
    return WorkerSnapshot(
        cwd=cwd,
        environ=dict(os.environ),
        sys_path=tuple(sys.path),
        signal_handlers=handlers,
        threads={t.ident or 0: t.name for t in threading.enumerate() if t.is_alive()},
    )


class OutputCapture:
    """A run's fds 1 and 2 in one pipe: a thread copies it, up to a cap, to the runner as
    `log` lines (streamed live, and written to the run's log file by the runner); the
    worker's own fds come back afterwards.

    A pipe rather than a file, so the cap holds whatever the routine (or a process it
    started) writes, and the runner sees output as it happens. One pipe for both, so the
    log keeps stdout and stderr in the order they were written, as a terminal shows them (a
    traceback after the prints that led to it). The runner writes the file: a run that
    prints nothing costs no file, and the worker needs no write access to the logs.
    """

    def __init__(self, offset: int, max_bytes: int, pipe: ControlPipe) -> None:
        self.offset = offset
        self.bounded = BoundedLog(max_bytes)
        # Incremental: a character split between two reads is decoded whole.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pipe = pipe
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.saved: tuple[int, int] = (-1, -1)
        self.stopped_at = 0.0

    def __enter__(self) -> OutputCapture:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = os.dup(1), os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self.thread = threading.Thread(
            target=self._copy, args=(read_end,), name="mainspring-run-output", daemon=True
        )
        self.thread.start()
        return self

    def _copy(self, output: int) -> None:
        try:
            while True:
                ready, _, _ = select.select([output], [], [], 0.1)
                if self.stopping.wait(0) and (not ready or self._drained_long_enough()):
                    # A process the run started may still hold the pipe, quiet or chatty:
                    # its output after the run is not this run's, nor the next one's.
                    break
                if not ready:
                    continue
                data = os.read(output, 65536)
                if not data:
                    break
                self._keep(data)
        finally:
            os.close(output)
        self._keep(self.bounded.cut_marker(), capped=False)

    def _drained_long_enough(self) -> bool:
        return time.monotonic() - self.stopped_at > OUTPUT_DRAIN_S

    def _keep(self, data: bytes, capped: bool = True) -> None:
        kept = self.bounded.take(data) if capped else data
        text = self.decoder.decode(kept, final=not capped)
        if not text:
            return
        self.pipe.send({"type": "log", "text": text, "offset": self.offset})
        # In the bytes the runner writes, so offsets match its file.
        self.offset += len(text.encode())

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        # Restoring fds 1 and 2 closes this process's write ends: the copy thread then
        # reads to the end of what the run wrote.
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])
        self.stopped_at = time.monotonic()
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=OUTPUT_DRAIN_S + 1.0)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children it has waited for."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def serve_job(
    job: dict[str, Any], pipe: ControlPipe, loader: RoutineLoader, pinned: str
) -> dict[str, Any]:
    """Execute one job line and return its result message (with what the run left behind)."""
    request = RequestRun.model_validate(job["request"])
    control = Control(
        pipe, request, os.environ.get("MAINSPRING_ARTIFACT_ROOT", ".mainspring/artifacts")
    )
    if request.routine_version != pinned:
        # The runner keys workers by digest; two bundles in one interpreter would share modules.
        return {
            "type": "result",
            "status": "failed",
            "phase": "start",
            "error": f"worker pinned to code {pinned[:12]} got code "
            f"{request.routine_version[:12]}: the runner must start a new worker",
        }
    os.environ["MAINSPRING_RUN_ID"] = request.run_id
    os.environ["MAINSPRING_RUN_HOP"] = str(request.hop)
    max_log = int(job.get("log_max_bytes") or DEFAULT_MAX_BYTES)
    # The runner's execution span is the parent of setup, run, cleanup and the user's spans.
    capture = OutputCapture(int(job.get("log_offset") or 0), max_log, pipe)
    with capture, tracing.continuing(job.get("traceparent")):
        # Importing the bundle (sys.path entry, module-level code) belongs to the worker, not
        # to this run: load it before the snapshot the run is compared against.
        is_dag = request.kind == "dag"
        with contextlib.suppress(BundleError, ContractError, ValueError):
            if is_dag:
                DAGS.load(Path(job["bundle_dir"]), request.entrypoint, request.routine)
            else:
                loader.load(Path(job["bundle_dir"]), request.entrypoint)
        before = snapshot()
        reset_peak_rss(os.getpid())
        cpu_at_start = cpu_seconds()
        if is_dag:
            result = execute_dag(
                request,
                Path(job["bundle_dir"]),
                pipe.send,
                os.environ.get("MAINSPRING_ARTIFACT_ROOT", ".mainspring/artifacts"),
                DAGS,
            )
        else:
            result = execute(
                request,
                Path(job["bundle_dir"]),
                control,
                os.environ.get("MAINSPRING_DATASET_ROOT", ""),
                job.get("state"),
                loader,
            )
        peak_rss = peak_rss_bytes(os.getpid())
        used_cpu = cpu_seconds() - cpu_at_start
        after = snapshot()
    return {
        "type": "result",
        **result,
        "artifacts": control.artifacts,
        "leftovers": leftovers(before, after),
        # Measured here: a forked child may be gone before the runner could look.
        "peak_rss": peak_rss,
        "cpu_seconds": used_cpu,
        # Sent back with the result: the runner exports them with its own, so a worker needs
        # no exporter (no thread, no connection) and a short-lived forked child loses none.
        "spans": SPANS.drain(),
    }


def serve(job_fd: int, control_fd: int, max_jobs: int | None) -> None:
    """Answer job lines until the runner closes the job pipe (or after max_jobs)."""
    jobs = os.fdopen(job_fd, "rb")
    pipe = ControlPipe(os.fdopen(control_fd, "w", buffering=1))
    # Line by line, so a run's prints reach its live log as they happen.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    pipe.send({"type": "ready", "pid": os.getpid()})
    loader = RoutineLoader()
    pinned: str | None = None
    served = 0
    while max_jobs is None or served < max_jobs:
        line = jobs.readline()
        if not line.strip():
            return  # the runner closed the pipe: it is recycling or stopping this worker
        job = json.loads(line)
        pinned = pinned or str(job["request"]["routine_version"])
        pipe.send(serve_job(job, pipe, loader, pinned))
        served += 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies."""
    # A runner killed with SIGKILL cannot stop its children; the kernel does it for us
    # (PR_SET_PDEATHSIG), so a redelivered run never executes twice at once.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)


def preload() -> None:
    """Pay for heavy imports (and the tracer) before any run arrives."""
    tracing.configure_worker_tracing(SPANS, "runner")
    for module in HEAVY_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def main() -> None:
    """Entry point of a worker: `python -m mainspring_services.runner.child`."""
    # First: a change of user clears the parent-death signal, so that is asked for after it.
    become_worker_user(os.environ)
    die_with_parent()
    preload()
    serve(int(os.environ["MAINSPRING_JOB_FD"]), int(os.environ["MAINSPRING_CONTROL_FD"]), None)


if __name__ == "__main__":
    main()
