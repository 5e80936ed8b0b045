"""Dry runs of a trigger definition against what the bus recorded: which runs it would
have started since a time, and why. Nothing is published and no code is called.

The evaluation is pure: `replay()` takes the definition, the recorded messages (ticks,
pushes, poll results, appends, completions; `read_recorded` reads them from the stream)
and the trigger's recorded history, and returns one verdict per event. Its horizon is what the stream still holds (its max age
or limits dropped older messages) and what the run history still records; `Horizon` says
both, and the output states them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from mainspring.contract import subjects
from mainspring.contract.messages import (
    DatasetAppended,
    FireTrigger,
    PollCompleted,
    RunCompleted,
    ScheduleFired,
)
from mainspring.sdk.triggers import AnyTrigger, CompletionTrigger, DatasetAppendTrigger, TimedSpec
from mainspring.storage.named_triggers import NamedTrigger, TriggerError, new_trigger, next_fire

M = TypeVar("M", bound=BaseModel)
# Beyond this many ticks a replay stops listing them (a 1s interval over a day is 86,400).
MAX_TICKS = 10_000


@dataclass(frozen=True)
class Recorded:
    """What the stream held since the replay's start, by kind."""

    ticks: list[ScheduleFired] = field(default_factory=list)
    pushes: list[FireTrigger] = field(default_factory=list)
    polls: list[PollCompleted] = field(default_factory=list)
    # With the time the stream stored each (an append carries no time of its own).
    appends: list[tuple[datetime, DatasetAppended]] = field(default_factory=list)
    completions: list[RunCompleted] = field(default_factory=list)


@dataclass(frozen=True)
class Horizon:
    """How far back the replay can see."""

    since: datetime  # what was asked for
    start: datetime  # what the replay evaluates from: the later of `since` and the stream's oldest message
    stream_oldest: datetime | None  # None: the stream still holds every message it stored
    history_oldest: datetime | None  # the oldest recorded firing of the trigger, if any


@dataclass(frozen=True)
class Verdict:
    """One event the definition would have acted on: a run, or why not."""

    at: datetime
    would_run: bool
    why: str
    payload: dict[str, Any] | None = None
    # What really happened then, from the recorded history (None: nothing recorded).
    recorded: str | None = None

    def as_json(self) -> dict[str, Any]:
        """As printed by `trigger replay --json`."""
        return {
            "at": self.at.isoformat(),
            "would_run": self.would_run,
            "why": self.why,
            "payload": self.payload,
            "recorded": self.recorded,
        }


@dataclass(frozen=True)
class Subject:
    """The definition under replay: a named trigger, or a routine's own trigger spec."""

    name: str
    target: str
    spec: AnyTrigger | None  # a routine's own trigger
    trigger: NamedTrigger | None = None  # a named trigger (then `spec` is its schedule)


def horizon(
    since: datetime, stream_oldest: datetime | None, history: list[dict[str, Any]]
) -> Horizon:
    """The replay's reach: never before the stream's oldest message."""
    fired = [datetime.fromisoformat(e["fired_at"]) for e in history if e.get("fired_at")]
    start = since if stream_oldest is None else max(since, stream_oldest)
    return Horizon(since, start, stream_oldest, min(fired) if fired else None)


def _recorded_outcomes(history: list[dict[str, Any]]) -> dict[str, str]:
    """What the trigger really did, by nominal tick (or by run id for pushes)."""
    outcomes: dict[str, str] = {}
    for event in history:
        text = event["status"] + (f": run {event['run_id']}" if event.get("run_id") else "")
        if event.get("reason"):
            text += f" ({event['reason']})"
        for key in (event.get("scheduled_at"), event.get("run_id")):
            if key:
                outcomes.setdefault(key, text)
    return outcomes


def _ticks(spec: TimedSpec, start: datetime, until: datetime) -> list[datetime]:
    ticks: list[datetime] = []
    cursor = start
    while len(ticks) < MAX_TICKS and (tick := next_fire(spec, cursor)) <= until:
        ticks.append(tick)
        cursor = tick
    return ticks


def _timed(
    subject: Subject,
    spec: TimedSpec,
    poll_fn: str | None,
    payload: dict[str, Any],
    start: datetime,
    now: datetime,
    recorded: Recorded,
    outcomes: dict[str, str],
) -> list[Verdict]:
    polls = {p.scheduled_at: p for p in recorded.polls if _mine(subject, p.trigger, p.routine)}
    verdicts = []
    for tick in _ticks(spec, start, now):
        then = outcomes.get(tick.astimezone(UTC).isoformat(), "not fired then")
        if poll_fn is None:
            verdicts.append(Verdict(tick, True, "tick", payload, then))
            continue
        polled = polls.get(tick)
        if polled is None:
            why = f"tick: would call {poll_fn}; no result recorded for this tick (a dry run calls no code)"
            verdicts.append(Verdict(tick, False, why, None, then))
        elif polled.error is not None:
            verdicts.append(Verdict(tick, False, f"poll failed: {polled.error}", None, then))
        elif polled.payload is None:
            verdicts.append(Verdict(tick, False, "poll function returned None", None, then))
        else:
            verdicts.append(Verdict(tick, True, "poll returned a payload", polled.payload, then))
    return verdicts


def _mine(subject: Subject, trigger: str | None, routine: str) -> bool:
    """Is a recorded message this subject's (a named trigger's, or the routine's own)?"""
    if subject.trigger is not None:
        return trigger == subject.name
    return trigger is None and routine == subject.name


def _appends(spec: DatasetAppendTrigger, recorded: Recorded) -> list[Verdict]:
    verdicts = []
    pending = 0
    for at, appended in recorded.appends:
        if appended.dataset != spec.dataset or (
            appended.inserted_by_merge and not spec.merge_inserts
        ):
            continue
        pending += appended.added_records
        versions = f"versions ({appended.from_version}, {appended.to_version}]"
        if spec.batch_rows is not None and pending < spec.batch_rows:
            why = f"{versions}: {pending} rows pending, below batch_rows={spec.batch_rows}"
            verdicts.append(Verdict(at, False, why))
            continue
        why = f"rows appended to {spec.dataset} in {versions}: {pending} rows"
        verdicts.append(Verdict(at, True, why))
        pending = 0
    return verdicts


def _completions(spec: CompletionTrigger, recorded: Recorded) -> list[Verdict]:
    verdicts = []
    for completed in recorded.completions:
        if completed.routine != spec.routine:
            continue
        why = f"run {completed.run_id} of {completed.routine} ended {completed.status}"
        if spec.status not in ("any", completed.status):
            verdicts.append(
                Verdict(completed.finished_at, False, f"{why}; waits for {spec.status}")
            )
        else:
            verdicts.append(Verdict(completed.finished_at, True, why))
    return verdicts


def replay(
    subject: Subject,
    recorded: Recorded,
    history: list[dict[str, Any]],
    window: Horizon,
    now: datetime,
) -> list[Verdict]:
    """Every event since the horizon's start the definition would have acted on, oldest first."""
    outcomes = _recorded_outcomes(history)
    verdicts: list[Verdict] = []
    trigger = subject.trigger
    if trigger is not None:
        spec = trigger.schedule()
        if spec is not None:
            verdicts += _timed(
                subject,
                spec,
                trigger.poll_fn,
                trigger.payload,
                window.start,
                now,
                recorded,
                outcomes,
            )
        for push in recorded.pushes:
            # The reader starts at the horizon by stream time; requested_at is the caller's clock.
            if push.trigger == subject.name:
                payload = trigger.payload if push.payload is None else push.payload
                who = f" by {push.requested_by}" if push.requested_by else ""
                then = outcomes.get(push.request_id, "not fired then")
                verdicts.append(Verdict(push.requested_at, True, f"fired{who}", payload, then))
    elif isinstance(subject.spec, TimedSpec):
        poll_fn = getattr(subject.spec, "fn", None)
        verdicts += _timed(
            subject, subject.spec, poll_fn, {}, window.start, now, recorded, outcomes
        )
    elif isinstance(subject.spec, DatasetAppendTrigger):
        verdicts += _appends(subject.spec, recorded)
    elif isinstance(subject.spec, CompletionTrigger):
        verdicts += _completions(subject.spec, recorded)
    return sorted(verdicts, key=lambda v: v.at)


async def stream_oldest(js: JetStreamContext) -> datetime | None:
    """When the stream's oldest message still held was stored; None when the stream has
    never dropped one (its first sequence is still 1), so it holds all it ever stored."""
    info = await js.stream_info(subjects.STREAM)
    if info.state.first_seq <= 1:
        return None
    if not info.state.messages:
        return datetime.now(UTC)  # every message it stored has aged out
    try:
        oldest = await js.get_msg(subjects.STREAM, seq=info.state.first_seq)
    except NotFoundError:
        return datetime.now(UTC)
    return oldest.time


async def _messages_since(
    js: JetStreamContext, subject: str, start: datetime, batch: int = 512
) -> AsyncIterator[Msg]:
    """Every stored message on `subject` from `start` on, read by a throwaway consumer."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=start,
        ack_policy=AckPolicy.NONE,
        filter_subject=subject,
        inactive_threshold=30.0,
    )
    subscription = await js.pull_subscribe(subject, stream=subjects.STREAM, config=config)
    try:
        while True:
            try:
                messages = await subscription.fetch(batch, timeout=1.0)
            except TimeoutError:
                # Not "nothing left" by itself: on a busy machine the wait runs out first
                # (nats-py then raises the builtin TimeoutError, not its own), so the consumer
                # says whether messages remain.
                if (await subscription.consumer_info()).num_pending == 0:
                    return
                continue
            for message in messages:
                yield message
            if not messages or messages[-1].metadata.num_pending == 0:
                return
    finally:
        await subscription.unsubscribe()


def _parsed(model: type[M], message: Msg) -> M | None:
    try:
        return model.model_validate_json(message.data)
    except ValidationError:
        return None  # a malformed message was parked by the services; it fired nothing


async def read_recorded(js: JetStreamContext, start: datetime) -> Recorded:
    """The ticks, pushes, poll results, appends and completions stored since `start`."""
    recorded = Recorded()
    async for message in _messages_since(js, subjects.SCHEDULE_FIRED, start):
        if (tick := _parsed(ScheduleFired, message)) is not None:
            recorded.ticks.append(tick)
    async for message in _messages_since(js, subjects.TRIGGER_FIRE, start):
        if (push := _parsed(FireTrigger, message)) is not None:
            recorded.pushes.append(push)
    async for message in _messages_since(js, subjects.POLL_COMPLETED, start):
        if (polled := _parsed(PollCompleted, message)) is not None:
            recorded.polls.append(polled)
    async for message in _messages_since(js, subjects.DATASET_APPENDED, start):
        if (appended := _parsed(DatasetAppended, message)) is not None:
            recorded.appends.append((message.metadata.timestamp, appended))
    async for message in _messages_since(js, subjects.RUN_COMPLETED_ANY, start):
        if (completed := _parsed(RunCompleted, message)) is not None:
            recorded.completions.append(completed)
    return recorded


@dataclass(frozen=True)
class ReplayReport:
    """A replay's subject, its horizon and its verdicts (oldest first)."""

    subject: Subject
    horizon: Horizon
    verdicts: list[Verdict]


# The keys a --definition file may set: the flags of `trigger create`, without dashes.
DEFINITION_KEYS = ("target", "cron", "every", "push", "tz", "poll", "payload", "on_resume")


def changed_definition(
    name: str, current: NamedTrigger | None, changes: dict[str, Any], now: datetime
) -> NamedTrigger:
    """The definition a --definition file describes, over the current one (if any).

    Giving any of cron, every or push replaces the timing as a whole, as `trigger create`
    takes exactly one of them.
    """
    unknown = sorted(set(changes) - set(DEFINITION_KEYS))
    if unknown:
        raise TriggerError(
            f"--definition: unknown key {unknown[0]!r}: use {', '.join(DEFINITION_KEYS)}"
        )
    base: dict[str, Any] = {}
    if current is not None:
        base = {
            "target": current.target,
            "cron": current.cron,
            "every": current.every,
            "push": current.type == "push",
            "tz": current.tz,
            "poll": current.poll_fn,
            "payload": current.payload,
            "on_resume": current.on_resume,
        }
    if any(key in changes for key in ("cron", "every", "push")):
        base.update(cron=None, every=None, push=False)
    merged = {**base, **changes}
    if not merged.get("target"):
        raise TriggerError(
            f"--definition: trigger {name} does not exist, so the file must name its target: "
            '{"target": "ROUTINE", "cron": "0 * * * *"}'
        )
    return new_trigger(
        name,
        merged["target"],
        now,
        cron=merged.get("cron"),
        every=merged.get("every"),
        push=bool(merged.get("push")),
        tz=merged.get("tz") or "UTC",
        poll_fn=merged.get("poll"),
        payload=merged.get("payload"),
        on_resume=merged.get("on_resume") or "coalesce",
    )
