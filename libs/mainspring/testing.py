"""Test a routine without the system: fire one event at it in this process, read the result.

    result = fire(EmbedNewRows, event=DatasetEvent.from_table(table))
    assert result.status == "completed"
    assert result.artifacts["embeddings"].num_rows == table.num_rows

`fire` checks the class as `routine create` does (same one-line errors), validates inputs
and configuration as the dispatcher does, and calls setup, run and cleanup through the same
code a runner uses, so what passes here behaves the same once registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mainspring.contract.messages import ArtifactRef
from mainspring.runtime.invoke import invoke
from mainspring.sdk.routine import (
    InputSpec,
    Routine,
    RoutineContract,
    RoutineInvocationError,
    RunInfo,
    inspect_contract,
    method_specs,
    validate_inputs,
)
from mainspring.sdk.triggers import (
    CompletionEvent,
    CompletionTrigger,
    DatasetAppendTrigger,
    DatasetEvent,
    PollEvent,
    ScheduleEvent,
)
from mainspring.storage.artifacts import save_artifact
from mainspring.storage.registry import routine_options
from mainspring.storage.state import StateTooLarge, encode_state

__all__ = ["FireResult", "Progress", "TestSystem", "call", "fire"]

_EVENTS: dict[str, tuple[type[Any], str]] = {
    "schedule": (ScheduleEvent, "ScheduleEvent.at(datetime(2026, 1, 1, 9, 0))"),
    "poll": (PollEvent, 'PollEvent.with_payload({"key": "value"})'),
    "dataset": (DatasetEvent, "DatasetEvent.from_table(table)"),
    "completion": (CompletionEvent, 'CompletionEvent.of("upstream", outputs={...})'),
}


@dataclass(frozen=True)
class Progress:
    """One `self.progress(fraction, message)` call of the run."""

    fraction: float
    message: str


@dataclass(frozen=True)
class FireResult:
    """What one fired run did: its outcome, what it reported and saved, its new state."""

    status: str
    outputs: dict[str, Any]
    error: str | None
    traceback: str | None
    progress: list[Progress]
    # Table artifacts read back from the temporary store; file artifacts as their bytes.
    artifacts: dict[str, pa.Table]
    files: dict[str, bytes]
    # The state the next run would see: unchanged unless this run completed.
    state: dict[str, Any]
    run_info: RunInfo
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[str]:
        """The progress messages, in order."""
        return [step.message for step in self.progress]


class _Recorder:
    """The RunContext of a fired run: keeps progress, saves artifacts under a temporary root."""

    def __init__(self, root: str, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.progress_seen: list[Progress] = []
        self.saved: list[ArtifactRef] = []

    def progress(self, fraction: float, message: str) -> None:
        self.progress_seen.append(Progress(fraction, message))

    def save_artifact(self, name: str, data: Any) -> str:
        ref = save_artifact(self.root, self.run_id, name, data)
        self.saved.append(ref)
        return ref.uri


def fire(
    routine: type[Routine],
    event: Any = None,
    *,
    inputs: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    run_info: RunInfo | None = None,
) -> FireResult:
    """Run `routine` once in this process for `event`, as a runner would; returns the result.

    `config` is the instance's input defaults (`routine create --set`), `inputs` the run's
    own, `state` what `self.state` holds at the start. A schedule or poll routine gets a
    tick at now when no event is given; dataset and completion routines need one.
    """
    contract = inspect_contract(routine)
    routine_options(routine)  # registration refuses a bad `memory` or `isolation`: so does this
    specs = _configured(contract.inputs, config or {})
    fired = _checked_event(routine.__name__, contract, event)
    given = dict(inputs or {})
    if isinstance(fired, PollEvent):
        # As a polled payload does: keys naming run() inputs become inputs (given ones win).
        given = {**{k: v for k, v in fired.payload.items() if k in specs}, **given}
    resolved = validate_inputs(specs, given)
    if isinstance(fired, DatasetEvent):
        # A runner reads the rows in batches of the routine's `batch_size` input, if it has one.
        fired = fired.replace(batch_size=int(resolved.get("batch_size") or fired.batch_size))
    info = run_info or _run_info(routine.__name__, fired)
    arguments = {contract.trigger_param: fired, **resolved}
    with tempfile.TemporaryDirectory(prefix="mainspring-fire-") as root:
        recorder = _Recorder(root, info.id)
        outcome = _outside_any_loop(invoke, routine, arguments, recorder, info, state or {})
        return _result(outcome, recorder, info, resolved, state or {})


def call(
    routine: type[Routine],
    method: str,
    *,
    inputs: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
) -> FireResult:
    """Run one declared method of `routine` (its constructor `configure`, or one marked
    `@method`) once in this process, as a runner would; returns the result.

    `configuration` is what `self.config` holds (an instance's last constructor inputs),
    `state` what `self.state` holds at the start. run() needs an event: use `fire`.
    """
    if method == "run":
        raise RoutineInvocationError("run() takes its trigger's event: test it with fire()")
    contract = inspect_contract(routine)
    resolved = validate_inputs(method_specs(contract, method), dict(inputs or {}))
    info = RunInfo(
        id=f"test-{uuid.uuid4().hex[:12]}", number=1, routine=routine.__name__, source="manual"
    )
    execute = functools.partial(invoke, method=method, config=configuration or {})
    with tempfile.TemporaryDirectory(prefix="mainspring-call-") as root:
        recorder = _Recorder(root, info.id)
        outcome = _outside_any_loop(execute, routine, resolved, recorder, info, state or {})
        return _result(outcome, recorder, info, resolved, state or {})


def _configured(specs: dict[str, InputSpec], config: dict[str, Any]) -> dict[str, InputSpec]:
    """Input specs with the instance's defaults, validated as `routine create --set` does."""
    validated = validate_inputs(specs, config)
    return {
        name: InputSpec(
            spec.type, validated[name] if name in config else spec.default, spec.optional
        )
        for name, spec in specs.items()
    }


def _checked_event(name: str, contract: RoutineContract, event: Any) -> Any:
    """The event as the trigger would deliver it, or a one-line error when it never could."""
    kind = contract.trigger.kind
    expected, example = _EVENTS[kind]
    param = contract.trigger_param
    if event is None:
        if kind == "schedule":
            return ScheduleEvent.at(datetime.now(UTC))
        if kind == "poll":
            return PollEvent.with_payload({})
        raise RoutineInvocationError(
            f"{name}.run() needs an event for {param!r}: pass event={example}"
        )
    if not isinstance(event, expected):
        raise RoutineInvocationError(
            f"{name}.run() gets a {expected.__name__} for {param!r} from its {kind} trigger, "
            f"not a {type(event).__name__}: pass event={example}"
        )
    trigger = contract.trigger
    if isinstance(trigger, DatasetAppendTrigger) and isinstance(event, DatasetEvent):
        if event.dataset and event.dataset != trigger.dataset:
            raise RoutineInvocationError(
                f"{name} fires on appends to {trigger.dataset!r}, not {event.dataset!r}: "
                "leave dataset= out of DatasetEvent.from_table or name the trigger's dataset"
            )
        return event.replace(dataset=trigger.dataset)
    if (
        isinstance(trigger, CompletionTrigger)
        and isinstance(event, CompletionEvent)
        and (event.routine != trigger.routine or trigger.status not in ("any", event.status))
    ):
        wanted = "any" if trigger.status == "any" else f"a {trigger.status}"
        raise RoutineInvocationError(
            f"{name} fires on {wanted} run of {trigger.routine!r}, never on a "
            f"{event.status} run of {event.routine!r}: build the event it would receive"
        )
    return event


def _run_info(routine: str, event: Any) -> RunInfo:
    """Who a triggered run is; a completion-triggered one is one hop past its upstream run."""
    upstream = event.run_id if isinstance(event, CompletionEvent) else None
    return RunInfo(
        id=f"test-{uuid.uuid4().hex[:12]}",
        number=1,
        routine=routine,
        source="trigger",
        hop=1 if upstream else 0,
        parent_run_id=upstream,
    )


def _outside_any_loop(function: Any, *args: Any) -> Any:
    """Call `function` here, or on a thread when this thread already runs an event loop.

    An async routine gets its own loop, which cannot start inside a running one (an async
    test); the thread gives it a clean one while the test waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function(*args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def _result(
    outcome: dict[str, Any],
    recorder: _Recorder,
    info: RunInfo,
    inputs: dict[str, Any],
    initial_state: dict[str, Any],
) -> FireResult:
    status, error = outcome["status"], outcome.get("error")
    new_state = outcome.get("state")
    if status == "completed" and new_state is not None:
        try:
            encode_state(new_state)
        except StateTooLarge as exc:
            # A runner fails such a run and keeps the old state; so does this.
            status, error, new_state = "failed", str(exc), None
    artifacts: dict[str, pa.Table] = {}
    files: dict[str, bytes] = {}
    for ref in recorder.saved:
        if ref.kind == "table":
            artifacts[ref.name] = pq.read_table(ref.uri, memory_map=False)
        else:
            files[ref.name] = Path(ref.uri).read_bytes()
    return FireResult(
        status=status,
        outputs=outcome.get("outputs", {}),
        error=error,
        traceback=outcome.get("traceback"),
        progress=list(recorder.progress_seen),
        artifacts=artifacts,
        files=files,
        state=new_state if status == "completed" and new_state is not None else initial_state,
        run_info=info,
        inputs=inputs,
    )


class TestSystem:
    """The whole system (nats-server, the five services, SQLite) in a home of its own.

    For integration tests: `start()`, register routines, append rows, wait for their runs,
    `stop()`. It is what `mainspring up` starts, without the web page. The pytest plugin's
    `mainspring_system` fixture gives one; the helpers work from sync and async tests.
    """

    __test__ = False  # a helper, not a test class pytest should collect

    def __init__(self, home: Path, runners: int = 1) -> None:
        from mainspring.base.settings import Settings

        home = home.resolve()
        self.home = home
        self.settings = Settings(
            home=home,
            nats_url=None,
            database_url=f"sqlite:///{home / 'runs.db'}",
            dataset_root=str(home / "datasets"),
            artifact_root=str(home / "artifacts"),
        )
        self.runners = runners
        self._system: Any = None

    def start(self, timeout_s: float = 60.0) -> TestSystem:
        """Start every part and return once each is connected to the bus."""
        import io

        from mainspring.apps.status import collect_status, everything_ready, wait_until
        from mainspring.apps.up import System

        # Started from the caller's thread: the parts get SIGTERM when the thread that
        # started them ends (Linux's parent-death signal), so not from a helper thread.
        self._system = System(
            self.settings, runners=self.runners, web_port=None, echo=io.StringIO()
        )
        self._system.start()
        self.settings = self.settings.model_copy(update={"nats_url": self._system.nats_url})
        if not wait_until(lambda: everything_ready(collect_status(self.settings)), timeout_s):
            parts = collect_status(self.settings).get("parts") or []
            waiting = [f"{p['name']} {p['state']}" for p in parts if p.get("state") != "ready"]
            self.stop()
            raise TimeoutError(
                f"the test system in {self.home} was not ready after {timeout_s:g}s "
                f"({', '.join(waiting)}); see the logs in {self.home / 'logs'}"
            )
        return self

    def stop(self) -> None:
        """Stop the services, then nats-server."""
        if self._system is not None:
            self._system.stop()
            self._system = None

    @property
    def nats_url(self) -> str:
        """Where its nats-server listens."""
        return self.settings.resolved_nats_url()

    def env(self) -> dict[str, str]:
        """Environment for a `mainspring` command (or any SDK process) against this system."""
        import os

        return {
            **os.environ,
            "MAINSPRING_HOME": str(self.home),
            "MAINSPRING_NATS_URL": self.nats_url,
            "MAINSPRING_DATABASE_URL": self.settings.resolved_database_url(),
            "MAINSPRING_DATASET_ROOT": self.settings.resolved_dataset_root(),
            "MAINSPRING_ARTIFACT_ROOT": self.settings.resolved_artifact_root(),
        }

    async def connect(self) -> Any:
        """An SDK client connected to this system (close it when done)."""
        from mainspring.client import Client

        return await Client.connect(self.settings)

    def register(
        self,
        folder: Path | str,
        name: str,
        *,
        entrypoint: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Any:
        """Register (or update) the routine in `folder` as `name`; returns its definition."""

        async def register(client: Any) -> Any:
            return await client.create_routine(Path(folder), name, entrypoint, config)

        return self._with_client(register)

    def create_dataset(self, name: str, schema: str | None = None, data: Any = None) -> int:
        """Create a dataset (columns as 'id:int64,text:string', or initial rows); its version."""
        from mainspring.storage import datasets

        root = self.settings.resolved_dataset_root()
        return datasets.create(name, schema, data=data, root=root).version

    def append(self, dataset: str, rows: Any) -> int:
        """Append rows (a pyarrow Table, a dict of columns, a list of rows); the new version."""
        from mainspring.storage import datasets

        return datasets.append(dataset, rows, root=self.settings.resolved_dataset_root())

    def run(
        self, routine: str, inputs: dict[str, Any] | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Start a run by hand and return its record once it has ended."""

        async def run(client: Any) -> dict[str, Any]:
            run_id = await client.submit(routine, inputs or {})
            finished: dict[str, Any] = await client.wait(run_id, timeout=timeout_s)
            return finished

        result: dict[str, Any] = self._with_client(run)
        return result

    def wait_for_runs(
        self, routine: str, count: int = 1, timeout_s: float = 60.0
    ) -> list[dict[str, Any]]:
        """The routine's first `count` runs once all of them have ended, oldest first."""

        async def wait(client: Any) -> list[dict[str, Any]]:
            from mainspring.contract.messages import TERMINAL_STATUSES
            from mainspring.contract.queries import RunQuery

            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                runs = await client.list_runs(RunQuery(routine=routine, limit=10_000))
                oldest = sorted(runs, key=lambda r: (r["created_at"], r["run_number"]))[:count]
                if len(oldest) == count and all(r["status"] in TERMINAL_STATUSES for r in oldest):
                    return oldest
                if loop.time() > deadline:
                    seen = ", ".join(f"#{r['run_number']} {r['status']}" for r in oldest)
                    raise TimeoutError(
                        f"{routine} has not ended {count} run(s) after {timeout_s:g}s "
                        f"(runs: {seen or 'none'}); see the logs in {self.home / 'logs'}"
                    )
                await asyncio.sleep(0.1)

        result: list[dict[str, Any]] = self._with_client(wait)
        return result

    def _with_client(self, action: Any) -> Any:
        async def go() -> Any:
            client = await self.connect()
            try:
                return await action(client)
            finally:
                await client.close()

        return _outside_any_loop(asyncio.run, go())
