"""HTTP ingress for systems without a NATS client: the pure parts (auth, ids, validation).

The web service turns a POST into the same message a NATS client would publish, checked
against the same pydantic model, and answers once JetStream acknowledged it.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mainspring.contract import subjects
from mainspring.contract.messages import PRIORITIES, DatasetAppended, RunCompleted, SubmitRun

M = TypeVar("M", bound=BaseModel)

# Run ids derived from idempotency keys live in their own namespace, so a key can never
# produce the id of a run started any other way.
IDEMPOTENT_RUNS = uuid.uuid5(uuid.NAMESPACE_URL, "mainspring:http-run")
IDEMPOTENCY_KEY_MAX = 200
# What `POST /api/routines/NAME/runs` takes; anything else is refused, not ignored, so a
# misspelt field is an error instead of a run without it.
RUN_FIELDS = (
    "inputs",
    "labels",
    "attributes",
    "name",
    "description",
    "from_version",
    "to_version",
    "upstream_run_id",
    "payload",
    "priority",
)


class IngressError(ValueError):
    """A request the ingress refuses: the HTTP status and one line naming the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def authorized(token: str | None, authorization: str | None) -> bool:
    """Whether a request may pass: no token configured, or `Authorization: Bearer <token>`."""
    if not token:
        return True
    given = (authorization or "").removeprefix("Bearer ").strip()
    # Constant time: the answer must not tell how much of a guessed token was right.
    return hmac.compare_digest(given.encode(), token.encode())


def idempotent_run_id(routine: str, key: str) -> str:
    """The run id a key stands for: the same key for the same routine is the same run, forever."""
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise IngressError(
            400,
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters "
            "(a UUID is a good key)",
        )
    return str(uuid.uuid5(IDEMPOTENT_RUNS, f"{routine}\n{key}"))


def field_error(exc: ValidationError) -> str:
    """The first problem of a body, naming its field, in one line."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {where!r}: {first['msg']}{more}"


def _validated(model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise IngressError(400, "body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise IngressError(422, field_error(exc)) from None


def dataset_appended(body: Any) -> DatasetAppended:
    """`POST /api/events/dataset.appended`: the body is a DatasetAppended."""
    return _validated(DatasetAppended, body)


def external_completion(body: Any) -> tuple[RunCompleted, str, str]:
    """`POST /api/events/run.completed`: an external workflow's completion (`routine` names
    the workflow), with its subject and Nats-Msg-Id."""
    completed = _validated(RunCompleted, body)
    subject = subjects.external_completed_subject(completed.routine, completed.status)
    # Not RunCompleted's `completed:<run_id>`: an outside run id may equal a routine run's.
    message_id = f"external:{completed.routine}:{completed.run_id}"
    return completed, subject, message_id


def run_request(routine: str, body: Any, run_id: str, started_by: str) -> SubmitRun:
    """`POST /api/routines/NAME/runs`: the SubmitRun a body asks for (source `api`)."""
    if not isinstance(body, dict):
        raise IngressError(400, "body must be a JSON object")
    unknown = sorted(set(body) - set(RUN_FIELDS))
    if unknown:
        raise IngressError(
            422, f"field {unknown[0]!r} is not accepted: use {', '.join(RUN_FIELDS)}"
        )
    fields = dict(body)
    priority = fields.pop("priority", None)
    if priority is not None and priority not in PRIORITIES:
        raise IngressError(422, f"priority {priority!r}: use high, normal or low")
    return _validated(
        SubmitRun,
        {
            **fields,
            "options": {"priority": priority},
            "request_id": run_id,
            "routine": routine,
            "source": "api",
            "started_by": started_by,
        },
    )
