"""Which requests a redelivered trigger may still publish: the ones not on the stream already.

A dispatcher killed after publishing a request and before its commit (cursor, overlap slot,
ack) has its trigger message redelivered, and deciding again publishes the same run ids. The
stream drops those copies only within its duplicate window; a dispatcher down for longer
would publish them again. So a redelivered trigger first looks at the requests stored after
it (`stores.StreamRequestLog`) and publishes only the others. First deliveries never look:
nothing was published for them yet.

Nor does a redelivery younger than half the window: whatever an earlier handling published
was stored after the trigger, so less than a window ago, and the stream still drops its
copies by Nats-Msg-Id (half, so a dispatcher's clock may be off the server's by up to half a
window). A dispatcher restarted quickly therefore never looks either.

Looking after the trigger is enough, and finds everything: an earlier handling published
after the trigger was stored, so its requests are stored after it, on the same stream. The
stream discards its oldest messages first, so while the trigger is there to be redelivered,
everything stored after it is there too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun

RUN_ID_PREFIX = "run:"


@dataclass(frozen=True)
class Delivery:
    """Where a trigger message is stored on the stream and how often it was delivered."""

    sequence: int
    deliveries: int
    stored_at: datetime | None = None


def requested_run_id(headers: Mapping[str, str] | None, body: bytes | None) -> str | None:
    """The run id of a stored request: its Nats-Msg-Id (`run:<id>`), else its body's run_id."""
    message_id = (headers or {}).get("Nats-Msg-Id", "")
    if message_id.startswith(RUN_ID_PREFIX):
        return message_id[len(RUN_ID_PREFIX) :]
    try:
        found = json.loads(body or b"").get("run_id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def request_subject(request: RequestRun, subject: str | None) -> str:
    """Where a request is published: `subject`, or (None) the runners' queue of its priority."""
    return subject or subjects.run_requested_subject(request.options.priority)


def by_subject(requests: list[RequestRun], subject: str | None) -> dict[str, set[str]]:
    """The run ids of a decision's requests by the subject each is published on (see
    request_subject)."""
    found: dict[str, set[str]] = {}
    for request in requests:
        found.setdefault(request_subject(request, subject), set()).add(request.run_id)
    return found


def unpublished(requests: list[RequestRun], stored: set[str]) -> list[RequestRun]:
    """The requests of a decision whose run id is not among those already stored, in order."""
    return [request for request in requests if request.run_id not in stored]


def is_first(delivery: Delivery | None) -> bool:
    """Is the trigger message handled for the first time (or not from a stream at all)?"""
    return delivery is None or delivery.deliveries <= 1


def must_look(delivery: Delivery | None, now: datetime, window_s: float) -> bool:
    """Must a trigger look for its requests on the stream before publishing them?"""
    if delivery is None or is_first(delivery):
        return False
    if delivery.stored_at is None:
        return True
    return (now - delivery.stored_at).total_seconds() >= window_s / 2
