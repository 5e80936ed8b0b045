"""Message bodies on the bus: events in the past tense, commands as imperatives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from mainspring.base.kv import key_token
from mainspring.contract import subjects

RunStatus = Literal["created", "queued", "running", "completed", "failed", "cancelled"]
TerminalStatus = Literal["completed", "failed", "cancelled"]
RunSource = Literal["trigger", "manual", "api"]
TriggerKind = Literal["schedule", "dataset", "completion", "poll", "manual"]
FiringStatus = Literal["fired", "skipped", "failed", "loop_blocked", "disabled"]
# "worker": a reused worker process pinned to the code's digest; "process": a fresh fork per run.
Isolation = Literal["worker", "process"]
ISOLATIONS: tuple[str, ...] = ("worker", "process")
# How a run got its inputs (Xperiflow's invocation method): "workflow" when they were collected
# step by step (`mainspring run --interactive`), "direct" when given at once (API, flags, a trigger).
InvocationType = Literal["workflow", "direct"]
INVOCATIONS: tuple[str, ...] = ("workflow", "direct")
# "background": a runner executes it; "in_memory": the caller executes it in its own process.
ExecutionType = Literal["background", "in_memory"]
# Which runs a runner with a free slot takes first: every high-priority run waiting before any
# normal one, every normal one before any low one. Each has its own request subject.
Priority = Literal["high", "normal", "low"]
# Highest first: the order a runner's intake asks the queues in.
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")
# What a registry entry runs: a Routine class, or a DAG of plain functions (mainspring.compose).
DefinitionKind = Literal["routine", "dag"]

TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# "start": the run failed before run() was called (code, entrypoint, contract, inputs);
# "run": run() was reached. Crash-loop protection counts only start failures.
RunPhase = Literal["start", "run"]

# A routine's name and a run's id become subject tokens (run.completed.<routine>.<status>,
# log.run.<id>) and KV keys (cancel.<id>), escaped by key_token. Much longer, they could not
# be used at all: nats-server closes the connection of a client that sends an overlong
# subject. A message carrying one is malformed, parked at once instead of cutting a service
# off the bus.
MAX_TOKEN_BYTES = 1024


def _fits_a_subject(name: str) -> str:
    token = len(key_token(name).encode())
    if token > MAX_TOKEN_BYTES:
        raise ValueError(
            f"{token} bytes as a subject token, more than the {MAX_TOKEN_BYTES} a name or id "
            "may take: use a shorter one"
        )
    return name


RoutineName = Annotated[str, AfterValidator(_fits_a_subject)]
RunId = Annotated[str, AfterValidator(_fits_a_subject)]
# A run's chain names its ancestors as "routine:run_id", oldest first, at most this many.
CHAIN_LIMIT = 32


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every message: immutable, unknown fields ignored so producers can evolve."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ScheduleFired(Message):
    """A schedule (or poll) trigger reached its nominal time."""

    routine: RoutineName
    scheduled_at: AwareDatetime
    fired_at: AwareDatetime
    routine_version: str = ""
    # A named trigger's tick (its target is `routine`); None: the routine's own trigger.
    trigger: str | None = None

    def message_id(self) -> str:
        """Deduplicates one nominal tick across tickers and restarts."""
        if self.trigger is not None:
            return f"trigger:{self.trigger}:{self.scheduled_at.isoformat()}"
        return f"schedule:{self.routine}:{self.scheduled_at.isoformat()}"


class DatasetAppended(Message):
    """Rows were appended to a dataset in versions (from_version, to_version]."""

    dataset: str = Field(min_length=1)
    from_version: int = Field(ge=-1)
    to_version: int = Field(ge=0)
    added_records: int = Field(ge=0)
    added_files: list[str] = Field(default_factory=list)
    hop: int = Field(default=0, ge=0)
    parent_run_id: str | None = None
    # Rows in the table at to_version (from the commit log's stats); the base of added_fraction.
    table_records: int | None = Field(default=None, ge=0)
    # The table's metaData.id: versions restart at 0 when a dataset is deleted and created
    # again under the same name, and this tells the new table's versions from the old one's.
    table_id: str | None = None
    # A MERGE that only inserted rows: it fires only routines that opted in (merge_inserts).
    inserted_by_merge: bool = False

    @model_validator(mode="after")
    def _range_not_empty(self) -> DatasetAppended:
        if self.from_version >= self.to_version:
            raise ValueError(
                f"from_version {self.from_version} must be below to_version {self.to_version}: "
                "the range (from_version, to_version] holds the appended versions"
            )
        return self

    def message_id(self) -> str:
        """Deduplicates one announced version range (of one table, when it is known)."""
        table = f"@{self.table_id}" if self.table_id else ""
        return f"dataset:{self.dataset}{table}:{self.from_version}:{self.to_version}"


class DatasetVersionsUnreadable(Message):
    """Versions (from_version, to_version] of a dataset could not be read and are skipped.

    Parked on the dead-letter subject of `dataset.appended`, so an operator sees why their
    rows never fired while later versions keep flowing.
    """

    dataset: str = Field(min_length=1)
    from_version: int = Field(ge=-1)
    to_version: int = Field(ge=0)
    reason: str

    def message_id(self) -> str:
        """Reports one skipped range once, across restarts."""
        return f"dataset-unreadable:{self.dataset}:{self.from_version}:{self.to_version}"


class RunOptions(Message):
    """How one run executes, as its caller asks; None leaves a setting to the routine."""

    # Bytes the run's processes may grow by (None: the routine's `memory`; 0: no limit).
    memory_limit: int | None = None
    # None: the routine's own `isolation`.
    isolation: Isolation | None = None
    # in_memory: the dispatcher numbers and requests the run on run.in_memory, and the
    # caller executes it in its own process instead of a runner.
    execution: ExecutionType = "background"
    # What each saved artifact keeps besides its data (column statistics, a preview of its
    # first rows), and whether the data is stored at all.
    statistics: bool = False
    previews: bool = False
    store_artifacts: bool = True
    # None: the routine's own `priority`.
    priority: Priority | None = None


class ResolvedRunOptions(RunOptions):
    """A run's options with its routine's settings applied: what the runner enforces."""

    isolation: Isolation = "worker"
    priority: Priority = "normal"
    # The routine's own: a caller cannot change them per run.
    timeout_s: float | None = None
    retries: int = 0
    retry_backoff_s: float = 1.0
    max_concurrent: int | None = None


class SubmitRun(Message):
    """Ask the dispatcher to start a routine now (CLI, SDK or API)."""

    request_id: RunId
    routine: RoutineName
    inputs: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    started_by: str | None = None
    source: Literal["manual", "api"] = "manual"
    options: RunOptions = Field(default_factory=RunOptions)
    submitted_at: AwareDatetime | None = None
    # The event a manual run gets is its trigger's; these narrow it (None: the default).
    # Dataset routines: the version range (default: the rows since the cursor, which stays).
    from_version: int | None = Field(default=None, ge=-1)
    to_version: int | None = Field(default=None, ge=0)
    # Completion routines: the upstream run (default: the latest matching one).
    upstream_run_id: str | None = None
    # Poll routines: what the poll function would have returned (default: empty).
    payload: dict[str, Any] | None = None
    # A rerun replays the original run's event as it was; trigger_kind and event come together.
    rerun_of: str | None = None
    trigger_kind: TriggerKind | None = None
    event: dict[str, Any] | None = None
    # The registry revision of the submitter's own last write to the registry: the
    # dispatcher answers from its in-memory copy only once that copy has seen it, so a
    # routine created (or changed) a moment before by the same client is never missed.
    registry_revision: int = Field(default=0, ge=0)

    invocation: InvocationType = "direct"
    # The routine method to execute: run() unless another declared method is named.
    method: str = Field(default="run", min_length=1)

    @model_validator(mode="after")
    def _event_with_its_kind(self) -> SubmitRun:
        if (self.trigger_kind is None) != (self.event is None):
            raise ValueError("trigger_kind and event are given together or not at all")
        return self


class RequestRun(Message):
    """A run the dispatcher decided on; one runner replica executes it."""

    run_id: RunId
    routine: RoutineName
    routine_version: str
    entrypoint: str
    run_number: int
    source: RunSource
    trigger_kind: TriggerKind
    event: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    started_by: str | None = None
    hop: int = 0
    parent_run_id: str | None = None
    options: ResolvedRunOptions = Field(default_factory=ResolvedRunOptions)
    requested_at: AwareDatetime
    chain: list[str] = Field(default_factory=list)
    trace_id: str | None = None
    submitted_at: AwareDatetime | None = None
    # The run this one repeats (`runs rerun`), if any.
    rerun_of: str | None = None
    invocation: InvocationType = "direct"
    # The method executed, the blueprint (routine) the instance `routine` configures ("":
    # the same name), and the instance's configuration at the time of the request.
    method: str = "run"
    blueprint: str = ""
    configuration: dict[str, Any] = Field(default_factory=dict)
    # "dag": the entrypoint names a module's Namespace and the routine is a DAG's nsref.
    kind: DefinitionKind = "routine"

    def message_id(self) -> str:
        """One request per run id, however often the dispatcher retries."""
        return f"run:{self.run_id}"

    def carried_forward(self) -> dict[str, Any]:
        """What the run's RunCompleted carries back to the dispatcher besides hop and parent."""
        return {"chain": self.chain, "source": self.source}


class RunStarted(Message):
    """A runner began executing a run."""

    run_id: RunId
    routine: RoutineName
    runner: str
    attempt: int = 1
    started_at: AwareDatetime
    isolation: Isolation | None = None
    # The run's folder in the artifact store (`runs/<id>/`): its artifacts and its log go there.
    artifact_location: str | None = None


class RunQueued(Message):
    """A runner holds a run back (concurrency limit, memory, retry backoff) and says why."""

    run_id: RunId
    routine: RoutineName
    reason: str
    at: AwareDatetime


class RunHeartbeat(Message):
    """A runner still holds a run (core NATS, not stored: only the latest one matters)."""

    run_id: RunId
    runner: str
    at: AwareDatetime


class RunProgressed(Message):
    """A running routine reported progress."""

    run_id: RunId
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = ""
    at: AwareDatetime


class ArtifactRef(Message):
    """Where a saved artifact lives and what it holds."""

    name: str
    uri: str
    kind: Literal["table", "file"]
    rows: int | None = None
    size_bytes: int | None = None


class RunResources(Message):
    """What a run's execution used: peak resident memory of its process tree, CPU and wall time."""

    peak_memory_bytes: int | None = Field(default=None, ge=0)
    cpu_seconds: float | None = Field(default=None, ge=0)
    wall_seconds: float | None = Field(default=None, ge=0)


class RunLogged(Message):
    """A piece of a running run's output, stdout and stderr as written (core NATS, not
    stored: the log file is)."""

    run_id: RunId
    text: str
    # Where this piece starts in the run's log file, so a follower can tell what it missed.
    offset: int = Field(ge=0)


NodeStatus = Literal["pending", "running", "completed", "failed", "skipped"]
# How a node's output was kept for restarts: inline JSON, a pickled file in the run's folder
# of the artifact store, or not at all (`output_note` says why).
OutputKept = Literal["json", "artifact", "none"]


class DagNodeRecord(Message):
    """One node of a DAG run: status, times, inputs, output (or where it is kept), error."""

    label: str
    nsref: str | None = None
    status: NodeStatus = "pending"
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    # Each input as JSON when it is small JSON, else a short repr.
    inputs: dict[str, Any] = Field(default_factory=dict)
    output: Any = None
    output_kept: OutputKept | None = None
    output_uri: str | None = None
    output_preview: str | None = None
    output_note: str | None = None
    error: str | None = None
    traceback: str | None = None


class DagRecord(Message):
    """A DAG run's provenance: payload, sink outputs, status, the node table and the edges."""

    nsref: str
    status: Literal["running", "completed", "failed"]
    failed_node: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    nodes: list[DagNodeRecord] = Field(default_factory=list)
    edges: list[tuple[str, str]] = Field(default_factory=list)
    # A restart or replay names the run whose outputs it reused.
    mode: Literal["run", "restart", "replay"] = "run"
    resumed_from: str | None = None

    def node(self, label: str) -> DagNodeRecord | None:
        """The record of one node by label."""
        return next((n for n in self.nodes if n.label == label), None)


class RunCompleted(Message):
    """A run reached a terminal status (published by runners, the dispatcher or external systems)."""

    run_id: RunId = Field(min_length=1)
    routine: RoutineName = Field(min_length=1)
    run_number: int = 0
    status: TerminalStatus
    outputs: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    hop: int = 0
    parent_run_id: str | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime = Field(default_factory=_utcnow)
    chain: list[str] = Field(default_factory=list)
    phase: RunPhase = "run"
    source: RunSource | None = None
    isolation: Isolation | None = None
    resources: RunResources | None = None
    # The run's stdout and stderr, kept as one file in the artifact store.
    log_uri: str | None = None
    # What run.started says, for a run that ended before its start was announced.
    runner: str | None = None
    attempt: int | None = None
    artifact_location: str | None = None
    # A DAG run's node table and edges (None: a routine's run).
    dag: DagRecord | None = None

    def message_id(self) -> str:
        """A run completes once."""
        return f"completed:{self.run_id}"

    def subject(self) -> str:
        """The subject a routine's run completion is published on."""
        return subjects.run_completed_subject(self.routine, self.status)


class CancelRun(Message):
    """Ask whoever holds a run to stop it."""

    run_id: RunId
    requested_by: str | None = None


class DeleteRuns(Message):
    """Ask the recorder to delete finished runs: their rows, progress, logs and artifacts.

    Either run ids, or a routine narrowed by status and creation time. A run that has not
    ended is never deleted: the reply names it instead.
    """

    run_ids: list[str] = Field(default_factory=list)
    routine: str | None = None
    status: TerminalStatus | None = None
    # Runs created before this time.
    before: AwareDatetime | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def _ids_or_routine(self) -> DeleteRuns:
        if bool(self.run_ids) == bool(self.routine):
            raise ValueError(
                "name the runs to delete by id, or by routine (with status and before): "
                "one of the two"
            )
        if self.run_ids and (self.status or self.before):
            raise ValueError("status and before narrow a routine's runs: give them with routine")
        return self


class TriggerRecorded(Message):
    """A trigger of a routine fired, was skipped, failed or was blocked (trigger history)."""

    routine: RoutineName
    kind: TriggerKind
    status: FiringStatus
    event_key: str
    fired_at: AwareDatetime
    scheduled_at: datetime | None = None
    run_id: str | None = None
    reason: str | None = None
    chain: list[str] = Field(default_factory=list)
    # The named trigger that fired (None: the routine's own trigger) and the payload it gave.
    trigger: str | None = None
    payload: dict[str, Any] | None = None

    def message_id(self) -> str:
        """One history row per routine and trigger event."""
        return f"trigger:{self.routine}:{self.event_key}:{self.status}"


AuditAction = Literal[
    "routine.enable",
    "routine.disable",
    "routine.delete",
    "instance.configure",
    "run.cancel",
    "run.rerun",
    "run.restart",
    "run.replay",
    "runs.delete",
    "trigger.activate",
    "trigger.deactivate",
    "trigger.delete",
]
AuditTargetKind = Literal["routine", "instance", "run", "runs", "trigger"]
# Run ids one audit entry lists at most: the message must stay far below the max payload.
AUDIT_RUN_IDS = 100


class AuditRecorded(Message):
    """Someone did something to a routine, run or trigger: who, what, to what, when, why.

    Published by the client after the action took effect; the recorder keeps it in its
    audit table, one row per entry id however often it is delivered.
    """

    entry_id: str = Field(min_length=1, max_length=64)
    who: str = Field(max_length=256)
    action: AuditAction
    target_kind: AuditTargetKind
    target: str = Field(max_length=2048)
    # The routine (instance) it concerns, for `mainspring audit --routine`; a run's routine
    # is filled in by the recorder from the run history when the client did not know it.
    routine: str | None = Field(default=None, max_length=1024)
    run_id: str | None = Field(default=None, max_length=1024)
    reason: str | None = Field(default=None, max_length=4096)
    details: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime

    def message_id(self) -> str:
        """One entry per action, however often the client sends it."""
        return f"audit:{self.entry_id}"


class PollRequested(Message):
    """A poll trigger ticked: a runner must call the routine's poll function."""

    routine: RoutineName
    routine_version: str
    fn: str
    scheduled_at: AwareDatetime
    timeout_s: float = Field(default=60.0, gt=0)
    # A named trigger's poll (its target is `routine`); None: the routine's own trigger.
    trigger: str | None = None

    def message_id(self) -> str:
        """One poll per routine (or named trigger) and nominal tick."""
        if self.trigger is not None:
            return f"poll:trigger:{self.trigger}:{self.scheduled_at.isoformat()}"
        return f"poll:{self.routine}:{self.scheduled_at.isoformat()}"


class PollCompleted(Message):
    """A poll function returned a payload (fire), None (skip), or failed (error)."""

    routine: RoutineName
    scheduled_at: AwareDatetime
    payload: dict[str, Any] | None = None
    error: str | None = None
    finished_at: AwareDatetime
    trigger: str | None = None

    def message_id(self) -> str:
        """One result per routine (or named trigger) and nominal tick."""
        if self.trigger is not None:
            return f"polled:trigger:{self.trigger}:{self.scheduled_at.isoformat()}"
        return f"polled:{self.routine}:{self.scheduled_at.isoformat()}"


class FireTrigger(Message):
    """Fire a named trigger now (a push trigger's only way to fire); the dispatcher decides."""

    request_id: str = Field(min_length=1)
    trigger: str = Field(min_length=1)
    # None: the trigger's default payload.
    payload: dict[str, Any] | None = None
    requested_by: str | None = None
    requested_at: AwareDatetime

    def message_id(self) -> str:
        """One firing per request, however often it is sent."""
        return f"fire:{self.request_id}"
