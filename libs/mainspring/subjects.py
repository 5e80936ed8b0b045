"""Subject, stream, bucket and consumer names: the bus contract in one place."""

STREAM = "MAINSPRING"

DATASET_APPENDED = "dataset.appended"
SCHEDULE_FIRED = "schedule.fired"
RUN_SUBMITTED = "run.submitted"
RUN_REQUESTED = "run.requested"
RUN_STARTED = "run.started"
RUN_PROGRESS = "run.progress"
RUN_COMPLETED = "run.completed"
RUN_CANCEL = "run.cancel"
RUN_QUEUED = "run.queued"
# Outside the stream's `run.>` on purpose: heartbeats are core NATS, never stored.
RUN_HEARTBEAT = "heartbeat.run"
# In-memory runs execute in the caller's process: recorded like run.requested, never executed by runners.
RUN_IN_MEMORY = "run.in_memory"
# The caller's report of how an in-memory run ended; the dispatcher settles and publishes it.
RUN_IN_MEMORY_REPORTED = "run.in_memory_reported"
TRIGGER_RECORDED = "trigger.recorded"
POLL_REQUESTED = "poll.requested"
POLL_COMPLETED = "poll.completed"
DEAD_LETTER_PREFIX = "deadletter"

STREAM_SUBJECTS = [
    DATASET_APPENDED,
    SCHEDULE_FIRED,
    "run.>",
    TRIGGER_RECORDED,
    f"{DEAD_LETTER_PREFIX}.>",
    "poll.>",
]

# Request/reply subjects answered by the recorder (core NATS, not stored).
API_RUNS_LIST = "api.runs.list"
API_RUNS_GET = "api.runs.get"
API_TRIGGER_EVENTS = "api.trigger.events"

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

# Durable consumer names: one per service role, shared by its replicas.
RUNNER_CONSUMER = "runner"
RECORDER_CONSUMER = "recorder"
RUNNER_POLL_CONSUMER = "runner-poll"
# Read by the client to say which service holds up a submitted run's decision.
DISPATCHER_SUBMITTED_CONSUMER = "dispatcher-submitted"
RECORDER_RUNS_CONSUMER = "recorder-runs"


def dead_letter_subject(subject: str) -> str:
    """Where a message that failed validation on `subject` is parked."""
    return f"{DEAD_LETTER_PREFIX}.{subject}"
