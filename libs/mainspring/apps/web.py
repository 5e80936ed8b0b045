"""`mainspring web`: a small web page to watch and control runs and routines, and HTTP
ingress (events and run requests) for systems without a NATS client.

Stdlib HTTP server in threads; each request is answered through one SDK client whose event
loop runs in a background thread, so the page sees exactly what the CLI sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from mainspring.apps.ingress import (
    IngressError,
    authorized,
    dataset_appended,
    external_completion,
    idempotent_run_id,
    run_request,
)
from mainspring.apps.status import runner_rows
from mainspring.base.settings import Settings
from mainspring.base.tracing import read_span_files, span_tree
from mainspring.client import Client, RunRefused
from mainspring.contract import subjects
from mainspring.contract.messages import RunLogged
from mainspring.contract.queries import RunQuery
from mainspring.sdk.routine import InputError, validate_inputs
from mainspring.storage.registry import RegistryError

T = TypeVar("T")


class LiveLogs:
    """The latest output of running runs, heard on `log.run.>`, for the run page.

    Bounded: the last LIVE_LOG_CHARS of each of the LIVE_LOG_RUNS runs heard from most
    recently. A finished run's page reads its stored log instead.
    """

    def __init__(self) -> None:
        self.tails: OrderedDict[str, str] = OrderedDict()

    def hear(self, piece: RunLogged) -> None:
        """Add a piece of a run's output."""
        tail = (self.tails.pop(piece.run_id, "") + piece.text)[-LIVE_LOG_CHARS:]
        self.tails[piece.run_id] = tail
        while len(self.tails) > LIVE_LOG_RUNS:
            self.tails.popitem(last=False)

    def tail(self, run_id: str) -> str:
        """What was heard of a run's output (its latest part)."""
        return self.tails.get(run_id, "")


LIVE_LOG_CHARS = 64 * 1024
LIVE_LOG_RUNS = 64


class ClientThread:
    """An SDK client living on its own event loop thread, callable from request threads."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="mainspring-web-loop"
        )
        self.thread.start()
        self.client: Client = self.call(Client.connect(settings))
        self.live_logs = LiveLogs()
        self.call(self._listen_to_logs())

    async def _listen_to_logs(self) -> None:
        async def on_piece(message: Msg) -> None:
            with contextlib.suppress(ValueError):
                self.live_logs.hear(RunLogged.model_validate_json(message.data))

        await self.client.nc.subscribe(subjects.RUN_LOG_ANY, cb=on_piece)

    def run_log(self, run_id: str) -> dict[str, Any]:
        """A run's stored log, else what was heard of it live."""
        stored = self.call(self.client.run_log(run_id))
        if stored is not None:
            return {"log": stored, "live": False}
        return {"log": self.live_logs.tail(run_id), "live": True}

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def routine_summary(definition: Any) -> dict[str, Any]:
    """What the page shows for a routine."""
    from mainspring.apps.present import describe_trigger, next_fire_text

    return {
        "name": definition.name,
        "trigger": describe_trigger(definition.trigger),
        "enabled": definition.enabled,
        "disabled_reason": definition.disabled_reason,
        "version": definition.version[:12],
        "entrypoint": definition.entrypoint,
        "inputs": {k: v.model_dump() for k, v in definition.inputs.items()},
        "next_fire_at": next_fire_text(definition),
        # The instance's routine, the methods the page's run form offers, its configuration.
        "routine": definition.blueprint,
        "methods": ["run", *sorted(definition.methods)],
        "config": definition.config,
    }


async def runs_compared(client: Client, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """`/api/runs/diff?a=ID&b=ID`: the two runs side by side, as `mainspring runs diff`."""
    from mainspring.apps.rundiff import artifact_statistics, compare_runs

    if not query.get("a") or not query.get("b"):
        return 400, {"error": "name the two runs: /api/runs/diff?a=RUN_ID&b=RUN_ID"}
    runs = [await client.get_run(query["a"]), await client.get_run(query["b"])]
    missing = [
        run_id for run_id, run in zip((query["a"], query["b"]), runs, strict=True) if not run
    ]
    if missing:
        return 404, {"error": f"run {missing[0]} is not recorded"}
    left, right = (run for run in runs if run is not None)
    root = client.settings.resolved_artifact_root()
    rows = compare_runs(
        left,
        right,
        await asyncio.to_thread(artifact_statistics, root, left),
        await asyncio.to_thread(artifact_statistics, root, right),
    )
    return 200, {"a": left["id"], "b": right["id"], "rows": [row.as_json() for row in rows]}


def run_trace(run: dict[str, Any] | None) -> dict[str, Any]:
    """The stored spans of a run's whole trace in tree order, for the page's waterfall."""
    trace_id = (run or {}).get("trace_id")
    if not trace_id:
        return {"trace_id": None, "spans": []}
    records = read_span_files(Settings().resolved_trace_dir(), str(trace_id))
    return {"trace_id": trace_id, "spans": span_tree(records)}


async def start_api_run(
    client: Client, routine: str, body: Any, key: str | None
) -> tuple[int, dict[str, Any]]:
    """`POST /api/routines/NAME/runs`: a new run (202), or the run a repeated key stands for (200).

    The run id is derived from the key, so a repeat finds its run in the history however
    late it comes; two requests racing before the first is recorded carry the same
    Nats-Msg-Id and the stream keeps one.
    """
    run_id = idempotent_run_id(routine, key) if key is not None else str(uuid.uuid4())
    if key is not None:
        existing = await client.get_run(run_id)
        if existing is not None:
            return 200, {"run_id": run_id, "status": existing["status"], "repeated": True}
    request = run_request(routine, body, run_id, started_by="http")
    definition = await (await client.store()).find(routine)
    if definition is None:
        raise IngressError(
            404,
            f"routine {routine!r} is not registered: create it with "
            f"`mainspring routine create DIR --name {routine}`",
        )
    # The dispatcher checks again (it decides); checked here too so the caller hears at once.
    validate_inputs(definition.input_specs(), request.inputs)
    async with acknowledged(subjects.RUN_SUBMITTED):
        await client.submit_request(request)
    return 202, {"run_id": run_id, "status": "created", "repeated": False}


async def publish_event(client: Client, kind: str, body: Any) -> dict[str, Any]:
    """`POST /api/events/KIND`: validate and publish; returns once JetStream stored it."""
    if kind == subjects.DATASET_APPENDED:
        appended = dataset_appended(body)
        subject, message_id, data = (
            subjects.DATASET_APPENDED,
            appended.message_id(),
            appended.model_dump_json(),
        )
    elif kind == subjects.RUN_COMPLETED:
        completed, subject, message_id = external_completion(body)
        data = completed.model_dump_json()
    else:
        raise IngressError(
            404,
            f"no event {kind!r}: post {subjects.DATASET_APPENDED} or {subjects.RUN_COMPLETED} "
            "(an external workflow's completion)",
        )
    async with acknowledged(subject):
        await client.publish(subject, data.encode(), message_id)
    return {"subject": subject, "message_id": message_id}


@contextlib.asynccontextmanager
async def acknowledged(subject: str) -> AsyncIterator[None]:
    """Turn a publish JetStream never acknowledged into a 503 that says where to look."""
    try:
        yield
    except NatsTimeoutError:
        # A subject the user may not publish is dropped by the server without a word to
        # the publisher: it looks exactly like a slow stream.
        raise IngressError(
            503,
            f"JetStream did not acknowledge {subject}: check that the web service's NATS user "
            "may publish it (deploy/nats/permissions.conf) and that `mainspring setup` ran",
        ) from None


def make_handler(bridge: ClientThread, token: str | None = None) -> type[BaseHTTPRequestHandler]:
    """The request handler bound to one client (every /api/ request needs `token` if set)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mainspring-web"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def send_json(self, status: int, payload: Any) -> None:
            body = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def refused(self, parts: list[str]) -> bool:
            """Answer 401 to an /api/ request without the token; True when it did."""
            if parts[:1] != ["api"] or authorized(token, self.headers.get("Authorization")):
                return False
            body = json.dumps(
                {
                    "error": "missing or wrong token: send `Authorization: Bearer <MAINSPRING_WEB_TOKEN>`"
                }
            ).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            if self.refused(parts):
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if not parts:
                    page = resources.files("mainspring.apps").joinpath("webpage.html").read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                elif parts == ["api", "runs"]:
                    run_query = RunQuery(
                        routine=query.get("routine") or None,
                        status=query.get("status") or None,
                        label=query.get("label") or None,
                        limit=int(query.get("limit", 100)),
                    )
                    self.send_json(200, {"runs": bridge.call(bridge.client.list_runs(run_query))})
                elif len(parts) == 4 and parts[:2] == ["api", "runs"] and parts[3] == "log":
                    self.send_json(200, bridge.run_log(parts[2]))
                elif len(parts) == 4 and parts[:2] == ["api", "runs"] and parts[3] == "trace":
                    self.send_json(200, run_trace(bridge.call(bridge.client.get_run(parts[2]))))
                elif parts == ["api", "runs", "diff"]:
                    status, answer = bridge.call(runs_compared(bridge.client, query))
                    self.send_json(status, answer)
                elif len(parts) == 3 and parts[:2] == ["api", "runs"]:
                    run = bridge.call(bridge.client.get_run(parts[2]))
                    self.send_json(200 if run else 404, {"run": run})
                elif parts == ["api", "runners"]:
                    runners = bridge.call(bridge.client.runners())
                    self.send_json(200, {"runners": runner_rows(runners, datetime.now(UTC))})
                elif parts == ["api", "routines"]:
                    store = bridge.call(bridge.client.store())
                    routines = bridge.call(store.list())
                    self.send_json(200, {"routines": [routine_summary(d) for d in routines]})
                elif len(parts) == 4 and parts[:2] == ["api", "routines"] and parts[3] == "events":
                    events = bridge.call(bridge.client.trigger_events(parts[2], 50))
                    self.send_json(200, {"events": events})
                else:
                    self.send_json(404, {"error": f"no such page {url.path}"})
            except Exception as exc:  # noqa: BLE001 - the page answers, never dies
                self.send_json(503, {"error": str(exc)})

        def do_POST(self) -> None:
            parts = [p for p in urlparse(self.path).path.split("/") if p]
            if self.refused(parts):
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self.send_json(400, {"error": "body is not JSON"})
                return
            client = bridge.client
            try:
                if len(parts) == 3 and parts[:2] == ["api", "events"]:
                    self.send_json(202, bridge.call(publish_event(client, parts[2], body)))
                elif len(parts) == 4 and parts[:2] == ["api", "routines"] and parts[3] == "runs":
                    key = self.headers.get("Idempotency-Key")
                    status, answer = bridge.call(start_api_run(client, parts[2], body, key))
                    self.send_json(status, answer)
                elif len(parts) == 4 and parts[:2] == ["api", "routines"] and parts[3] == "run":
                    # Started from the page (or a POST like it): a manual run, with the
                    # same event options as `mainspring run`.
                    run_id = bridge.call(
                        client.submit(
                            parts[2],
                            body.get("inputs") or {},
                            labels=body.get("labels") or [],
                            source="manual",
                            from_version=body.get("from_version"),
                            to_version=body.get("to_version"),
                            upstream=body.get("upstream"),
                            payload=body.get("payload"),
                            method=body.get("method") or "run",
                            priority=body.get("priority"),
                        )
                    )
                    # The dispatcher checks routine and inputs: its refusal is a 400.
                    bridge.call(client.dispatched(run_id))
                    self.send_json(202, {"run_id": run_id})
                elif (
                    len(parts) == 4
                    and parts[:2] == ["api", "routines"]
                    and parts[3] in ("enable", "disable")
                ):
                    bridge.call(
                        client.set_routine_enabled(
                            parts[2], parts[3] == "enable", body.get("reason")
                        )
                    )
                    self.send_json(200, {"ok": True})
                elif len(parts) == 4 and parts[:2] == ["api", "runs"] and parts[3] == "cancel":
                    bridge.call(client.cancel(parts[2]))
                    self.send_json(202, {"ok": True})
                else:
                    self.send_json(404, {"error": "no such action"})
            except IngressError as exc:
                self.send_json(exc.status, {"error": str(exc)})
            except (RegistryError, InputError, RunRefused, ValueError) as exc:
                self.send_json(400, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the page answers, never dies
                self.send_json(503, {"error": str(exc)})

    return Handler


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """Build the web server (call serve_forever on it)."""
    bridge = ClientThread(settings)
    return ThreadingHTTPServer((host, port), make_handler(bridge, settings.web_token))


def check_exposure(host: str, token: str | None) -> str | None:
    """Why the web service must not listen on `host` (None: it may)."""
    if token or host in ("127.0.0.1", "localhost", "::1"):
        return None
    return (
        f"--host {host} would let anyone on the network start runs: set MAINSPRING_WEB_TOKEN "
        "(clients then send `Authorization: Bearer <token>`) or keep --host 127.0.0.1"
    )
