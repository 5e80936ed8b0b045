"""The SDK's client: register routines, start runs, query history (what the CLI uses)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from mainspring.base import tracing
from mainspring.base.schedules import ScheduleWarning
from mainspring.base.settings import Settings
from mainspring.client.completions import (
    DEFAULT_INACTIVE_THRESHOLD,
    FollowError,
    check_since,
    completion_filter,
    follower_config,
    follower_name,
    resume_mismatch,
)
from mainspring.client.instances import (
    carried_instance_fields,
    check_registration,
    create_instance,
    method_inputs,
    method_schemas,
    record_version,
)
from mainspring.client.triggers import TriggerCalls
from mainspring.contract import subjects
from mainspring.contract.messages import (
    INVOCATIONS,
    ISOLATIONS,
    PRIORITIES,
    TERMINAL_STATUSES,
    CancelRun,
    DeleteRuns,
    RunCompleted,
    RunLogged,
    RunOptions,
    SubmitRun,
)
from mainspring.contract.queries import RunQuery
from mainspring.runtime.bus import connect_with, publish
from mainspring.sdk.bundle import import_entrypoint, make_bundle, resolve_entrypoint
from mainspring.sdk.routine import inspect_contract, validate_inputs
from mainspring.sdk.triggers import TimedSpec
from mainspring.storage.capacity import CapacityBoard, RunnerCapacity
from mainspring.storage.registry import (
    BUNDLE_GRACE,
    DatasetStart,
    InputSchema,
    RegistryError,
    RoutineDefinition,
    RoutineStore,
    carry_trigger_state,
    routine_options,
    sweep_bundles,
)

if TYPE_CHECKING:
    from mainspring.client.dags import DagsRegistered
    from mainspring.compose import Namespace


class ServiceUnavailable(RuntimeError):
    """A service the request needs is not running or did not answer in time."""


class RunRefused(RuntimeError):
    """The dispatcher refused a submitted run; the message is its reason."""


class RecorderError(RuntimeError):
    """The recorder answered, but could not serve the request; the message says why."""


# Runs per listing request; the recorder may send fewer to stay below the bus's max payload.
RUNS_PAGE_SIZE = 500


def repeated_options(run: dict[str, Any]) -> RunOptions:
    """The options a rerun repeats from a recorded run: its memory limit and artifact options.

    Not its isolation or execution: those columns say how the run did execute (in memory,
    or with the routine's isolation then), and a rerun goes to a runner as the routine is now.
    """
    return RunOptions(
        memory_limit=run.get("memory_limit"),
        statistics=bool(run.get("statistics")),
        previews=bool(run.get("previews")),
        store_artifacts=run.get("store_artifacts") is not False,
    )


def definition_from_folder(
    folder: Path, name: str, entrypoint: str | None, defaults: dict[str, Any], now: datetime
) -> tuple[RoutineDefinition, bytes]:
    """Validate a routine folder and describe it; returns the definition and its bundle."""
    entry = resolve_entrypoint(folder, entrypoint)
    cls = import_entrypoint(folder, entry)
    contract = inspect_contract(cls)
    validated = validate_inputs(contract.inputs, defaults)
    data, digest = make_bundle(folder)
    options = routine_options(cls)
    definition = RoutineDefinition(
        name=name,
        version=digest,
        entrypoint=entry,
        class_name=cls.__name__,
        trigger_param=contract.trigger_param,
        trigger=contract.trigger,
        inputs={
            k: InputSchema(type=s.type, default=s.default, optional=s.optional)
            for k, s in contract.inputs.items()
        },
        defaults={k: validated[k] for k in defaults},
        options=options,
        created_at=now,
        updated_at=now,
        routine=name,
        methods=method_schemas(contract),
    )
    return definition, data


class Client(TriggerCalls):
    """A connection to a Mainspring deployment."""

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self._store: RoutineStore | None = None
        # What the last create_routine did to the trigger's on/off state, in one sentence.
        self.last_registration_note = ""

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> Client:
        """Connect using settings (env, or the running `mainspring up`)."""
        settings = settings or Settings()
        # Reconnect for as long as it takes: a restarted nats-server (under `up`, or a
        # deployment's rolling restart) must not leave a long-lived client (the web page) dead.
        nc = await connect_with(
            settings,
            name="mainspring-client",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
        )
        return cls(nc, settings)

    async def close(self) -> None:
        """Flush and disconnect."""
        await self.nc.drain()

    async def runners(self) -> list[RunnerCapacity]:
        """The live runners as each last described itself (slots, memory, isolation)."""
        return await (await CapacityBoard.open(self.js)).live()

    async def store(self) -> RoutineStore:
        """The routine registry."""
        if self._store is None:
            self._store = await RoutineStore.open(self.js)
        return self._store

    async def create_routine(
        self,
        folder: Path,
        name: str,
        entrypoint: str | None = None,
        defaults: dict[str, Any] | None = None,
        enable: bool | None = None,
    ) -> RoutineDefinition:
        """Validate, bundle and register (or update) a routine.

        An update keeps the trigger on or off (see `carry_trigger_state`); `enable` decides.
        """
        now = datetime.now(UTC)
        fresh, data = await asyncio.to_thread(
            definition_from_folder, folder, name, entrypoint, defaults or {}, now
        )
        store = await self.store()
        existing = await store.find(name)
        # The blueprint `name` and its instance `name`, which follows its latest version.
        check_registration(existing, name)
        definition, self.last_registration_note = carry_trigger_state(
            existing, carried_instance_fields(existing, fresh), enable
        )
        await store.put_bundle(definition.version, data)
        definition = await self.with_dataset_start(definition)
        await store.put(definition)
        await record_version(self, definition, now)
        trigger = definition.trigger
        doubt = trigger.timing_warning() if isinstance(trigger, TimedSpec) else None
        if doubt is not None:
            warnings.warn(f"routine {name}: {doubt}", ScheduleWarning, stacklevel=2)
        return definition

    async def create_instance(
        self,
        name: str,
        routine: str,
        *,
        version: str | None = None,
        settings: dict[str, Any] | None = None,
        source: str = "api",
    ) -> tuple[RoutineDefinition, str | None]:
        """A new instance of `routine` (pinned to `version`, a digest prefix, or following the
        latest); returns it and its constructor run's id (see `mainspring.client.instances`)."""
        return await create_instance(
            self, name, routine, version=version, settings=settings, source=source
        )

    async def configure_instance(
        self, name: str, settings: dict[str, Any], source: str = "api"
    ) -> str:
        """Reconfigure an instance: a run of its constructor; returns the run id."""
        definition = await (await self.store()).get(name)
        constructor = definition.constructor()
        if constructor is None:
            raise RegistryError(
                f"routine {definition.blueprint} has no constructor, so instance {name} has no "
                "configuration: declare `def configure(self, k: int = 3)` on its class"
            )
        run_id = await self.submit(name, settings, method=constructor, source=source)
        await self.record_action(
            "instance.configure",
            "instance",
            name,
            routine=name,
            run_id=run_id,
            details={"configuration": settings, "method": constructor},
        )
        return run_id

    async def collect_bundles(
        self, grace: timedelta = BUNDLE_GRACE, now: datetime | None = None
    ) -> list[str]:
        """Delete code bundles that nothing has used for `grace`; returns their digests.

        Used: the version of a registered routine, or of a run not yet ended (it finishes on
        the code it started with). Without the recorder's answer nothing is deleted.
        """
        store = await self.store()
        referenced = {definition.version for definition in await store.list()}
        for status in ("queued", "running"):
            async for run in self.iter_runs(RunQuery(status=status, limit=1_000_000)):
                referenced.add(run.get("routine_version") or "")
        sweep = sweep_bundles(
            await store.stored_bundles(), referenced, now or datetime.now(UTC), grace
        )
        for digest in sweep.unmark:
            await store.mark_bundle(digest, None)
        for digest in sweep.mark:
            await store.mark_bundle(digest, now or datetime.now(UTC))
        for digest in sweep.delete:
            await store.delete_bundle(digest)
        return sweep.delete

    async def with_dataset_start(self, definition: RoutineDefinition) -> RoutineDefinition:
        """The definition with where its dataset stands now, for the dispatcher's cursor."""
        start = await self.dataset_start(definition)
        if start is None:
            return definition
        return definition.model_copy(update={"dataset_start": start})

    async def dataset_start(self, definition: RoutineDefinition) -> DatasetStart | None:
        """The dataset of a dataset routine as it is now: where the dispatcher starts its cursor.

        None when the dataset is out of reach or not created yet: the dispatcher then starts
        the cursor at the first append announced for it.
        """
        from mainspring.sdk.triggers import DatasetAppendTrigger
        from mainspring.storage import deltalog
        from mainspring.storage.datasets import current_state

        trigger = definition.trigger
        if not isinstance(trigger, DatasetAppendTrigger):
            return None
        root = self.settings.resolved_dataset_root()
        try:
            state = await asyncio.to_thread(current_state, trigger.dataset, root)
            fs, base = deltalog.filesystem(root)
            table_id = await asyncio.to_thread(deltalog.table_identity, fs, base, trigger.dataset)
        except Exception:  # noqa: BLE001 - store unreachable from here: the dispatcher starts it
            return None
        if state is None:
            return None
        version, records = state
        return DatasetStart(
            dataset=trigger.dataset, version=version, records=records, table_id=table_id
        )

    async def submit(
        self,
        routine: str,
        inputs: dict[str, Any] | None = None,
        *,
        labels: list[str] | None = None,
        attributes: dict[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        memory_limit: int | None = None,
        statistics: bool = False,
        previews: bool = False,
        store_artifacts: bool = True,
        source: str = "api",
        isolation: str | None = None,
        priority: str | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
        upstream: str | None = None,
        payload: dict[str, Any] | None = None,
        invocation: str = "direct",
        method: str = "run",
    ) -> str:
        """Ask for a run (of `method`, run() by default); returns its run id at once.

        The dispatcher checks the routine and the inputs; a refused run is recorded as failed
        with the reason (`dispatched` waits for that decision). The run gets the event its trigger would deliver: a dataset routine the rows since
        its cursor (or versions (from_version, to_version]) without moving the cursor, a
        completion routine the event of run `upstream` (default: the latest matching one),
        a poll routine `payload`, a schedule routine a tick at now. `priority` ("high",
        "normal", "low"; default: the routine's) orders it among the runs waiting for a runner.
        """
        if isolation is not None and isolation not in ISOLATIONS:
            raise ValueError(f"isolation {isolation!r}: use 'worker' or 'process'")
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r}: use 'high', 'normal' or 'low'")
        if payload is not None and not isinstance(payload, dict):
            raise ValueError('payload must be a JSON object (a dict), e.g. {"city": "Oslo"}')
        if invocation not in INVOCATIONS:
            raise ValueError(
                f"invocation {invocation!r}: use 'workflow' (inputs asked for step by step) "
                "or 'direct' (given at once)"
            )
        if method != "run":
            inputs = await method_inputs(self, routine, method, inputs or {})
        return await self._submit(
            SubmitRun(
                request_id=str(uuid.uuid4()),
                routine=routine,
                inputs=inputs or {},
                labels=labels or [],
                attributes=attributes or {},
                name=name,
                description=description,
                started_by=self.actor(),
                source=source,
                options=RunOptions(
                    memory_limit=memory_limit,
                    isolation=isolation,
                    priority=priority,
                    statistics=statistics,
                    previews=previews,
                    store_artifacts=store_artifacts,
                ),
                submitted_at=datetime.now(UTC),
                from_version=from_version,
                to_version=to_version,
                upstream_run_id=upstream,
                payload=payload,
                invocation=invocation,
                method=method,
            )
        )

    async def rerun(self, run_id: str, *, source: str = "api") -> str:
        """Start a new run with the inputs, labels, attributes and event of run `run_id`,
        linked to it (`rerun_of`); returns the new run's id."""
        original = await self.get_run(run_id)
        if original is None:
            raise ValueError(
                f"run {run_id} is not recorded: find its id with `mainspring runs list`"
            )
        event = original.get("trigger_event")
        # A run refused before the dispatcher built its event has none: it gets a fresh one.
        replayed = original.get("trigger_kind") if event is not None else None
        method = original.get("method") or "run"
        inputs = original.get("inputs") or {}
        if method != "run":
            # A constructor run repeated configures the instance again, as it did then.
            inputs = await method_inputs(self, original["routine"], method, inputs)
        new_run_id = await self._submit(
            SubmitRun(
                request_id=str(uuid.uuid4()),
                routine=original["routine"],
                inputs=inputs,
                labels=original.get("labels") or [],
                attributes=original.get("attributes") or {},
                name=original.get("name"),
                description=original.get("description"),
                started_by=self.actor(),
                source=source,
                options=repeated_options(original),
                submitted_at=datetime.now(UTC),
                rerun_of=run_id,
                trigger_kind=replayed,
                event=event if replayed else None,
                method=method,
            )
        )
        await self.record_action(
            "run.rerun",
            "run",
            run_id,
            routine=original["routine"],
            run_id=run_id,
            details={"new_run_id": new_run_id},
        )
        return new_run_id

    async def create_dags(self, path: Path) -> DagsRegistered:
        """Register every DAG a module (or folder) registers in its Namespace, and the
        triggers it declares (created inactive; existing ones keep their activation)."""
        from mainspring.client import dags as dag_client

        return await dag_client.create_dags(self, path)

    async def register_namespace(self, namespace: Namespace) -> DagsRegistered:
        """Register a live Namespace's DAGs and triggers (its module's folder is the code)."""
        from mainspring.client import dags as dag_client

        return await dag_client.register_namespace(self, namespace)

    async def run_dag(
        self, nsref: str, payload: dict[str, Any] | None = None, *, source: str = "api"
    ) -> str:
        """Start a run of a registered DAG; payload keys reach its source nodes by name."""
        from mainspring.client import dags as dag_client

        await dag_client.check_dag(self, nsref)
        return await self.submit(nsref, payload=payload or {}, source=source)

    async def restart(self, run_id: str) -> str:
        """Resume a failed DAG run from its failed node, as a new run; returns its id."""
        from mainspring.client import dags as dag_client

        new_run_id = await dag_client.restart(self, run_id, self.actor())
        await self.record_action(
            "run.restart", "run", run_id, run_id=run_id, details={"new_run_id": new_run_id}
        )
        return new_run_id

    async def replay(self, run_id: str, nodes: list[str]) -> str:
        """Run chosen nodes of a DAG run again, as a new run (the rest skipped); its id."""
        from mainspring.client import dags as dag_client

        new_run_id = await dag_client.replay(self, run_id, nodes, self.actor())
        await self.record_action(
            "run.replay",
            "run",
            run_id,
            run_id=run_id,
            details={"new_run_id": new_run_id, "nodes": nodes},
        )
        return new_run_id

    async def submit_request(self, request: SubmitRun) -> str:
        """Publish a prepared SubmitRun (its request_id becomes the run id); returns once
        JetStream stored it. A repeat within the bus's duplicate window is dropped."""
        return await self._submit(request)

    async def _submit(self, request: SubmitRun) -> str:
        if self._store is not None and not request.registry_revision:
            # Read-your-writes: the dispatcher must see this client's own registry changes.
            request = request.model_copy(update={"registry_revision": self._store.written_revision})
        await self.js.publish(
            subjects.RUN_SUBMITTED,
            request.model_dump_json().encode(),
            headers=dict(tracing.inject({"Nats-Msg-Id": f"submit:{request.request_id}"})),
        )
        return request.request_id

    async def dispatched(
        self, run_id: str, timeout: float = 15.0, poll_s: float = 0.05
    ) -> dict[str, Any]:
        """Wait for the dispatcher's decision on a submitted run; returns the run once queued.

        Raises RunRefused with the dispatcher's reason (unknown routine, bad inputs).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                run = await self.get_run(run_id)
            except ServiceUnavailable as exc:
                # The recorder may be reconnecting (a restarted bus): ask again until the deadline.
                if loop.time() > deadline:
                    raise ServiceUnavailable(f"run {run_id} is submitted, but {exc}") from None
                await asyncio.sleep(poll_s)
                continue
            if run is not None and run["status"] != "created":
                # A refused run ends failed without ever being queued or started.
                if (
                    run["status"] == "failed"
                    and not run.get("queued_at")
                    and not run.get("started_at")
                ):
                    raise RunRefused(run.get("error") or f"run {run_id} was refused")
                return run
            if loop.time() > deadline:
                raise TimeoutError(
                    f"run {run_id} is submitted but not dispatched after {timeout:g}s: "
                    f"{await self._why_undispatched()}"
                )
            await asyncio.sleep(poll_s)

    async def _why_undispatched(self) -> str:
        """Which service holds up a submitted run's decision, read from the consumers' backlogs."""
        try:
            dispatcher = await self.js.consumer_info(
                subjects.STREAM, subjects.DISPATCHER_SUBMITTED_CONSUMER
            )
        except NotFoundError:
            return (
                "no dispatcher ever ran on this bus: start it (`mainspring up` or "
                "`mainspring service dispatcher`); the run starts once one does"
            )
        waiting = dispatcher.num_pending + dispatcher.num_ack_pending
        if waiting:
            return (
                f"the dispatcher has not taken it yet ({waiting} submits waiting): check that it "
                "runs (`mainspring status`); the run starts once it does"
            )
        recorder = await self.js.consumer_info(subjects.STREAM, subjects.RECORDER_RUNS_CONSUMER)
        behind = (recorder.num_pending or 0) + recorder.num_ack_pending
        return (
            f"the dispatcher decided, but the recorder is {behind} run events behind; "
            f"see the run later with `mainspring runs show`"
        )

    async def _request(
        self, subject: str, payload: dict[str, Any], timeout: float = 5.0
    ) -> dict[str, Any]:
        try:
            reply = await self.nc.request(
                subject, json.dumps(payload, default=str).encode(), timeout=timeout
            )
        except NoRespondersError:
            raise ServiceUnavailable(
                "the recorder is not running: start it (`mainspring up` or `mainspring service recorder`)"
            ) from None
        except NatsTimeoutError:
            raise ServiceUnavailable(
                f"the recorder did not answer {subject} within {timeout:g}s: it is running but "
                "busy or stuck; try again, or see its log"
            ) from None
        result: dict[str, Any] = json.loads(reply.data)
        if "error" in result:
            raise RecorderError(f"the recorder could not answer: {result['error']}")
        return result

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its progress history, parent and children (None if unknown)."""
        run: dict[str, Any] | None = (
            await self._request(subjects.API_RUNS_GET, {"run_id": run_id})
        )["run"]
        return run

    async def list_runs(self, query: RunQuery | None = None) -> list[dict[str, Any]]:
        """Runs matching a query, newest first, up to its limit (fetched page by page)."""
        return [run async for run in self.iter_runs(query)]

    async def runs_page(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs after `query.after`, and the cursor of the next page (None: no more)."""
        payload = json.loads(query.model_dump_json())
        reply = await self._request(subjects.API_RUNS_LIST, payload)
        runs: list[dict[str, Any]] = reply["runs"]
        next_cursor: str | None = reply.get("next")
        return runs, next_cursor

    async def iter_runs(
        self, query: RunQuery | None = None, page_size: int = RUNS_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Runs matching a query, newest first, up to its limit, asking one page at a time."""
        query = query or RunQuery()
        remaining, after = query.limit, query.after
        while remaining > 0:
            page = query.model_copy(update={"limit": min(page_size, remaining), "after": after})
            runs, after = await self.runs_page(page)
            for run in runs:
                yield run
            remaining -= len(runs)
            if after is None or not runs:
                return

    async def trigger_events(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """A trigger's history, newest first (`fired_at`, `status`, `run_id`, `payload`, why).

        `name` is a named trigger, or a routine for its own trigger (named after it).
        """
        events: list[dict[str, Any]] = (
            await self._request(
                subjects.API_TRIGGER_EVENTS, {"routine": name, "trigger": name, "limit": limit}
            )
        )["events"]
        return events

    async def wait(
        self, run_id: str, timeout: float | None = None, poll_s: float = 0.2
    ) -> dict[str, Any]:
        """Wait until a run is terminal and return it."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                run = await self.get_run(run_id)
            except ServiceUnavailable:
                # The recorder may be restarting; the run record waits for it on the stream.
                run = None
            if run is not None and run["status"] in TERMINAL_STATUSES:
                return run
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {timeout}s")
            await asyncio.sleep(poll_s)

    def completions(
        self,
        routine: str | None = None,
        status: str | None = None,
        durable: str | None = None,
        since: datetime | None = None,
        *,
        inactive_threshold: timedelta = DEFAULT_INACTIVE_THRESHOLD,
    ) -> Completions:
        """Finished runs as they happen (`RunCompleted`), filtered by the server.

        `durable` resumes after the last acknowledged event of a follower of that name;
        `since` starts from a time within the stream's retention instead of now (for a
        durable, only when it is first created). Delivery is at least once: an event is
        acknowledged when the loop asks for the next one or its `async with` block ends
        without an error, so deduplicate by `run_id`.
        """
        filter_subject = completion_filter(routine, status)
        name = follower_name(durable) if durable else None
        start = check_since(since, datetime.now(UTC)) if since else None
        config = follower_config(filter_subject, name, start, inactive_threshold)
        return Completions(self.js, config)

    async def follow(self, run_id: str, poll_s: float = 0.25) -> AsyncIterator[dict[str, Any]]:
        """Yield a run each time its status or progress changes, until it is terminal."""
        last: tuple[Any, ...] | None = None
        while True:
            try:
                run = await self.get_run(run_id)
            except ServiceUnavailable:
                run = None
            if run is not None:
                seen = (
                    run["status"],
                    run.get("progress"),
                    run.get("progress_message"),
                    run.get("queue_reason"),
                    run.get("attempt"),
                )
                if seen != last:
                    last = seen
                    yield run
                if run["status"] in TERMINAL_STATUSES:
                    return
            await asyncio.sleep(poll_s)

    async def delete_runs(
        self,
        run_ids: list[str] | None = None,
        *,
        routine: str | None = None,
        status: str | None = None,
        before: datetime | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete finished runs with their progress, logs and artifacts: by id, or a routine's
        (narrowed by status and creation time). Runs not yet ended are never deleted.

        Returns `deleted` and `running` (run ids, counted in `deleted_count` and
        `running_count`) and `missing` (ids not recorded); with dry_run nothing is deleted.
        """
        request = DeleteRuns(
            run_ids=run_ids or [],
            routine=routine,
            status=status,
            before=before,
            dry_run=dry_run,
        )
        # Deleting many runs' files takes a while: a longer wait than a query's.
        reply = await self._request(
            subjects.API_RUNS_DELETE, json.loads(request.model_dump_json()), timeout=120.0
        )
        filters = {"status": status, "before": before.isoformat() if before else None}
        await self.record_runs_deleted(reply, routine, filters)
        return reply

    async def run_log(self, run_id: str) -> str | None:
        """A finished run's stdout and stderr, from the artifact store (None: it kept none yet)."""
        from mainspring.storage.runlogs import read_log

        root = self.settings.resolved_artifact_root()
        data = await asyncio.to_thread(read_log, root, run_id)
        return None if data is None else data.decode(errors="replace")

    async def follow_log(self, run_id: str, poll_s: float = 0.5) -> AsyncIterator[str]:
        """A run's output as it is written, until the run ends (then the stored log's rest).

        Output written before this call is in the stored log once the run ends; a line
        says how much was missed.
        """
        pieces: asyncio.Queue[RunLogged] = asyncio.Queue()

        async def on_piece(message: Msg) -> None:
            with contextlib.suppress(ValueError):
                pieces.put_nowait(RunLogged.model_validate_json(message.data))

        # Listening before the first look at the run: no piece can pass by unseen.
        subscription = await self.nc.subscribe(subjects.run_log_subject(run_id), cb=on_piece)
        try:
            seen = 0
            ended = False
            while True:
                try:
                    piece = await asyncio.wait_for(pieces.get(), poll_s)
                except TimeoutError:
                    if ended:
                        break
                    run = await self.get_run(run_id)
                    if run is None:
                        raise ValueError(
                            f"run {run_id} is not recorded: find its id with `mainspring runs list`"
                        ) from None
                    # Pieces are published before the run's outcome: once it is recorded,
                    # one more quiet wait drains them.
                    ended = run["status"] in TERMINAL_STATUSES
                    continue
                if piece.offset > seen:
                    yield (
                        f"[mainspring: {piece.offset - seen} bytes written before this point "
                        f"are in the stored log once the run ends: mainspring runs logs {run_id}]\n"
                    )
                yield piece.text
                seen = piece.offset + len(piece.text.encode())
            stored = await self.run_log(run_id)
            if stored is not None and seen == 0:
                yield stored
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def run_in_memory(
        self, routine: str, inputs: dict[str, Any] | None = None, **options: Any
    ) -> dict[str, Any]:
        """Run an opted-in routine in this process (recorded like any run); returns its record."""
        from mainspring.client.inmemory import run_in_memory

        return await run_in_memory(self, routine, inputs or {}, started_by=self.actor(), **options)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the recorder answers (right after `mainspring up`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._request(subjects.API_RUNS_LIST, {"limit": 1}, timeout=1.0)
                return
            except ServiceUnavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def cancel(self, run_id: str) -> None:
        """Ask for a run to stop: a command the dispatcher and runners act on.

        The dispatcher marks the run so it never starts; the runner holding it stops it.
        Either way a service, never this client, publishes the run's `cancelled` outcome.
        """
        by = self.actor()
        await publish(self.js, CancelRun(run_id=run_id, requested_by=by), subjects.RUN_CANCEL)
        await self.record_action("run.cancel", "run", run_id, run_id=run_id)

    async def publish(self, subject: str, body: bytes, message_id: str | None = None) -> None:
        """Publish an external event on the stream."""
        headers = {"Nats-Msg-Id": message_id} if message_id else {}
        await self.js.publish(subject, body, headers=dict(tracing.inject(headers)))


class Completions:
    """A follower of finished runs: `async with` it (or just `async for` over it)."""

    def __init__(self, js: JetStreamContext, config: ConsumerConfig) -> None:
        self.js = js
        self.config = config
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._unacked: Msg | None = None

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        filter_subject = self.config.filter_subject or subjects.RUN_COMPLETED_ANY
        name = self.config.durable_name
        if name:
            with contextlib.suppress(NotFoundError):
                existing = await self.js.consumer_info(subjects.STREAM, name)
                why = resume_mismatch(name, existing.config.filter_subject, filter_subject)
                if why:
                    raise FollowError(why)
        return await self.js.pull_subscribe(
            filter_subject, durable=name, stream=subjects.STREAM, config=self.config
        )

    async def __aenter__(self) -> Completions:
        self._subscription = await self._subscribe()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # A block left without an error has handled the last event; after an error (or a
        # crash) the server delivers it again.
        if exc_type is None:
            await self._ack()
        await self.close()

    async def close(self) -> None:
        """Stop pulling (a durable follower stays on the server to resume)."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _ack(self) -> None:
        if self._unacked is not None:
            await self._unacked.ack_sync()
            self._unacked = None

    def __aiter__(self) -> Completions:
        return self

    async def __anext__(self) -> RunCompleted:
        await self._ack()
        if self._subscription is None:
            self._subscription = await self._subscribe()
        while True:
            try:
                # One at a time: an event fetched but not yet handled is never held past
                # its ack wait, so a slow loop body does not get events twice.
                (message,) = await self._subscription.fetch(1, timeout=5.0)
            except TimeoutError:  # nats-py's own, or the builtin one when its wait ran out
                continue
            try:
                event = RunCompleted.model_validate_json(message.data)
            except ValidationError:
                # Not a completion (the services park such messages): never block the follower.
                await message.ack()
                continue
            self._unacked = message
            return event
