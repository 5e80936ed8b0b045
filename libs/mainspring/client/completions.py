"""Following finished runs from outside: the pure parts of `Client.completions` and `runs follow`.

A follower is a JetStream pull consumer on `run.completed.<routine>.<status>`, filtered by
the server. A durable one is named `follow-<name>`: the `client` and `subscriber` users may
create consumers of any name but a service's durable (mainspring.contract.permissions), and
the prefix keeps followers apart from the services' own consumers (a follower called
`runner` must never bind the runners' work queue). NATS permissions match whole subject
tokens, so a prefix inside the consumer-name token cannot be granted on its own. The server deletes a durable follower after `inactive_threshold`
without a pull, so an abandoned one does not hold a consumer forever.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mainspring.base.kv import key_token
from mainspring.contract import subjects
from mainspring.contract.messages import TERMINAL_STATUSES, RunCompleted

# The stream keeps every message this long (`max_age` of the MAINSPRING stream): the
# furthest back `since=` can replay, and how long a durable follower may be offline at most.
STREAM_RETENTION = timedelta(days=14)
FOLLOWER_PREFIX = "follow-"
# A durable follower nobody pulled from for this long is deleted by the server.
DEFAULT_INACTIVE_THRESHOLD = timedelta(days=1)
EPHEMERAL_IDLE_S = 300.0
# How long the server waits for an event's ack before it delivers the event again.
ACK_WAIT = timedelta(seconds=60)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class FollowError(ValueError):
    """A follower asked for something the bus cannot give (bad name, time out of retention)."""


def completion_filter(routine: str | None = None, status: str | None = None) -> str:
    """The subject filter for completions of one routine and/or status (None: any)."""
    if status is not None and status not in TERMINAL_STATUSES:
        raise FollowError(f"status {status!r}: use one of {', '.join(sorted(TERMINAL_STATUSES))}")
    routine_token = "*" if routine is None else key_token(routine)
    return f"{subjects.RUN_COMPLETED}.{routine_token}.{status or '*'}"


def follower_name(durable: str) -> str:
    """The consumer name of a durable follower, under the prefix subscribers are granted."""
    if not _NAME.match(durable):
        raise FollowError(
            f"durable name {durable!r}: use letters, digits, '-' and '_' only "
            "(it names a JetStream consumer)"
        )
    return durable if durable.startswith(FOLLOWER_PREFIX) else f"{FOLLOWER_PREFIX}{durable}"


def check_since(since: datetime, now: datetime) -> datetime:
    """A replay start inside the stream's retention; an aware time (naive means local)."""
    start = since if since.tzinfo else since.astimezone()
    if start < now - STREAM_RETENTION:
        raise FollowError(
            f"since {start.isoformat()} is older than the stream keeps completions "
            f"({STREAM_RETENTION.days} days): give a later time"
        )
    return start


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an ISO time (naive means local) or a duration back from now (`90m`, `2d`)."""
    from mainspring.base.schedules import ScheduleError, parse_every

    try:
        return check_since(datetime.fromisoformat(text), now)
    except ValueError as exc:
        if isinstance(exc, FollowError):
            raise
    try:
        return check_since(now - parse_every(text), now)
    except ScheduleError:
        raise FollowError(
            f"since {text!r}: give an ISO time (2026-11-01T09:00) or a duration ago (90m, 2d)"
        ) from None


def follower_config(
    filter_subject: str,
    name: str | None,
    since: datetime | None,
    inactive_threshold: timedelta = DEFAULT_INACTIVE_THRESHOLD,
) -> ConsumerConfig:
    """The consumer a follower creates: new completions only, or from `since` on."""
    return ConsumerConfig(
        name=name,
        durable_name=name,
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.NEW if since is None else DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT.total_seconds(),
        # A durable waits this long for its follower to come back. An ephemeral one goes
        # soon after its follower stops pulling, yet outlives a slow loop body between pulls.
        inactive_threshold=inactive_threshold.total_seconds() if name else EPHEMERAL_IDLE_S,
    )


def resume_mismatch(name: str, existing_filter: str | None, wanted_filter: str) -> str | None:
    """Why an existing durable follower cannot serve this request (None: it can resume)."""
    if (existing_filter or "") == wanted_filter:
        return None
    return (
        f"durable follower {name!r} follows {existing_filter!r}, not {wanted_filter!r}: "
        "use another --durable name for another selection"
    )


def completion_line(event: RunCompleted) -> str:
    """One line per finished run, for shell pipelines (`runs follow` without --json)."""
    took = ""
    if event.started_at is not None:
        took = f" {(event.finished_at - event.started_at).total_seconds():.1f}s"
    error = f" error: {event.error.splitlines()[0]}" if event.error else ""
    return (
        f"{event.finished_at.isoformat(timespec='seconds')} {event.routine} "
        f"#{event.run_number} {event.status} {event.run_id}{took}{error}"
    )
