"""A service's operations endpoint: /healthz, /readyz and Prometheus /metrics over HTTP.

It is served from the service's own event loop (asyncio.start_server), so /readyz reads
the live broker and the answer costs no thread; three fixed GET routes need no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("mainspring")

# A check returns None when fine, else a few words saying what is not ready.
ReadyCheck = Callable[[], Awaitable[str | None]]

MAX_REQUEST_BYTES = 8192


@dataclass(frozen=True)
class Reply:
    """One HTTP answer."""

    status: int
    content_type: str
    body: bytes


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def readiness(problems: Sequence[str]) -> Reply:
    """200 `ready`, or 503 with one problem a line."""
    if not problems:
        return Reply(200, "text/plain; charset=utf-8", b"ready\n")
    return Reply(503, "text/plain; charset=utf-8", "".join(f"{p}\n" for p in problems).encode())


def request_target(request_line: bytes) -> tuple[str, str] | None:
    """(method, path without query) of an HTTP request line, or None when it is not one."""
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return parts[0].upper(), parts[1].split("?", 1)[0]


def encode(reply: Reply) -> bytes:
    """The reply as HTTP/1.1 bytes; the connection closes after it."""
    head = (
        f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, '')}\r\n"
        f"Content-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + reply.body


class OpsServer:
    """Serves /healthz (the process answers), /readyz (every check passes) and /metrics."""

    def __init__(self, port: int, checks: Sequence[ReadyCheck], host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.checks = list(checks)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; a port already taken stops the service with the fix in one line."""
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise SystemExit(
                f"cannot serve /healthz, /readyz and /metrics on port {self.port} ({exc.strerror}): "
                "set MAINSPRING_HTTP_PORT to a free port, or unset it"
            ) from None

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def answer(self, method: str, path: str) -> Reply:
        """The reply to one request."""
        if method != "GET":
            return Reply(405, "text/plain", b"GET only\n")
        if path == "/healthz":
            return Reply(200, "text/plain; charset=utf-8", b"ok\n")
        if path == "/readyz":
            found = await asyncio.gather(*(check() for check in self.checks))
            return readiness([p for p in found if p])
        if path == "/metrics":
            return Reply(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        return Reply(404, "text/plain", b"try /healthz, /readyz or /metrics\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            target = request_target(head.split(b"\r\n", 1)[0][:MAX_REQUEST_BYTES])
            if target is not None:
                writer.write(encode(await self.answer(*target)))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a scanner or a client that went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
