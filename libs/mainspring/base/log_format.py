"""Service log lines: plain text, or one JSON object a line (MAINSPRING_LOG_FORMAT=json).

A JSON line names the service, the run and routine the handled message is about, and the
trace and span ids, so a log search and a trace view meet on the same ids.
"""

from __future__ import annotations

import json
import logging
import os
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from mainspring.base import tracing

FORMATS = ("text", "json")

# The run the message being handled is about. Set where a message is parsed; an asyncio task
# started meanwhile (a runner's run) keeps it, since tasks copy the context they start in.
_current_run: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "mainspring_current_run", default=(None, None)
)


class LogConfigError(ValueError):
    """MAINSPRING_LOG_FORMAT names no format."""


def about_run(run_id: str | None, routine: str | None) -> None:
    """Say which run (and routine) the following log lines of this task are about."""
    _current_run.set((run_id, routine))


def note_message(parsed: Any) -> None:
    """Remember the run a parsed message is about, when it names one."""
    run_id = getattr(parsed, "run_id", None)
    routine = getattr(parsed, "routine", None)
    if isinstance(run_id, str) or isinstance(routine, str):
        _current_run.set(
            (
                run_id if isinstance(run_id, str) else None,
                routine if isinstance(routine, str) else None,
            )
        )


def log_format(environ: dict[str, str] | None = None) -> str:
    """The configured format; an unknown one is refused with the accepted values."""
    raw = (environ if environ is not None else os.environ).get("MAINSPRING_LOG_FORMAT", "text")
    chosen = raw.strip().lower() or "text"
    if chosen not in FORMATS:
        raise LogConfigError(f"MAINSPRING_LOG_FORMAT={raw!r}: use text or json")
    return chosen


def json_fields(record: logging.LogRecord, service: str) -> dict[str, Any]:
    """The fields of one JSON log line: explicit `extra=` values win over the context's."""
    run_id, routine = _current_run.get()
    ids = tracing.current_ids()
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "service": service,
        "logger": record.name,
        "message": record.getMessage(),
        "run_id": getattr(record, "run_id", run_id),
        "routine": getattr(record, "routine", routine),
        "trace_id": ids[0] if ids else None,
        "span_id": ids[1] if ids else None,
    }
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object a line; a traceback goes in `exception` (escaped, still one line)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        fields = json_fields(record, self.service)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str)
