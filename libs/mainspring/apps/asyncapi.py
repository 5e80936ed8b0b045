"""The published contract: every subject on the bus, its message and who sends and receives it.

    python -m mainspring.apps.asyncapi > docs/asyncapi.json      (`just docs`)

The document is AsyncAPI 3.0, generated from the message models and the subject names in
code. It is built here rather than by `faststream docs gen` because FastStream sees only
each service's subscribers: our services publish through one traced helper, so FastStream
would not know who sends what, and our handlers validate the raw body themselves (one
malformed message is parked, not failed), so it would show every payload as untyped.
A unit test fails when docs/asyncapi.json differs from what this module generates.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mainspring.contract import subjects
from mainspring.contract.messages import (
    AuditRecorded,
    CancelRun,
    DatasetAppended,
    DatasetVersionsUnreadable,
    DeleteRuns,
    FireTrigger,
    PollCompleted,
    PollRequested,
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunLogged,
    RunProgressed,
    RunQueued,
    RunStarted,
    ScheduleFired,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.contract.queries import AuditQuery, RunLookup, RunQuery, TriggerEventsQuery

# Who sends and receives: the five services, the SDK/CLI/web client, and systems outside.
CLIENT = "client"
EXTERNAL = "external"


@dataclass(frozen=True)
class Channel:
    """One subject (or subject pattern) of the contract."""

    name: str
    address: str
    message: type[BaseModel] | None
    description: str
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    stored: bool = True
    parameters: tuple[str, ...] = ()


def _routine_status(root: str) -> str:
    return f"{root}.{{routine}}.{{status}}"


CHANNELS: tuple[Channel, ...] = (
    Channel(
        "datasetAppended",
        subjects.DATASET_APPENDED,
        DatasetAppended,
        "Rows were appended to a dataset (announced by the dataset watcher or by any system "
        "that writes datasets; its Nats-Msg-Id makes a repeated announcement a no-op).",
        ("dataset_watcher", EXTERNAL, "runner"),
        ("dispatcher",),
    ),
    Channel(
        "datasetUnreadable",
        subjects.dead_letter_subject(subjects.DATASET_APPENDED),
        DatasetVersionsUnreadable,
        "Dataset versions the watcher could not read: parked with the reason, later versions "
        "keep flowing.",
        ("dataset_watcher",),
        (CLIENT,),
    ),
    Channel(
        "scheduleFired",
        subjects.SCHEDULE_FIRED,
        ScheduleFired,
        "A schedule trigger's tick (one per routine and nominal time).",
        ("ticker",),
        ("dispatcher",),
    ),
    Channel(
        "pollRequested",
        subjects.POLL_REQUESTED,
        PollRequested,
        "A poll trigger ticked: a runner calls the routine's poll function.",
        ("ticker",),
        ("runner",),
    ),
    Channel(
        "pollCompleted",
        subjects.POLL_COMPLETED,
        PollCompleted,
        "What a poll function returned (a payload fires the routine, None skips).",
        ("runner",),
        ("dispatcher",),
    ),
    Channel(
        "runSubmitted",
        subjects.RUN_SUBMITTED,
        SubmitRun,
        "Someone asked for a run now (CLI, SDK, web page, HTTP).",
        (CLIENT,),
        ("dispatcher", "recorder"),
    ),
    Channel(
        "runRequested",
        subjects.RUN_REQUESTED,
        RequestRun,
        "The dispatcher's decision: this run must execute (the runners' work queue, a run of "
        "normal priority; Nats-Msg-Id run:<run id>).",
        ("dispatcher",),
        ("runner", "recorder"),
    ),
    Channel(
        "runRequestedHigh",
        subjects.RUN_REQUESTED_HIGH,
        RequestRun,
        "A run of high priority must execute: a runner with a free slot takes these before "
        "any on run.requested (Nats-Msg-Id run:<run id>).",
        ("dispatcher",),
        ("runner", "recorder"),
    ),
    Channel(
        "runRequestedLow",
        subjects.RUN_REQUESTED_LOW,
        RequestRun,
        "A run of low priority must execute: taken only when run.requested.high and "
        "run.requested hold none (Nats-Msg-Id run:<run id>).",
        ("dispatcher",),
        ("runner", "recorder"),
    ),
    Channel(
        "runHeld",
        f"{subjects.RUN_HELD}.{{routine}}",
        RequestRun,
        "A run of a routine with max_concurrent held by the dispatcher until a slot frees "
        "(Nats-Msg-Id held:<run id>); released onto the run.requested subject of its priority "
        "in arrival order.",
        ("dispatcher",),
        ("recorder",),
    ),
    Channel(
        "runInMemory",
        subjects.RUN_IN_MEMORY,
        RequestRun,
        "A run the dispatcher numbered and requested for execution in its caller's process.",
        ("dispatcher",),
        (CLIENT, "recorder"),
    ),
    Channel(
        "runInMemoryReported",
        subjects.RUN_IN_MEMORY_REPORTED,
        RunCompleted,
        "How an in-memory run ended, reported by its caller; the dispatcher settles it.",
        (CLIENT,),
        ("dispatcher",),
    ),
    Channel(
        "runStarted",
        subjects.RUN_STARTED,
        RunStarted,
        "A runner started an attempt of a run.",
        ("runner",),
        ("recorder",),
    ),
    Channel(
        "runQueued",
        subjects.RUN_QUEUED,
        RunQueued,
        "A run waits, and why (a free slot, memory, a retry's back-off).",
        ("dispatcher", "runner"),
        ("recorder",),
    ),
    Channel(
        "runProgress",
        subjects.RUN_PROGRESS,
        RunProgressed,
        "A running routine reported its progress (kept in its own short-lived stream "
        f"{subjects.PROGRESS_STREAM}).",
        ("runner", CLIENT),
        ("recorder",),
    ),
    Channel(
        "runCompleted",
        _routine_status(subjects.RUN_COMPLETED),
        RunCompleted,
        "How a run ended: completed, failed or cancelled. `routine` is the routine's name "
        "escaped to one subject token, so subscribers filter on the server, e.g. "
        "`run.completed.nightly.failed` or `run.completed.*.failed`.",
        ("runner", "dispatcher", "recorder"),
        ("dispatcher", "recorder", CLIENT),
        parameters=("routine", "status"),
    ),
    Channel(
        "externalCompleted",
        _routine_status(subjects.EXTERNAL_COMPLETED),
        RunCompleted,
        "A workflow outside Mainspring finished; `on_complete(workflow)` routines fire on it. "
        "Its own root, so a system allowed to report workflows cannot forge a routine's "
        "completion.",
        (EXTERNAL, CLIENT),
        ("dispatcher", "recorder"),
        parameters=("routine", "status"),
    ),
    Channel(
        "runCancel",
        subjects.RUN_CANCEL,
        CancelRun,
        "A command: cancel this run (the dispatcher marks it, the runner holding it stops it).",
        (CLIENT,),
        ("dispatcher", "runner"),
    ),
    Channel(
        "triggerRecorded",
        subjects.TRIGGER_RECORDED,
        TriggerRecorded,
        "A trigger fired, was skipped, failed or was blocked (the trigger history).",
        ("dispatcher",),
        ("recorder", "dispatcher"),
    ),
    Channel(
        "auditRecorded",
        subjects.AUDIT_RECORDED,
        AuditRecorded,
        "Someone enabled, disabled, deleted, cancelled, re-ran or reconfigured something: "
        "who, what, to which target, when and why (the audit trail).",
        (CLIENT,),
        ("recorder",),
    ),
    Channel(
        "triggerFire",
        subjects.TRIGGER_FIRE,
        FireTrigger,
        "Fire a named trigger now, with its default payload or the one given.",
        ("client",),
        ("dispatcher",),
    ),
    Channel(
        "runHeartbeat",
        subjects.RUN_HEARTBEAT,
        RunHeartbeat,
        "A runner still holds a running run (not stored: only the latest matters).",
        ("runner",),
        ("recorder",),
        stored=False,
    ),
    Channel(
        "runLog",
        f"{subjects.RUN_LOG}.{{run_id}}",
        RunLogged,
        "A piece of a running run's stdout and stderr, live (not stored; the whole log is "
        "kept in the artifact store when the run ends).",
        ("runner",),
        (CLIENT,),
        stored=False,
        parameters=("run_id",),
    ),
    Channel(
        "runsList",
        subjects.API_RUNS_LIST,
        RunQuery,
        "Request/reply: a page of runs matching the query, newest first, with the cursor of "
        "the next page.",
        (CLIENT,),
        ("recorder",),
        stored=False,
    ),
    Channel(
        "runsGet",
        subjects.API_RUNS_GET,
        RunLookup,
        "Request/reply: one run, asked by its id.",
        (CLIENT,),
        ("recorder",),
        stored=False,
    ),
    Channel(
        "runsDelete",
        subjects.API_RUNS_DELETE,
        DeleteRuns,
        "Request/reply: delete finished runs with their progress, logs and artifacts.",
        (CLIENT,),
        ("recorder",),
        stored=False,
    ),
    Channel(
        "triggerEvents",
        subjects.API_TRIGGER_EVENTS,
        TriggerEventsQuery,
        "Request/reply: a routine's latest trigger firings, newest first.",
        (CLIENT,),
        ("recorder",),
        stored=False,
    ),
    Channel(
        "auditList",
        subjects.API_AUDIT_LIST,
        AuditQuery,
        "Request/reply: the latest audit entries, newest first, of one routine if asked.",
        (CLIENT,),
        ("recorder",),
        stored=False,
    ),
    Channel(
        "deadLetters",
        f"{subjects.DEAD_LETTER_PREFIX}.>",
        None,
        "A message no service could accept, under deadletter.<its subject>, with the reason "
        "in the Mainspring-Error header and its body as it was.",
        ("dispatcher", "runner", "recorder", "dataset_watcher"),
        (CLIENT,),
    ),
)


def _schema(model: type[BaseModel] | None) -> dict[str, Any]:
    if model is None:
        return {"type": "object"}
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every channel, as a JSON-ready dict."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for channel in CHANNELS:
        message_name = channel.message.__name__ if channel.message else f"{channel.name}Body"
        messages[message_name] = {"name": message_name, "payload": _schema(channel.message)}
        if channel.message is not None:
            found = channel.message.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(found.pop("$defs", {}))
            schemas[channel.message.__name__] = found
        channels[channel.name] = {
            "address": channel.address,
            "description": channel.description
            + ("" if channel.stored else " Core NATS: not kept in the stream."),
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            **(
                {"parameters": {p: {"description": p} for p in channel.parameters}}
                if channel.parameters
                else {}
            ),
        }
        for action, parties in (("send", channel.senders), ("receive", channel.receivers)):
            for party in parties:
                operations[f"{party}_{action}_{channel.name}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel.name}"},
                    "summary": f"{party} {'sends' if action == 'send' else 'receives'}",
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Mainspring",
            "version": importlib.metadata.version("mainspring"),
            "description": "Subjects of the Mainspring bus (NATS JetStream stream "
            f"{subjects.STREAM}, run progress in {subjects.PROGRESS_STREAM}) and the message "
            "each carries.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def rendered() -> str:
    """The document as committed under docs/ (stable key order, trailing newline)."""
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"


def main() -> None:
    """Print the document."""
    sys.stdout.write(rendered())


if __name__ == "__main__":
    main()
