"""Dead letters: messages no service could handle, kept on `deadletter.<subject>` with the reason.

A message is dead-lettered at once when it is malformed, and after its consumer's delivery limit
when its handler failed on every delivery (`RedeliveryPolicy`). It keeps its body and original
headers, so `mainspring deadletters replay` can put it back on its subject once the cause is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mainspring.contract import subjects

ERROR_HEADER = "Mainspring-Error"
DELIVERIES_HEADER = "Mainspring-Deliveries"
ORIGINAL_ID_HEADER = "Mainspring-Original-Msg-Id"
CUT_HEADER = "Mainspring-Body-Cut"
# Headers the server or the dead-lettering set: not carried back by a replay.
_OWN_HEADERS = frozenset(
    {ERROR_HEADER, DELIVERIES_HEADER, ORIGINAL_ID_HEADER, CUT_HEADER, "Nats-Msg-Id"}
)
# Room kept for the cut marker, the header block's framing and what the publish adds on
# the way out: trace context, FastStream's correlation id and content type.
_HEADROOM_BYTES = 1024


class DeadLetterError(LookupError):
    """A dead letter that is not there (or a sequence that is not a dead letter)."""


class RedeliveryPolicy(BaseModel):
    """How a consumer retries a message whose handler failed, and when it gives up.

    Delays double from `first_delay_s` up to `max_delay_s`, so the defaults retry for about 15
    minutes (a restarted database or bus comes back well within that) before dead-lettering.
    """

    model_config = ConfigDict(frozen=True)
    max_deliveries: int = Field(default=20, ge=1)
    first_delay_s: float = Field(default=2.0, gt=0)
    max_delay_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _delays_grow(self) -> RedeliveryPolicy:
        if self.max_delay_s < self.first_delay_s:
            raise ValueError(
                f"max_delay_s {self.max_delay_s:g} is below first_delay_s {self.first_delay_s:g}: "
                "raise max_delay_s"
            )
        return self

    def delay_s(self, delivered: int) -> float:
        """How long to wait before delivery `delivered + 1`."""
        return float(min(self.first_delay_s * 2 ** max(0, delivered - 1), self.max_delay_s))

    def exhausted(self, delivered: int) -> bool:
        """Was delivery `delivered` the last one a failure may have?"""
        return delivered >= self.max_deliveries

    def server_limit(self) -> int:
        """The consumer's max_deliver: one past ours, so the handler's last failure parks the
        message first; the server's own limit only stops a message that kills its handler."""
        return self.max_deliveries + 1


REDELIVERY = RedeliveryPolicy()


def dead_letter_headers(
    reason: str,
    sequence: int | None,
    original: Mapping[str, str] | None = None,
    deliveries: int | None = None,
) -> dict[str, str]:
    """The original headers plus why it was parked; one dead letter per stored message."""
    headers = {k: v for k, v in (original or {}).items() if k != "Nats-Msg-Id"}
    if original and "Nats-Msg-Id" in original:
        headers[ORIGINAL_ID_HEADER] = original["Nats-Msg-Id"]
    headers[ERROR_HEADER] = reason[:1000]
    if deliveries is not None:
        headers[DELIVERIES_HEADER] = str(deliveries)
    if sequence is not None:
        # Several services parse one subject (run.completed): park each stored message once.
        headers["Nats-Msg-Id"] = f"deadletter:{sequence}"
    return headers


def header_bytes(headers: Mapping[str, str]) -> int:
    """How many bytes a header block takes on the wire (`Name: value` lines)."""
    return sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def fit_dead_letter(
    body: bytes, headers: dict[str, str], max_payload: int
) -> tuple[bytes, dict[str, str]]:
    """The dead letter cut to fit the bus's max payload, which counts headers and body.

    A message near the limit grows by the reason when parked: sent as it is, the server
    refuses it by closing the service's connection. The body is cut (the original stays in
    the stream at its sequence) and marked, so a replay refuses it instead of sending half;
    original headers go too when even an empty body would not fit.
    """
    room = max_payload - _HEADROOM_BYTES - header_bytes(headers)
    if len(body) <= room:
        return body, headers
    if room < 0:
        headers = {k: v for k, v in headers.items() if k in _OWN_HEADERS}
        room = max(0, max_payload - _HEADROOM_BYTES - header_bytes(headers))
    cut = {**headers, CUT_HEADER: f"{min(room, len(body))} of {len(body)} bytes"}
    return body[:room], cut


@dataclass(frozen=True)
class DeadLetter:
    """One parked message, as stored on the stream."""

    sequence: int
    subject: str
    reason: str
    headers: dict[str, str]
    body: bytes
    parked_at: datetime | None

    @property
    def original_subject(self) -> str:
        """Where the message was published before it was parked."""
        return self.subject.removeprefix(f"{subjects.DEAD_LETTER_PREFIX}.")

    def replay_headers(self) -> dict[str, str]:
        """The original headers, with a message id of its own so the stream does not drop it
        as a duplicate of the original."""
        headers = {k: v for k, v in self.headers.items() if k not in _OWN_HEADERS}
        headers["Nats-Msg-Id"] = f"replay:{self.sequence}"
        return headers

    def summary(self) -> dict[str, Any]:
        """The row `deadletters list` prints."""
        return {
            "sequence": self.sequence,
            "subject": self.original_subject,
            "parked_at": self.parked_at.isoformat() if self.parked_at else None,
            "deliveries": self.headers.get(DELIVERIES_HEADER),
            "reason": self.reason,
        }


def _letter(raw: Any) -> DeadLetter:
    # nats-py reads a stored message's headers with the email parser, which gives a Header
    # object for a non-ASCII value: as text, so a letter can be shown as JSON and replayed.
    headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
    return DeadLetter(
        sequence=int(raw.seq),
        subject=str(raw.subject),
        reason=headers.get(ERROR_HEADER, ""),
        headers=headers,
        body=raw.data or b"",
        parked_at=getattr(raw, "time", None),
    )


async def list_dead_letters(js: JetStreamContext, limit: int = 100) -> list[DeadLetter]:
    """The oldest `limit` dead letters still on the stream."""
    found: list[DeadLetter] = []
    sequence = 1
    while len(found) < limit:
        try:
            raw = await js.get_msg(
                subjects.STREAM, seq=sequence, subject=f"{subjects.DEAD_LETTER_PREFIX}.>", next=True
            )
        except NotFoundError:
            break
        found.append(_letter(raw))
        sequence = found[-1].sequence + 1
    return found


async def get_dead_letter(js: JetStreamContext, sequence: int) -> DeadLetter:
    """One dead letter by its stream sequence."""
    try:
        letter = _letter(await js.get_msg(subjects.STREAM, seq=sequence))
    except NotFoundError:
        letter = None
    if letter is None or not letter.subject.startswith(f"{subjects.DEAD_LETTER_PREFIX}."):
        raise DeadLetterError(
            f"no dead letter at sequence {sequence}: see `mainspring deadletters list`"
        )
    return letter


async def replay_dead_letter(js: JetStreamContext, sequence: int) -> DeadLetter:
    """Publish a dead letter again on its original subject, then remove it."""
    letter = await get_dead_letter(js, sequence)
    if CUT_HEADER in letter.headers:
        original = letter.headers.get("Nats-Msg-Id", "").removeprefix("deadletter:")
        raise DeadLetterError(
            f"dead letter {sequence} keeps only {letter.headers[CUT_HEADER]} of its body "
            "(the whole did not fit the bus's max payload): republish the original, message "
            f"{original or '?'} of the stream, or purge this one"
        )
    await js.publish(
        letter.original_subject,
        letter.body,
        stream=subjects.stream_of(letter.original_subject),
        headers=letter.replay_headers(),
    )
    await js.delete_msg(subjects.STREAM, sequence)
    return letter


async def purge_dead_letters(js: JetStreamContext, sequence: int | None = None) -> int:
    """Remove one dead letter, or all of them; how many were removed."""
    if sequence is not None:
        await get_dead_letter(js, sequence)
        await js.delete_msg(subjects.STREAM, sequence)
        return 1
    # One by one rather than a filtered purge: the client user may delete a message, but
    # purging is stream management, which only the admin identity may do.
    removed = 0
    while letters := await list_dead_letters(js):
        for letter in letters:
            await js.delete_msg(subjects.STREAM, letter.sequence)
            removed += 1
    return removed
