"""Subject, stream, bucket and consumer names: the bus contract in one place."""

from mainspring.base.kv import key_token

STREAM = "MAINSPRING"
# Run progress lives in its own stream, kept briefly: thousands of reports a run are worth an
# hour (long enough for the recorder to catch up after a short outage), not the main stream's
# 14 days. Two streams may not share a subject, so MAINSPRING lists its run subjects one by one.
PROGRESS_STREAM = "MAINSPRING_PROGRESS"

DATASET_APPENDED = "dataset.appended"
SCHEDULE_FIRED = "schedule.fired"
RUN_SUBMITTED = "run.submitted"
# The runners' work queue, one subject per priority: a normal run on `run.requested`, a high
# one on `run.requested.high`, a low one on `run.requested.low`.
RUN_REQUESTED = "run.requested"
RUN_REQUESTED_HIGH = f"{RUN_REQUESTED}.high"
RUN_REQUESTED_LOW = f"{RUN_REQUESTED}.low"
RUN_STARTED = "run.started"
RUN_PROGRESS = "run.progress"
# Completions: `run.completed.<routine>.<status>`, so subscribers filter on the server.
RUN_COMPLETED = "run.completed"
RUN_COMPLETED_ANY = f"{RUN_COMPLETED}.>"
# Completions of workflows outside Mainspring live on their own root, so whoever may report an
# external workflow cannot forge a routine's completion: `external.completed.<workflow>.<status>`.
EXTERNAL_COMPLETED = "external.completed"
EXTERNAL_COMPLETED_ANY = f"{EXTERNAL_COMPLETED}.>"
RUN_CANCEL = "run.cancel"
# Requests the dispatcher holds back for a routine's max_concurrent: `run.held.<routine>`,
# in arrival order; released onto run.requested as the routine's runs complete.
RUN_HELD = "run.held"
RUN_HELD_ANY = f"{RUN_HELD}.>"
RUN_QUEUED = "run.queued"
# Outside the stream's `run.>` on purpose: heartbeats are core NATS, never stored.
RUN_HEARTBEAT = "heartbeat.run"
# A running run's stdout and stderr, live: `log.run.<run_id>`. Core NATS and outside the
# stream's `run.>` on purpose: the log file in the artifact store is the stored copy.
RUN_LOG = "log.run"
RUN_LOG_ANY = f"{RUN_LOG}.>"
# In-memory runs execute in the caller's process: recorded like run.requested, never executed by runners.
RUN_IN_MEMORY = "run.in_memory"
# The caller's report of how an in-memory run ended; the dispatcher settles and publishes it.
RUN_IN_MEMORY_REPORTED = "run.in_memory_reported"
TRIGGER_RECORDED = "trigger.recorded"
# A request to fire a named trigger now (`mainspring trigger fire`, `client.fire_trigger`).
TRIGGER_FIRE = "trigger.fire"
POLL_REQUESTED = "poll.requested"
POLL_COMPLETED = "poll.completed"
DEAD_LETTER_PREFIX = "deadletter"
# Who enabled, disabled, deleted, cancelled or re-ran what: the client's account of each
# action, kept by the recorder in its audit table.
AUDIT_RECORDED = "audit.recorded"

# Every run subject but run.progress (in PROGRESS_STREAM); a new stored run subject is added here.
RUN_SUBJECTS = [
    RUN_SUBMITTED,
    RUN_REQUESTED,
    RUN_REQUESTED_HIGH,
    RUN_REQUESTED_LOW,
    RUN_STARTED,
    RUN_QUEUED,
    RUN_COMPLETED_ANY,
    RUN_CANCEL,
    RUN_HELD_ANY,
    RUN_IN_MEMORY,
    RUN_IN_MEMORY_REPORTED,
]
STREAM_SUBJECTS = [
    DATASET_APPENDED,
    SCHEDULE_FIRED,
    *RUN_SUBJECTS,
    EXTERNAL_COMPLETED_ANY,
    TRIGGER_RECORDED,
    TRIGGER_FIRE,
    f"{DEAD_LETTER_PREFIX}.>",
    "poll.>",
    AUDIT_RECORDED,
]
PROGRESS_STREAM_SUBJECTS = [RUN_PROGRESS]

# Request/reply subjects answered by the recorder (core NATS, not stored).
API_RUNS_LIST = "api.runs.list"
API_RUNS_GET = "api.runs.get"
API_TRIGGER_EVENTS = "api.trigger.events"
# Delete finished runs (rows, progress, logs, artifacts); the recorder owns the run history.
API_RUNS_DELETE = "api.runs.delete"
# The audit trail, newest first.
API_AUDIT_LIST = "api.audit.list"

ROUTINES_BUCKET = "routines"
BUNDLES_BUCKET = "bundles"
DISPATCH_BUCKET = "dispatch"
TICKER_BUCKET = "ticker"
WATCHER_BUCKET = "watcher"
# Per-run attempts and cancel marks shared by runners (entries expire with the stream's max age).
LEDGER_BUCKET = "run_ledger"
# Per-routine concurrency leases; entries expire (bucket TTL) unless their runner refreshes them.
LEASES_BUCKET = "leases"
# Instance state of stateful routines: key `state.<routine>`, written with compare-and-set.
STATE_BUCKET = "state"
# Routine blueprints: key `<routine>`, the versions of its code (digest, time, methods).
BLUEPRINTS_BUCKET = "blueprints"
# Named triggers: `def.<name>` (definition and activation), `last.<name>` (its latest run).
TRIGGERS_BUCKET = "triggers"
# What each live runner offers: `runner.<instance>` (slots, memory, isolation), rewritten every
# heartbeat, deleted when it drains; the bucket's TTL removes a killed runner's entry.
RUNNERS_BUCKET = "runners"

# Durable consumer names: one per service role, shared by its replicas.
RUNNER_CONSUMER = "runner"
RUNNER_HIGH_CONSUMER = "runner-high"
RUNNER_LOW_CONSUMER = "runner-low"
RECORDER_CONSUMER = "recorder"
RUNNER_POLL_CONSUMER = "runner-poll"
# Read by the client to say which service holds up a submitted run's decision.
DISPATCHER_SUBMITTED_CONSUMER = "dispatcher-submitted"
RECORDER_RUNS_CONSUMER = "recorder-runs"
RECORDER_AUDIT_CONSUMER = "recorder-audit"
# The recorder's durable on PROGRESS_STREAM.
RECORDER_PROGRESS_CONSUMER = "recorder-progress"


def stream_of(subject: str) -> str:
    """The stream a subject is stored in (a publish names it, so a misrouted one fails)."""
    return PROGRESS_STREAM if subject in PROGRESS_STREAM_SUBJECTS else STREAM


def dead_letter_subject(subject: str) -> str:
    """Where a message that failed validation on `subject` is parked."""
    return f"{DEAD_LETTER_PREFIX}.{subject}"


def run_completed_subject(routine: str, status: str) -> str:
    """Where a routine's run completion is published: one token for the routine, one for status."""
    return f"{RUN_COMPLETED}.{key_token(routine)}.{status}"


# Where each priority's requests wait, and the runners' durable consumer of them: the order a
# runner with free slots takes them in.
RUN_QUEUES: tuple[tuple[str, str, str], ...] = (
    ("high", RUN_REQUESTED_HIGH, RUNNER_HIGH_CONSUMER),
    ("normal", RUN_REQUESTED, RUNNER_CONSUMER),
    ("low", RUN_REQUESTED_LOW, RUNNER_LOW_CONSUMER),
)
RUN_REQUESTED_SUBJECTS: tuple[str, ...] = tuple(subject for _, subject, _ in RUN_QUEUES)


def run_requested_subject(priority: str) -> str:
    """Where the dispatcher requests a run of this priority (`run.requested` for normal)."""
    for name, subject, _ in RUN_QUEUES:
        if name == priority:
            return subject
    raise ValueError(f"priority {priority!r}: use high, normal or low")


def is_run_requested(subject: str) -> bool:
    """Whether a subject carries a run's request to the runners (any priority)."""
    return subject in RUN_REQUESTED_SUBJECTS


def run_held_subject(routine: str) -> str:
    """Where the dispatcher keeps a routine's requests waiting for a free slot."""
    return f"{RUN_HELD}.{key_token(routine)}"


def run_log_subject(run_id: str) -> str:
    """Where a running run's output is streamed live."""
    return f"{RUN_LOG}.{key_token(run_id)}"


def external_completed_subject(workflow: str, status: str) -> str:
    """Where a workflow outside Mainspring reports its completion."""
    return f"{EXTERNAL_COMPLETED}.{key_token(workflow)}.{status}"


def is_run_completed(subject: str) -> bool:
    """Whether a subject carries a routine's run completion."""
    return subject.startswith(f"{RUN_COMPLETED}.")
