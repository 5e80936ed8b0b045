"""JSON log lines: one object a line naming the service, the run, the routine and the trace."""

from __future__ import annotations

import contextvars
import json
import logging
import sys

import pytest

from mainspring.base import log_format, tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("mainspring.runner", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_line_names_the_run_of_the_handled_message_and_its_trace() -> None:
    formatter = log_format.JsonFormatter("runner")

    def handle() -> str:
        log_format.about_run("run-1", "extract")
        with tracing.continuing(PARENT), tracing.span("execute"):
            return formatter.format(record("run %s completed"))

    line = contextvars.copy_context().run(handle)
    fields = json.loads(line)

    assert "\n" not in line
    assert fields["service"] == "runner"
    assert fields["run_id"] == "run-1"
    assert fields["routine"] == "extract"
    assert fields["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert len(fields["span_id"]) == 16
    assert fields["level"] == "INFO"


def test_outside_a_run_and_a_trace_the_fields_are_null() -> None:
    fields = json.loads(log_format.JsonFormatter("ticker").format(record("tick")))

    assert (fields["run_id"], fields["routine"], fields["trace_id"], fields["span_id"]) == (
        None,
        None,
        None,
        None,
    )


def test_explicit_extra_fields_win_over_the_context() -> None:
    line = log_format.JsonFormatter("dispatcher").format(record("x", run_id="r9", routine="load"))

    assert json.loads(line)["run_id"] == "r9"


def test_a_traceback_stays_on_the_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()

    line = log_format.JsonFormatter("recorder").format(failed)

    assert len(line.splitlines()) == 1
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_a_parsed_message_names_its_run() -> None:
    class Parsed:
        run_id = "r2"
        routine = "load"

    def handle() -> tuple[str | None, str | None]:
        log_format.note_message(Parsed())
        fields = log_format.json_fields(record("x"), "runner")
        return fields["run_id"], fields["routine"]

    assert contextvars.copy_context().run(handle) == ("r2", "load")


@pytest.mark.parametrize(("value", "chosen"), [("", "text"), ("JSON", "json"), ("text", "text")])
def test_the_format_setting(value: str, chosen: str) -> None:
    assert log_format.log_format({"MAINSPRING_LOG_FORMAT": value}) == chosen


def test_an_unknown_format_is_refused_with_the_choices() -> None:
    with pytest.raises(log_format.LogConfigError, match="use text or json"):
        log_format.log_format({"MAINSPRING_LOG_FORMAT": "yaml"})
