"""Who may publish and subscribe to what on the bus: the NATS users, in one table.

`deploy/nats/permissions.conf` is generated from this table (`just docs`; a unit test fails
when it is stale) and `mainspring up` writes the same text beside its nats-server, so a
deployment and a machine running `up` enforce the same rules.

Each service gets exactly the JetStream API calls it makes, per stream and per consumer:
read calls on the buckets it reads, its own durable consumers on the stream, and never a
stream create, update, delete or purge (only `admin`, used by `mainspring setup`, has those).
NATS permissions match whole subject tokens, so a consumer-name prefix such as `follow-`
cannot be granted on its own: consumers of any name are allowed to the client and the
subscriber, and the services' own durables are denied to them by name, so nobody outside a
service can pull, ack or redefine its work queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mainspring.contract import subjects

API = "$JS.API"
BUNDLES_STREAM = f"OBJ_{subjects.BUNDLES_BUCKET}"

# Every durable consumer a service declares on the stream, by service.
DURABLES: dict[str, tuple[str, ...]] = {
    "dispatcher": (
        subjects.DISPATCHER_SUBMITTED_CONSUMER,
        "dispatcher-schedule",
        "dispatcher-completed",
        "dispatcher-external-completed",
        "dispatcher-in-memory",
        "dispatcher-cancel",
        "dispatcher-trigger-failures",
        "dispatcher-dataset",
        "dispatcher-poll",
        "dispatcher-trigger-fire",
    ),
    "runner": (
        subjects.RUNNER_HIGH_CONSUMER,
        subjects.RUNNER_CONSUMER,
        subjects.RUNNER_LOW_CONSUMER,
        subjects.RUNNER_POLL_CONSUMER,
    ),
    "recorder": (
        subjects.RECORDER_RUNS_CONSUMER,
        "recorder-triggers",
        "recorder-external",
        subjects.RECORDER_AUDIT_CONSUMER,
        subjects.RECORDER_PROGRESS_CONSUMER,
    ),
}
SERVICE_DURABLES = tuple(name for names in DURABLES.values() for name in names)
# The durables on a stream other than the main one.
DURABLE_STREAMS: dict[str, str] = {subjects.RECORDER_PROGRESS_CONSUMER: subjects.PROGRESS_STREAM}


def durable_stream(durable: str) -> str:
    """The stream a service's durable consumer reads."""
    return DURABLE_STREAMS.get(durable, subjects.STREAM)


ALL_BUCKETS = (
    subjects.ROUTINES_BUCKET,
    subjects.DISPATCH_BUCKET,
    subjects.TICKER_BUCKET,
    subjects.WATCHER_BUCKET,
    subjects.STATE_BUCKET,
    subjects.LEDGER_BUCKET,
    subjects.LEASES_BUCKET,
    subjects.TRIGGERS_BUCKET,
    subjects.BLUEPRINTS_BUCKET,
    subjects.RUNNERS_BUCKET,
)


@dataclass(frozen=True)
class User:
    """One NATS user: what it may publish and subscribe to, and why it exists."""

    name: str
    why: tuple[str, ...]
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    # Services answer the NATS service protocol ($SRV.PING/INFO/STATS) on inbox subjects.
    allow_responses: bool = False
    # The admin user has no permissions block: everything, including stream management.
    unrestricted: bool = False

    def may_publish(self, subject: str) -> bool:
        """Would nats-server let this user publish on `subject` (deny wins over allow)?"""
        if self.unrestricted:
            return True
        allowed = any(subject_matches(pattern, subject) for pattern in self.publish)
        return allowed and not any(subject_matches(p, subject) for p in self.publish_deny)

    def password_variable(self) -> str:
        """The environment variable nats-server reads this user's password from."""
        return f"MAINSPRING_{self.name.upper()}_PASSWORD"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one whole token, a final `>` one or more."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(wanted) == len(given)


def user(name: str) -> User:
    """The user called `name`."""
    for candidate in USERS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no NATS user {name!r}: the users are {', '.join(USER_NAMES)}")


def stream_checks() -> tuple[str, ...]:
    """Read-only calls every service makes at start to check the stream and buckets."""
    return (f"{API}.INFO", f"{API}.STREAM.INFO.*", f"{API}.STREAM.NAMES")


def bucket_reads(*buckets: str) -> tuple[str, ...]:
    """Reading keys (get) and watching a KV bucket (an ordered ephemeral consumer)."""
    calls: list[str] = []
    for bucket in buckets:
        stream = f"KV_{bucket}"
        calls += [
            f"{API}.STREAM.MSG.GET.{stream}",
            f"{API}.CONSUMER.CREATE.{stream}",
            f"{API}.CONSUMER.CREATE.{stream}.>",
            f"{API}.CONSUMER.INFO.{stream}.*",
        ]
    return tuple(calls)


def bucket_writes(*buckets: str) -> tuple[str, ...]:
    """Putting, updating and deleting keys of a KV bucket (publishes on its subjects)."""
    return tuple(f"$KV.{bucket}.>" for bucket in buckets)


def bundle_reads() -> tuple[str, ...]:
    """Fetching a code bundle from the object store."""
    return (
        f"{API}.STREAM.MSG.GET.{BUNDLES_STREAM}",
        f"{API}.CONSUMER.CREATE.{BUNDLES_STREAM}",
        f"{API}.CONSUMER.CREATE.{BUNDLES_STREAM}.>",
        f"{API}.CONSUMER.INFO.{BUNDLES_STREAM}.*",
    )


def own_durables(service: str) -> tuple[str, ...]:
    """Declaring-checking, pulling from and acking the service's own durable consumers."""
    calls: list[str] = []
    for durable in DURABLES[service]:
        stream = durable_stream(durable)
        calls += [
            f"{API}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{API}.CONSUMER.INFO.{stream}.{durable}",
            f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return tuple(calls)


def foreign_durables() -> tuple[str, ...]:
    """What nobody but the owning service may do to its durables (denied to outsiders)."""
    calls: list[str] = []
    for durable in SERVICE_DURABLES:
        stream = durable_stream(durable)
        calls += [
            f"{API}.CONSUMER.CREATE.{stream}.{durable}",
            f"{API}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"{API}.CONSUMER.DELETE.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return tuple(calls)


def service(
    name: str, why: tuple[str, ...], publish: tuple[str, ...], subscribe: tuple[str, ...] = ()
) -> User:
    """A service user: start checks, flow control, dead letters and the service protocol."""
    return User(
        name=name,
        why=why,
        publish=(*stream_checks(), "$JS.FC.>", f"{subjects.DEAD_LETTER_PREFIX}.>", *publish),
        subscribe=("_INBOX.>", "$SRV.>", *subscribe),
        allow_responses=True,
    )


USERS: tuple[User, ...] = (
    User(
        name="admin",
        why=(
            "`mainspring setup` only: it declares the stream, buckets and bundle store. No",
            "service runs as admin; it alone may create, update, delete or purge a stream.",
        ),
        unrestricted=True,
    ),
    service(
        "ticker",
        ("Fires schedules and named triggers' ticks; watches the registry and the triggers.",),
        publish=(
            subjects.SCHEDULE_FIRED,
            *bucket_reads(
                subjects.ROUTINES_BUCKET, subjects.TICKER_BUCKET, subjects.TRIGGERS_BUCKET
            ),
            *bucket_writes(subjects.TICKER_BUCKET),
        ),
    ),
    service(
        "dataset_watcher",
        ("Publishes the appends it finds in dataset commit logs.",),
        publish=(
            subjects.DATASET_APPENDED,
            *bucket_reads(subjects.ROUTINES_BUCKET, subjects.WATCHER_BUCKET),
            *bucket_writes(subjects.WATCHER_BUCKET),
        ),
    ),
    service(
        "dispatcher",
        (
            "The only publisher of run.requested (and .high, .low); the single writer of",
            "cursors and run numbers, and of the cancel marks it turns run.cancel commands into.",
        ),
        publish=(
            *subjects.RUN_REQUESTED_SUBJECTS,
            subjects.RUN_IN_MEMORY,
            # Runs held for a free slot (max_concurrent), with why they wait; read back by
            # sequence when a slot frees (the stream read below).
            subjects.RUN_HELD_ANY,
            subjects.RUN_QUEUED,
            subjects.RUN_COMPLETED_ANY,
            subjects.RUN_CANCEL,
            subjects.POLL_REQUESTED,
            subjects.TRIGGER_RECORDED,
            # Routines it switches off itself (crash loop, circuit breaker), in the audit trail.
            subjects.AUDIT_RECORDED,
            "api.>",
            *own_durables("dispatcher"),
            # A trigger redelivered past the duplicate window reads the requests stored after
            # it; a freed slot reads the oldest held request.
            f"{API}.STREAM.MSG.GET.{subjects.STREAM}",
            *bucket_reads(
                subjects.ROUTINES_BUCKET,
                subjects.DISPATCH_BUCKET,
                subjects.LEDGER_BUCKET,
                subjects.TRIGGERS_BUCKET,
                # The live runners' memory, to refuse a run no runner can hold (a watch).
                subjects.RUNNERS_BUCKET,
            ),
            # Named triggers: their last run, and switching them off with their routine.
            *bucket_writes(
                subjects.DISPATCH_BUCKET,
                subjects.ROUTINES_BUCKET,
                subjects.LEDGER_BUCKET,
                subjects.TRIGGERS_BUCKET,
            ),
        ),
    ),
    service(
        "runner",
        ("Runs routines; streams their output live on log.run.<id>.",),
        publish=(
            subjects.RUN_STARTED,
            subjects.RUN_PROGRESS,
            subjects.RUN_COMPLETED_ANY,
            subjects.RUN_QUEUED,
            subjects.RUN_HEARTBEAT,
            subjects.RUN_LOG_ANY,
            subjects.POLL_COMPLETED,
            subjects.DATASET_APPENDED,
            *own_durables("runner"),
            # The run queue's oldest waiting request, for the queue-age metric.
            f"{API}.STREAM.MSG.GET.{subjects.STREAM}",
            *bucket_reads(
                subjects.ROUTINES_BUCKET,
                subjects.DISPATCH_BUCKET,
                subjects.STATE_BUCKET,
                subjects.LEDGER_BUCKET,
                subjects.LEASES_BUCKET,
                subjects.RUNNERS_BUCKET,
            ),
            *bucket_writes(
                subjects.DISPATCH_BUCKET,
                subjects.STATE_BUCKET,
                subjects.LEDGER_BUCKET,
                subjects.LEASES_BUCKET,
                # Its own capacity entry, every heartbeat.
                subjects.RUNNERS_BUCKET,
            ),
            *bundle_reads(),
        ),
        subscribe=(subjects.RUN_CANCEL,),
    ),
    service(
        "recorder",
        ("Keeps the run history and answers api.runs.*; fails runs whose runners are gone.",),
        publish=(
            subjects.RUN_COMPLETED_ANY,
            *own_durables("recorder"),
            *bucket_reads(subjects.ROUTINES_BUCKET, subjects.LEDGER_BUCKET),
            *bucket_writes(subjects.LEDGER_BUCKET),
        ),
        subscribe=("api.>", subjects.RUN_HEARTBEAT),
    ),
    User(
        name="client",
        why=(
            "People and their tools (CLI, SDK, web service and its HTTP ingress): register",
            "routines, ask for runs, follow completions, publish external events, and",
            "record on audit.recorded who enabled, disabled, deleted, cancelled or re-ran what.",
            "Cancelling is the run.cancel command: the run ledger is written by services only.",
            "A run's outcome is published by services only: the caller of an in-memory run",
            "reports it on run.in_memory_reported and the dispatcher settles and publishes it.",
            "Dataset cursors are the dispatcher's ($KV.dispatch.> is read, never written).",
            "It may create consumers of any name (followers are follow-<name>), never one",
            "of a service's durables; it deletes single dead letters and purges bundles",
            "unused for a grace, never the stream.",
        ),
        publish=(
            *stream_checks(),
            "$JS.FC.>",
            subjects.RUN_SUBMITTED,
            subjects.TRIGGER_FIRE,
            subjects.RUN_CANCEL,
            subjects.RUN_IN_MEMORY_REPORTED,
            subjects.RUN_STARTED,
            subjects.RUN_PROGRESS,
            subjects.RUN_HEARTBEAT,
            subjects.DATASET_APPENDED,
            subjects.EXTERNAL_COMPLETED_ANY,
            subjects.AUDIT_RECORDED,
            "api.>",
            f"{API}.CONSUMER.CREATE.{subjects.STREAM}",
            f"{API}.CONSUMER.CREATE.{subjects.STREAM}.>",
            f"{API}.CONSUMER.DURABLE.CREATE.{subjects.STREAM}.*",
            f"{API}.CONSUMER.INFO.{subjects.STREAM}.*",
            f"{API}.CONSUMER.MSG.NEXT.{subjects.STREAM}.*",
            f"{API}.CONSUMER.DELETE.{subjects.STREAM}.*",
            f"$JS.ACK.{subjects.STREAM}.>",
            f"{API}.STREAM.MSG.GET.{subjects.STREAM}",
            f"{API}.STREAM.MSG.DELETE.{subjects.STREAM}",
            *bucket_reads(*ALL_BUCKETS),
            *bucket_writes(
                subjects.ROUTINES_BUCKET,
                subjects.STATE_BUCKET,
                subjects.TRIGGERS_BUCKET,
                subjects.BLUEPRINTS_BUCKET,
            ),
            *bundle_reads(),
            f"$O.{subjects.BUNDLES_BUCKET}.>",
            f"{API}.STREAM.PURGE.{BUNDLES_STREAM}",
        ),
        publish_deny=foreign_durables(),
        subscribe=(
            "_INBOX.>",
            "run.>",
            subjects.RUN_LOG_ANY,
            f"{subjects.DEAD_LETTER_PREFIX}.>",
        ),
    ),
    User(
        name="external",
        why=(
            "Systems outside Mainspring: report their workflows' completions",
            "(external.completed.<workflow>.<status>) and dataset appends, nothing else;",
            "never a routine's run.completed.",
        ),
        publish=(subjects.EXTERNAL_COMPLETED_ANY, subjects.DATASET_APPENDED),
        subscribe=("_INBOX.>",),
    ),
    User(
        name="subscriber",
        why=(
            "Read-only followers of run completions: pull consumers (follow-<name> when",
            "durable) filtered on run.completed.<routine>.<status>. It publishes nothing",
            "but the calls that create, read and ack such a consumer.",
        ),
        publish=(
            f"{API}.INFO",
            f"{API}.STREAM.INFO.{subjects.STREAM}",
            f"{API}.CONSUMER.CREATE.{subjects.STREAM}.*.{subjects.RUN_COMPLETED_ANY}",
            f"{API}.CONSUMER.INFO.{subjects.STREAM}.*",
            f"{API}.CONSUMER.MSG.NEXT.{subjects.STREAM}.*",
            f"$JS.ACK.{subjects.STREAM}.>",
        ),
        publish_deny=foreign_durables(),
        subscribe=("_INBOX.>", subjects.RUN_COMPLETED_ANY),
    ),
)

SERVICE_USERS = ("ticker", "dataset_watcher", "dispatcher", "runner", "recorder")
USER_NAMES = tuple(user.name for user in USERS)


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def _user_block(user: User) -> list[str]:
    lines = ["    {"]
    lines += [f"      # {line}" for line in user.why]
    lines.append(f"      user: {user.name}, password: ${user.password_variable()}")
    if not user.unrestricted:
        lines.append("      permissions: {")
        publish = f"allow: {_list(user.publish)}"
        if user.publish_deny:
            publish += f", deny: {_list(user.publish_deny)}"
        lines.append(f"        publish: {{ {publish} }}")
        lines.append(f"        subscribe: {{ allow: {_list(user.subscribe)} }}")
        if user.allow_responses:
            lines.append("        allow_responses: true")
        lines.append("      }")
    lines.append("    }")
    return lines


def rendered(users: tuple[User, ...] = USERS) -> str:
    """The nats-server `authorization` block for `users`, passwords read from the environment."""
    lines = [
        "# Generated from mainspring.contract.permissions by `just docs`: edit the table there.",
        "# One NATS user per service with exactly the subjects and JetStream API calls it uses.",
        "# Passwords come from the environment of nats-server (MAINSPRING_<USER>_PASSWORD, see",
        "# deploy/README.md); `mainspring up` generates them into its home and includes this",
        "# same text.",
        "",
        "authorization {",
        "  users: [",
    ]
    for user in users:
        lines += _user_block(user)
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(rendered(), end="")
