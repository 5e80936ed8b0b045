"""What every service shares: broker construction, subscriber options, dead-lettering."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from faststream import BaseMiddleware, FastStream
from faststream.exceptions import AckMessage, HandlerException, IncorrectState, NackMessage
from faststream.message import StreamMessage
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats import DeliverPolicy as NatsDeliverPolicy
from faststream.nats.prometheus.provider import NatsMetricsSettingsProvider
from faststream.nats.security import NatsSecurity
from faststream.prometheus import PrometheusMiddleware
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from mainspring.base import tracing
from mainspring.base.health import OpsServer, ReadyCheck
from mainspring.base.log_format import JsonFormatter, LogConfigError, log_format, note_message
from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import Message
from mainspring.runtime import metrics
from mainspring.runtime.bus import BusNotSetUp, check_bus, connection_options, message_id_headers
from mainspring.runtime.deadletters import (
    REDELIVERY,
    RedeliveryPolicy,
    dead_letter_headers,
    fit_dead_letter,
    header_bytes,
)
from mainspring.runtime.turns import KeyedTurns

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

log = logging.getLogger("mainspring")

STREAM = JStream(name=subjects.STREAM, declare=False)


def configure_logging(service: str) -> None:
    """One line per record naming the service: text, or JSON with MAINSPRING_LOG_FORMAT=json."""
    try:
        chosen = log_format()
    except LogConfigError as exc:
        raise SystemExit(f"{service} cannot start: {exc}") from None
    handler = logging.StreamHandler()
    if chosen == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    logging.basicConfig(level=os.environ.get("MAINSPRING_LOG_LEVEL", "INFO"), handlers=[handler])
    logging.getLogger("faststream").setLevel(logging.WARNING)


def configure_tracing(service: str) -> None:
    """Export spans as the OTEL_* variables say, and to MAINSPRING_TRACE_DIR when set."""
    trace_dir = os.environ.get("MAINSPRING_TRACE_DIR")
    try:
        tracing.configure_tracing(service, Path(trace_dir) if trace_dir else None)
    except tracing.TracingConfigError as exc:
        raise SystemExit(f"{service} cannot start: {exc}") from None


def instance_name(service: str) -> str:
    """A name for this replica: host and pid."""
    return f"{service}@{socket.gethostname()}:{os.getpid()}"


class TraceContextMiddleware(BaseMiddleware):
    """Broker middleware: handle each message in a process span, each publish in a send span."""

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        """Continue the incoming message's trace while its handler runs."""
        subject = getattr(msg.raw_message, "subject", "message")
        body = getattr(msg, "body", None)
        with tracing.handling(msg.headers, subject, len(body) if isinstance(body, bytes) else None):
            return await call_next(msg)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        """Carry the send span's context (a new trace outside any) in the message's headers."""
        if cmd.headers is None:
            cmd.headers = {}
        if tracing.TRACEPARENT in cmd.headers:
            return await call_next(cmd)
        body = getattr(cmd, "body", None)
        size = len(body) if isinstance(body, bytes | str) else None
        with tracing.sending(str(getattr(cmd, "destination", "") or ""), cmd.headers, size):
            tracing.inject(cmd.headers)
            return await call_next(cmd)


RETRY_DELAY_S = 2.0

# Each durable's redelivery policy by consumer name (None: no delivery limit), set by
# durable() when a service subscribes, read when one of its messages fails.
_POLICIES: dict[str, RedeliveryPolicy | None] = {}


def delivered(raw: Msg) -> int:
    """How many times JetStream delivered this message (1 on the first delivery)."""
    try:
        return int(raw.metadata.num_delivered or 1)
    except (NotJSMessageError, AttributeError, TypeError, ValueError):  # not from a stream
        return 1


def failure_reason(subject: str, deliveries: int, error: BaseException) -> str:
    """Why a message is dead-lettered after its last failed delivery, naming the way back."""
    text = str(error).strip().splitlines()
    return (
        f"{subject} failed on all {deliveries} deliveries, last with {type(error).__name__}: "
        f"{text[0] if text else ''}; fix the cause, then `mainspring deadletters replay`"
    )


class RetryLaterMiddleware(BaseMiddleware):
    """A stream message whose handler raised is nak'ed with a growing delay, never dropped,
    and dead-lettered (reason and original headers) after its consumer's delivery limit.

    FastStream's default terminates such a message; for us a raised handler usually means a
    transient fault (database or bus briefly away), so the message must come back, but not in
    a tight loop; one that fails for a quarter of an hour is a real failure and is parked.
    """

    def __init__(self, msg: Any, /, *, context: Any, broker: NatsBroker) -> None:
        super().__init__(msg, context=context)
        self.broker = broker

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            return await call_next(msg)
        except HandlerException:
            raise
        except Exception as exc:
            raw = getattr(msg, "raw_message", None)
            if raw is None or not str(getattr(raw, "reply", "") or "").startswith("$JS.ACK"):
                raise
            subject = getattr(raw, "subject", "?")
            policy = _POLICIES.get(str(getattr(raw.metadata, "consumer", "")), REDELIVERY)
            count = delivered(raw)
            if policy is not None and policy.exhausted(count):
                await park_message(
                    self.broker, raw, failure_reason(subject, count, exc), deliveries=count
                )
                raise AckMessage() from exc
            delay = policy.delay_s(count) if policy is not None else RETRY_DELAY_S
            log.exception("handling %s failed; retrying in %.0fs", subject, delay)
            raise NackMessage(delay=delay) from exc


class MessageTooLarge(ValueError):
    """A message nats-server would refuse by closing the publisher's connection."""


# nats-server's limit on a protocol line (HPUB subject reply sizes): a longer subject is a
# protocol error that closes the connection.
MAX_SUBJECT_BYTES = 3072
# Room for what is added after the middleware: FastStream's correlation id and content type.
PUBLISH_HEADROOM_BYTES = 512


def oversized(subject: str, body: object, headers: Mapping[str, str], limit: int) -> str | None:
    """Why a message cannot be sent whole (one line), or None when it fits the server's limits."""
    if len(subject.encode()) > MAX_SUBJECT_BYTES:
        return (
            f"a subject of {len(subject.encode())} bytes is more than nats-server accepts "
            f"({MAX_SUBJECT_BYTES}): a name in it is too long"
        )
    if not isinstance(body, bytes | str):
        return None  # encoded later by FastStream: small models, never near the limit
    size = len(body.encode() if isinstance(body, str) else body) + header_bytes(headers)
    if size + PUBLISH_HEADROOM_BYTES > limit:
        return (
            f"a message of {size} bytes for {tracing.destination_template(subject)} is more than "
            f"the bus's max payload of {limit} bytes: raise max_payload in the nats-server "
            "configuration, or send less"
        )
    return None


class FitsTheBusMiddleware(BaseMiddleware):
    """Refuses a message too large for the bus before it is sent.

    nats-server answers an oversized publish (or an overlong subject) by closing the
    connection, and services cut off that way never reconnected: one message took the whole
    service off the bus. Refused here, it is an error of the one handler that sent it
    (retried, then dead-lettered) and the service keeps serving.
    """

    def __init__(self, msg: Any, /, *, context: Any, broker: NatsBroker) -> None:
        super().__init__(msg, context=context)
        self.broker = broker

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        """Send the message only when the server will take it."""
        problem = oversized(
            str(getattr(cmd, "destination", "") or ""),
            getattr(cmd, "body", None),
            cmd.headers or {},
            max_payload(self.broker),
        )
        if problem is not None:
            raise MessageTooLarge(problem)
        return await call_next(cmd)


async def _log_disconnected() -> None:
    log.warning("lost the connection to NATS; reconnecting until it is back")


async def _log_reconnected() -> None:
    log.warning("reconnected to NATS")


class TemplatedNatsMetrics(NatsMetricsSettingsProvider):
    """FastStream's NATS message metrics with subjects as templates: reply inboxes carry a
    random id each, so raw subjects would grow one series per request."""

    def get_consume_attrs_from_message(self, msg: Any) -> Any:
        attrs = super().get_consume_attrs_from_message(msg)
        return {
            **attrs,
            "destination_name": tracing.destination_template(attrs["destination_name"]),
        }

    def get_publish_destination_name_from_cmd(self, cmd: Any) -> str:
        return tracing.destination_template(str(cmd.destination))


def metrics_settings_provider(msg: Any) -> TemplatedNatsMetrics | None:
    """One message's metric settings; KV and object-store watches are not counted."""
    if msg is None or isinstance(msg, Msg):
        return TemplatedNatsMetrics()
    return None


_ORIGINAL_FETCH = JetStreamContext.PullSubscription.fetch


async def _fetch_raising_nats_timeouts(
    self: JetStreamContext.PullSubscription, *args: Any, **kwargs: Any
) -> list[Msg]:
    try:
        return await _ORIGINAL_FETCH(self, *args, **kwargs)
    except NatsTimeoutError:
        raise
    except TimeoutError as exc:
        raise NatsTimeoutError from exc


def fetch_timeouts_as_nats_timeouts() -> None:
    """Make a pull fetch that ran out of time raise nats-py's own TimeoutError, always.

    A fetch of more than one message raises the builtin TimeoutError instead when its wait
    ran out before the lingering pull (nats-py 2.16, `_fetch_n`); FastStream's pull loop
    suppresses only nats-py's, so on a busy machine a batched durable's consuming task died
    with a traceback and was restarted. nats-py's error is a builtin TimeoutError too, so
    every other caller sees what it saw before.
    """
    JetStreamContext.PullSubscription.fetch = _fetch_raising_nats_timeouts  # type: ignore[method-assign]


def build_broker(settings: Settings, service: str) -> NatsBroker:
    """A broker that reconnects forever: services outlive NATS restarts."""
    fetch_timeouts_as_nats_timeouts()
    connection = connection_options(settings)
    tls = connection.get("tls")
    broker = NatsBroker(
        connection["servers"],
        security=NatsSecurity(ssl_context=tls) if tls is not None else None,
        name=instance_name(service),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        # The log says when the bus went away and came back, so a gap in work is explained.
        disconnected_cb=_log_disconnected,
        reconnected_cb=_log_reconnected,
        logger=log,
        # Per-message receive/process lines are debug detail, not service health.
        log_level=logging.DEBUG,
        middlewares=[
            TraceContextMiddleware,
            PrometheusMiddleware(
                settings_provider_factory=metrics_settings_provider,
                registry=REGISTRY,
                app_name=f"mainspring-{service}",
            ),
        ],
    )
    # Innermost, as the last of the list would be; it dead-letters through this broker.
    broker.add_middleware(functools.partial(RetryLaterMiddleware, broker=broker))
    broker.add_middleware(functools.partial(FitsTheBusMiddleware, broker=broker))
    return broker


def build_app(
    broker: NatsBroker,
    settings: Settings,
    service: str,
    *,
    ready_checks: Sequence[ReadyCheck] = (),
) -> FastStream:
    """The FastStream app that checks the bus is set up before subscribers start.

    With settings.http_port set it serves /healthz, /readyz and /metrics there; every replica
    also answers the NATS service protocol ($SRV.PING, $SRV.INFO, $SRV.STATS).
    """
    app = FastStream(broker, logger=log)
    started = asyncio.Event()

    async def bus_ready() -> str | None:
        if not started.is_set():
            return "starting: subscribers not bound yet"
        try:
            connected = broker.connection.is_connected
        except IncorrectState:
            connected = False
        return None if connected else "not connected to NATS"

    ops = (
        OpsServer(settings.http_port, [bus_ready, *ready_checks], host=settings.http_host)
        if settings.http_port is not None
        else None
    )
    micro: list[Any] = []

    @app.on_startup
    async def check_setup() -> None:
        if ops is not None:
            # Listening first: /healthz answers while the service starts, /readyz says why not yet.
            await ops.start()
        # Connect before subscribers start so state bound in later start-up hooks is
        # ready when the first message arrives.
        await broker.connect()
        # Check, never declare: two versions of a service declaring at start would flip
        # the stream's settings back and forth during a rolling upgrade.
        await check_bus(broker.connection.jetstream(), settings)

    @app.after_startup
    async def announce() -> None:
        started.set()
        found = await add_micro_service(broker, service, settings.http_port)
        if found is not None:
            micro.append(found)

    @app.on_shutdown
    async def stop_ops() -> None:
        started.clear()
        for one in micro:
            with contextlib.suppress(Exception):
                await one.stop()
        if ops is not None:
            await ops.stop()

    return app


async def add_micro_service(broker: NatsBroker, service: str, http_port: int | None) -> Any:
    """Answer $SRV.PING/INFO/STATS as `mainspring-<service>`: one request finds every replica."""
    try:
        from nats import micro
    except ImportError:
        return None
    metadata = {"instance": instance_name(service)}
    if http_port is not None:
        metadata["http_port"] = str(http_port)
    try:
        return await micro.add_service(
            broker.connection,
            name=f"mainspring-{service}",
            version=package_version(),
            description=f"Mainspring {service}",
            metadata=metadata,
        )
    except Exception as exc:  # noqa: BLE001 - discovery is optional
        # Only discovery is lost (a user without $SRV.> permission): the service still works.
        log.warning("not answering the NATS service protocol: %s", exc)
        return None


def package_version() -> str:
    """The installed mainspring version (0.0.0 when run from a tree not installed)."""
    try:
        return importlib.metadata.version("mainspring")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


EXIT_NOT_SET_UP = 2


class EventLoopConfigError(ValueError):
    """MAINSPRING_EVENT_LOOP names no loop Mainspring has."""


def event_loop_factory(
    environ: Mapping[str, str] = os.environ,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else asyncio's (None).

    A service spends most of its CPU in the event loop (socket reads and writes, tasks,
    timers): uvloop does the same work in C. MAINSPRING_EVENT_LOOP=asyncio keeps the
    standard loop, for debugging or a platform uvloop does not support.
    """
    chosen = environ.get("MAINSPRING_EVENT_LOOP", "").strip().lower() or "uvloop"
    if chosen not in ("uvloop", "asyncio"):
        raise EventLoopConfigError(
            f"MAINSPRING_EVENT_LOOP={chosen!r}: choose uvloop (the default) or asyncio"
        )
    if chosen == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_service(app: FastStream, service: str) -> None:
    """Run a service until stopped; on a bus not set up, exit 2 with one line saying why."""
    configure_tracing(service)
    try:
        loop_factory = event_loop_factory()
    except EventLoopConfigError as exc:
        raise SystemExit(f"{service} cannot start: {exc}") from None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(app.run())
    except BaseException as exc:
        refused = _not_set_up(exc)
        if refused is None:
            raise
        log.error("%s cannot start: %s", service, refused)
        raise SystemExit(EXIT_NOT_SET_UP) from None
    finally:
        tracing.shutdown_tracing()


def _not_set_up(exc: BaseException) -> BusNotSetUp | None:
    # FastStream runs start-up hooks in a task group, which wraps what they raise.
    if isinstance(exc, BusNotSetUp):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _not_set_up(inner)
            if found is not None:
                return found
    return None


def durable(
    name: str,
    subject: str,
    *,
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 1000,
    deliver_new_only: bool = False,
    redelivery: RedeliveryPolicy | None = REDELIVERY,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Subscriber options for a durable pull consumer with explicit acks.

    Every durable is explicit-ack: a message is acked after its handler finished and
    nak'ed with a growing delay when it raised, so a crash or a transient fault redelivers
    it; after `redelivery.max_deliveries` failures it is dead-lettered. `redelivery=None`
    sets no limit, for a consumer whose naks are not failures (the runner's holds).

    `batch_size` > 1 fetches what is waiting, up to that many, in one pull request (a fetch
    returns at once with whatever is there), and handles them concurrently: give such a
    consumer's handler an `order_by` key (see `consumer`) when its messages must not race.
    Not FastStream's batch mode (`PullSub(batch=True)`): in 0.7 it keeps fetching until the
    batch is full or its timeout passed, so one event alone would wait out the timeout.
    """
    _POLICIES[name] = redelivery
    return {
        "subject": subject,
        "stream": STREAM,
        "durable": name,
        "pull_sub": PullSub(batch_size=batch_size, timeout=1.0),
        "config": ConsumerConfig(
            durable_name=name,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_ack_pending=max_ack_pending,
            max_deliver=redelivery.server_limit() if redelivery is not None else -1,
            filter_subject=subject,
            deliver_policy=NatsDeliverPolicy.NEW if deliver_new_only else NatsDeliverPolicy.ALL,
        ),
    }


def one_line(error: ValidationError) -> str:
    """A pydantic error as one readable line."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parsed_or_reason(message: NatsMessage, model: type[M]) -> M | str:
    """A message body as a valid `model`, or the one-line reason it is not one."""
    try:
        parsed = model.model_validate_json(message.body)
    except ValidationError as exc:
        return malformed_reason(model, message.raw_message.subject, exc)
    note_message(parsed)
    return parsed


async def parse_or_park(broker: NatsBroker, message: NatsMessage, model: type[M]) -> M | None:
    """Parse a message body, or park it on the dead-letter subject with the reason."""
    parsed = parsed_or_reason(message, model)
    if isinstance(parsed, str):
        await park_message(broker, message.raw_message, parsed)
        return None
    return parsed


def malformed_reason(model: type[BaseModel], subject: str, error: ValidationError) -> str:
    """Why a body is not a valid `model`, in one line naming who must fix it."""
    return f"malformed {model.__name__} on {subject}: {one_line(error)}; fix the producer"


async def park_message(
    broker: NatsBroker, raw: Msg, reason: str, deliveries: int | None = None
) -> None:
    """Park a consumed message as it came: its subject, body, stream sequence and headers."""
    await park(
        broker,
        raw.subject,
        raw.data,
        reason,
        stream_sequence(raw),
        original=raw.headers,
        deliveries=deliveries,
    )


async def park(
    broker: NatsBroker,
    subject: str,
    body: bytes,
    reason: str,
    sequence: int | None,
    *,
    original: Mapping[str, str] | None = None,
    deliveries: int | None = None,
) -> None:
    """Put a message that cannot be handled on the dead-letter subject, with the reason and
    its original headers (so a replay carries its trace and identity)."""
    log.error("%s; parked on %s", reason, subjects.dead_letter_subject(subject))
    metrics.parked(subject)
    body, headers = fit_dead_letter(
        body, dead_letter_headers(reason, sequence, original, deliveries), max_payload(broker)
    )
    await broker.publish(
        body, subjects.dead_letter_subject(subject), headers=headers, stream=subjects.STREAM
    )


# nats-server's default max_payload, for a broker whose server has not said (a test broker).
DEFAULT_MAX_PAYLOAD = 1024 * 1024


def max_payload(broker: NatsBroker) -> int:
    """The largest message (headers and body) the connected server accepts."""
    announced = broker.connection.max_payload
    return announced if isinstance(announced, int) else DEFAULT_MAX_PAYLOAD


def stream_sequence(raw: Msg) -> int | None:
    """The stream sequence of a message consumed from JetStream (None for core NATS)."""
    try:
        return int(raw.metadata.sequence.stream)
    except (NotJSMessageError, AttributeError, TypeError, ValueError):
        return None


async def publish_event(
    broker: NatsBroker, event: Message, subject: str, message_id: str | None = None
) -> Any:
    """Publish a message on the stream with its deterministic Nats-Msg-Id when it has one
    (`message_id` instead of the event's own); the stream's acknowledgement."""
    headers = message_id_headers(event)
    if message_id is not None:
        headers["Nats-Msg-Id"] = message_id
    return await broker.publish(
        event.model_dump_json().encode(),
        subject,
        headers=headers,
        stream=subjects.stream_of(subject),
    )


Handler = Callable[[NatsMessage], Awaitable[None]]


def subscriber(
    broker: NatsBroker, *args: Any, **options: Any
) -> Callable[[Callable[[NatsMessage], Awaitable[R]]], Callable[[NatsMessage], Awaitable[R]]]:
    """`broker.subscriber` for a handler of the message itself, without a thread hop.

    FastStream hands a handler its `message: NatsMessage` through a synchronous context
    field, which fast_depends resolves on a worker thread: one thread hop per message, in
    every service's hot path (py-spy showed it in the dispatcher under the latency
    benchmark). What is registered here takes the decoded body, which our handlers do not
    use (they validate the raw body themselves), and reads the message from the broker's
    context in the handling task.
    """

    def register(
        handler: Callable[[NatsMessage], Awaitable[R]],
    ) -> Callable[[NatsMessage], Awaitable[R]]:
        async def handle(body: Any) -> R:
            return await handler(broker.context.get_local("message"))

        handle.__name__ = handler.__name__
        handle.__qualname__ = handler.__qualname__
        broker.subscriber(*args, **{"decoder": undecoded, **options})(handle)
        return handler

    return register


async def undecoded(message: StreamMessage[Any]) -> bytes:
    """The body as it came: FastStream's default decoder parses JSON before the handler runs,
    where a body nested too deep raises RecursionError, so the message failed (and came back
    for a quarter of an hour) instead of reaching the handler that parks it as malformed."""
    return message.body


TypedHandler = Callable[[M, NatsMessage], Awaitable[None]]


def consumer(
    broker: NatsBroker,
    model: type[M],
    *args: Any,
    order_by: Callable[[M], str] | None = None,
    **options: Any,
) -> Callable[[TypedHandler[M]], TypedHandler[M]]:
    """A subscriber of one message type: the handler gets a valid `model` and the message.

    A body that is not a valid `model` never reaches the handler: it is parked on the
    dead-letter subject with the reason and, from a stream, acknowledged (it is kept there
    now; redelivering it would park it again), whatever the subscriber's ack policy. Each
    message of a fetched batch is parsed, parked or handled on its own.

    `order_by`: messages with the same key are handled one after another in the order they
    were delivered (the rest of a batch runs alongside); see `turns.KeyedTurns`.
    """

    def register(handler: TypedHandler[M]) -> TypedHandler[M]:
        turns = KeyedTurns()

        async def handle_message(message: NatsMessage) -> None:
            parsed = parsed_or_reason(message, model)
            if isinstance(parsed, str):
                await park_message(broker, message.raw_message, parsed)
                if message.committed is None and is_stream_message(message):
                    await message.ack()
                return
            if order_by is None:
                await handler(parsed, message)
                return
            # The turn is taken before anything here waits: see turns.py.
            async with turns.turn(order_by(parsed)):
                await handler(parsed, message)

        handle_message.__name__ = handler.__name__
        handle_message.__qualname__ = handler.__qualname__
        subscriber(broker, *args, **options)(handle_message)
        return handler

    return register


def is_stream_message(message: NatsMessage) -> bool:
    """Was this delivered by a JetStream consumer (so it must be acknowledged)?"""
    return str(message.raw_message.reply or "").startswith("$JS.ACK")
