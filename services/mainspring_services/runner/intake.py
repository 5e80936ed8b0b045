"""The runner's intake: pull run requests from the three priority queues, only as many as it
has free slots, and start each one at once.

Each priority has its durable consumer (`subjects.RUN_QUEUES`). The intake asks the
consumers itself, with the JetStream pull API on inboxes of its own, rather than through a
FastStream subscriber: a subscriber pulls a fixed batch and runs its handlers side by side,
so it can neither size a pull by the free slots nor take high before normal before low.

- A freed slot (or a new arrival) starts a round: the highest priority first, requests held
  here before those still queued, each queue asked with `no_wait` for at most as many as
  there are free slots (`core.intake_step`). A run pulled is started at once.
- When every queue is empty the intake waits on the server: one pull of one request per
  queue, each with an expiry (`intake_poll_s`), delivered the moment a request is stored, so
  an idle runner costs no latency and nearly no CPU. A queue with such a pull outstanding
  is empty (the pull would have taken what came), so a round does not ask it again.
- Once no slot is free the intake withdraws its waiting pulls (a new inbox; the server skips
  a pull whose inbox has no subscriber), so a request goes to a runner that can start it.
  What was already on its way (two queues answering together) is held here with in-progress
  acks, as a run waiting for its slot always was, and started first when its turn comes. A
  run held here while a higher-priority one takes the slot is queued "waiting behind
  higher-priority runs".
- Draining stops the rounds and closes the intake's inboxes, so the server drops its waiting
  pulls; a request held here, or already on its way, goes back uncharged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NotJSMessageError
from nats.js.api import ConsumerConfig

from mainspring.base import tracing
from mainspring.contract import subjects
from mainspring.contract.messages import PRIORITIES, RequestRun
from mainspring.runtime.service import RETRY_DELAY_S, durable, parse_or_park
from mainspring_services.runner import core
from mainspring_services.runner.handlers import Runner

log = logging.getLogger("mainspring.runner")

# How long a `no_wait` pull may take to be answered before its queue counts as empty for the
# round (an answer lost with the connection; whatever comes later is still taken).
ANSWER_TIMEOUT_S = 5.0
# JetStream's status answers to a pull: no messages, request expired, pull conflicts.
END_OF_PULL = ("404", "408", "409")


def queue_config(subject: str, name: str, ack_wait_s: float) -> ConsumerConfig:
    """The durable consumer of one priority's requests, as the run queue always had it."""
    config = durable(
        name,
        subject,
        ack_wait_s=ack_wait_s,
        max_ack_pending=10_000,
        # No delivery limit here: a run held for admission (max_concurrent, memory) is
        # nak'ed and comes back every hold_retry_s for as long as it waits, and waiting is
        # not failing. Real failures are bounded by the attempts in the run ledger: a run
        # past its budget ends failed with the reason (lost_run_outcome), never parked.
        redelivery=None,
    )["config"]
    assert isinstance(config, ConsumerConfig)
    return config


def wrapped(raw: Msg) -> NatsMessage:
    """FastStream's message around a pulled one, so acks, naks and in-progress acks work as
    for any subscriber's message."""
    headers = raw.header or {}
    return NatsMessage(
        raw_message=raw,
        body=raw.data,
        headers=headers,
        content_type=headers.get("content-type"),
        message_id=headers.get("message_id"),
        correlation_id=headers.get("correlation_id"),
    )


def pending_after(raw: Msg) -> int | None:
    """How many requests the queue held after this one when it was delivered (None: unknown)."""
    try:
        return int(raw.metadata.num_pending)
    except (NotJSMessageError, AttributeError, TypeError, ValueError):
        return None


@dataclass
class Held:
    """A request pulled while no slot was free, kept alive until its turn."""

    request: RequestRun
    message: NatsMessage
    keep_alive: asyncio.Task[None]


@dataclass
class PriorityQueue:
    """One priority's durable consumer and the intake's two inboxes on it."""

    priority: str
    subject: str
    durable: str
    # Answers to `no_wait` pulls, and to the waiting pull.
    now_inbox: str = ""
    poll_inbox: str = ""
    now_subscription: Subscription | None = None
    poll_subscription: Subscription | None = None
    # The `no_wait` pull being answered: how many asked, how many came, when it is over.
    asked: int = 0
    answered: int = 0
    answer: asyncio.Future[int] | None = None
    # Monotonic deadline of the waiting pull outstanding on the server (0: none).
    polling_until: float = 0.0

    def polling(self, now: float) -> bool:
        """Is a waiting pull outstanding (so the queue was empty when last asked)?"""
        return self.polling_until > now

    def next_subject(self) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{subjects.STREAM}.{self.durable}"


class Intake:
    """Pulls run requests for a runner: no more than its free slots, highest priority first."""

    def __init__(self, broker: NatsBroker, runner: Runner) -> None:
        self.broker = broker
        self.runner = runner
        self.settings = runner.settings
        self.queues = {
            priority: PriorityQueue(priority, subject, name)
            for priority, subject, name in subjects.RUN_QUEUES
        }
        self.held: dict[str, deque[Held]] = {p: deque() for p in PRIORITIES}
        self.loop: asyncio.Task[None] | None = None
        self.stopping = False

    async def open(self) -> None:
        """Declare the three durable consumers (as every service declares its own) and listen
        on the intake's inboxes."""
        js = self.broker.connection.jetstream()
        nc = self.broker.connection
        for queue in self.queues.values():
            await js.add_consumer(
                subjects.STREAM,
                config=queue_config(queue.subject, queue.durable, self.settings.run_ack_wait_s),
            )
            queue.now_inbox = nc.new_inbox()
            queue.now_subscription = await nc.subscribe(queue.now_inbox, cb=self._now_answer(queue))
            await self.listen_for_polls(queue)

    async def listen_for_polls(self, queue: PriorityQueue) -> Subscription | None:
        """A new inbox for the queue's waiting pulls; the one it replaces (None at first)."""
        nc = self.broker.connection
        replaced = queue.poll_subscription
        queue.poll_inbox = nc.new_inbox()
        queue.poll_subscription = await nc.subscribe(
            queue.poll_inbox, cb=self._poll_answer(queue, queue.poll_inbox)
        )
        queue.polling_until = 0.0
        return replaced

    async def withdraw_polls(self) -> None:
        """No slot is free: take back the waiting pulls, so a request comes to a runner with a
        free slot rather than waiting here behind running runs.

        nats-server skips a waiting pull whose inbox has no subscriber; draining the old
        subscription still takes what was already on its way (held here, kept alive).
        """
        now = time.monotonic()
        for queue in self.queues.values():
            if queue.polling(now):
                replaced = await self.listen_for_polls(queue)
                if replaced is not None:
                    await replaced.drain()  # type: ignore[no-untyped-call]

    def start(self) -> None:
        """Start taking runs."""
        self.loop = asyncio.create_task(self.run(), name="runner-intake")

    async def stop(self) -> None:
        """Stop pulling; hand back, uncharged, every request held here without a slot."""
        self.stopping = True
        self.runner.wake.set()
        if self.loop is not None:
            self.loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop
        # A waiting pull would otherwise go on taking requests (the runs this runner hands
        # back while it drains among them) until it expires. The server skips a pull whose
        # inbox has no subscriber, and draining the subscription first hands back what was
        # already on its way here.
        for queue in self.queues.values():
            for subscription in (queue.now_subscription, queue.poll_subscription):
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.drain()  # type: ignore[no-untyped-call]
        for waiting in self.held.values():
            while waiting:
                held = waiting.popleft()
                held.keep_alive.cancel()
                await self._give_back(held.request, held.message)

    def taking(self) -> bool:
        return not (self.stopping or self.runner.draining)

    async def run(self) -> None:
        """Rounds of pulls while slots are free; between them, wait for a request or a slot."""
        emptied: set[str] = set()
        while self.taking():
            now = time.monotonic()
            empty = emptied | {p for p, q in self.queues.items() if q.polling(now)}
            step = core.intake_step(
                self.runner.free_slots(),
                self.settings.intake_max_fetch,
                {p: len(waiting) for p, waiting in self.held.items()},
                empty,
            )
            if step.action == "start":
                held = self.held[step.priority].popleft()
                held.keep_alive.cancel()
                await self.launch(step.priority, held.request, held.message)
                continue
            if step.action == "fetch":
                try:
                    answered = await self.pull_now(self.queues[step.priority], step.count)
                except Exception:  # noqa: BLE001 - the bus is away: wait, then ask again
                    log.warning("pulling %s runs failed; asking again", step.priority)
                    await asyncio.sleep(1.0)
                    continue
                if answered < step.count:
                    emptied.add(step.priority)
                continue
            self.runner.wake.clear()
            try:
                if step.action == "wait":
                    await self.wait_on_server()
                else:
                    await self.withdraw_polls()
            except Exception:  # noqa: BLE001 - the bus is away: wait, then ask again
                log.warning("waiting for runs failed; asking again")
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.runner.wake.wait(), self.settings.intake_poll_s)
            emptied.clear()

    async def pull_now(self, queue: PriorityQueue, count: int) -> int:
        """Ask one queue for up to `count` requests it holds now; how many came (each one is
        started, or held, as it arrives)."""
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        queue.asked, queue.answered, queue.answer = count, 0, answer
        await self.broker.connection.publish(
            queue.next_subject(),
            json.dumps({"batch": count, "no_wait": True}).encode(),
            reply=queue.now_inbox,
        )
        try:
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            return queue.answered
        finally:
            queue.answer = None

    async def wait_on_server(self) -> None:
        """Every queue is empty: leave one waiting pull of one request on each that has none."""
        now = time.monotonic()
        for queue in self.queues.values():
            if not queue.polling(now):
                await self.poll(queue)

    async def poll(self, queue: PriorityQueue) -> None:
        """Leave one waiting pull of one request on the queue."""
        expires_s = self.settings.intake_poll_s
        # Counted as outstanding a little past its expiry: its answer may be on the way.
        queue.polling_until = time.monotonic() + expires_s + 1.0
        await self.broker.connection.publish(
            queue.next_subject(),
            json.dumps({"batch": 1, "expires": int(expires_s * 1e9)}).encode(),
            reply=queue.poll_inbox,
        )

    def _now_answer(self, queue: PriorityQueue) -> Any:
        async def answered(raw: Msg) -> None:
            status = (raw.headers or {}).get("Status")
            if status is None:
                queue.answered += 1
                await self.arrive(queue.priority, raw)
                if queue.answered < queue.asked:
                    return
            elif status not in END_OF_PULL:
                log.warning(
                    "pulling %s runs: %s %s",
                    queue.priority,
                    status,
                    (raw.headers or {}).get("Description", ""),
                )
            if queue.answer is not None and not queue.answer.done():
                queue.answer.set_result(queue.answered)

        return answered

    def _poll_answer(self, queue: PriorityQueue, inbox: str) -> Any:
        async def polled(raw: Msg) -> None:
            # (A pulled message's subject is its own, not the inbox: told apart by inbox.)
            if inbox != queue.poll_inbox:
                # A withdrawn pull's late answer: the current pull still waits.
                if (raw.headers or {}).get("Status") is None:
                    await self.arrive(queue.priority, raw)
                return
            # One request or the pull's end: either way, no pull waits on this queue now.
            queue.polling_until = 0.0
            if (raw.headers or {}).get("Status") is None:
                await self.arrive(queue.priority, raw)
                if self.taking() and self.runner.free_slots() > 0 and pending_after(raw) == 0:
                    # It was the queue's last request: wait for the next one at once, rather
                    # than ask the queue again (one round trip fewer as each run starts).
                    with contextlib.suppress(Exception):
                        await self.poll(queue)
            self.runner.wake.set()

        return polled

    async def arrive(self, priority: str, raw: Msg) -> None:
        """A pulled request: parked when malformed, started when a slot is free, else held
        (kept alive) until one is."""
        message = wrapped(raw)
        try:
            request = await parse_or_park(self.broker, message, RequestRun)
            if request is None:
                # Parked on its dead-letter subject; redelivering it would park it again.
                await message.ack()
                return
            if not self.taking():
                await self._give_back(request, message)
                return
            if self.runner.free_slots() > 0:
                await self.launch(priority, request, message)
                return
            keep_alive = asyncio.create_task(self.runner.keep_alive(message))
            self.held[priority].append(Held(request, message, keep_alive))
        except Exception:
            log.exception("taking a request from %s failed; it comes back", raw.subject)
            with contextlib.suppress(Exception):
                await message.nack(delay=RETRY_DELAY_S)

    async def launch(self, priority: str, request: RequestRun, message: NatsMessage) -> None:
        """Start a run in a free slot (in the trace of its request), and say of the requests
        held here of a lower priority that they wait behind it."""
        raw = message.raw_message
        with tracing.handling(message.headers, raw.subject, len(raw.data)):
            self.runner.launch(request, message)
        for lower, waiting in self.held.items():
            if core.behind_higher_priority(lower, priority):
                for held in waiting:
                    await self.runner.announce_hold(held.request, core.BEHIND_HIGHER_PRIORITY)

    async def _give_back(self, request: RequestRun, message: NatsMessage) -> None:
        # Not an attempt: another replica takes it, a little later so it is not this one.
        log.info("run %s of %s: stopping, handed back", request.run_id, request.routine)
        try:
            await self.runner.give_back_uncharged(request, message, self.settings.hold_retry_s)
        except Exception:
            log.exception(
                "run %s: handing it back failed; it returns after the ack wait", request.run_id
            )
