"""A message is refused before sending when nats-server would close the connection for it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mainspring.contract.messages import CancelRun, SubmitRun
from mainspring.runtime.service import MAX_SUBJECT_BYTES, PUBLISH_HEADROOM_BYTES, oversized

LIMIT = 1024 * 1024


@pytest.mark.parametrize(
    ("subject", "body", "headers", "why"),
    [
        ("run.submitted", b"{}", {"traceparent": "00-ab-cd-01"}, None),
        ("run.submitted", b"x" * (LIMIT - PUBLISH_HEADROOM_BYTES), {}, None),
        ("run.submitted", b"x" * LIMIT, {}, "more than the bus's max payload of 1048576 bytes"),
        ("run.submitted", b"x" * (LIMIT - 600), {"X-Big": "h" * 200}, "max payload"),
        (
            "run.completed." + "r" * MAX_SUBJECT_BYTES + ".failed",
            b"{}",
            {},
            "name in it is too long",
        ),
        ("run.submitted", "é" * (LIMIT // 2), {}, "max payload"),
    ],
)
def test_oversized_names_what_the_server_would_refuse(
    subject: str, body: bytes | str, headers: dict[str, str], why: str | None
) -> None:
    problem = oversized(subject, body, headers, LIMIT)
    if why is None:
        assert problem is None
    else:
        assert problem is not None
        assert why in problem
        assert "\n" not in problem


@pytest.mark.parametrize(
    ("routine", "valid"),
    [("r" * 1024, True), ("r" * 1025, False), ("é" * 170, True), ("é" * 171, False)],
)
def test_a_routine_name_must_fit_a_subject_token(routine: str, valid: bool) -> None:
    body = SubmitRun(request_id="a", routine="x").model_dump() | {"routine": routine}
    if valid:
        assert SubmitRun.model_validate(body).routine == routine
    else:
        with pytest.raises(ValidationError, match="as a subject token, more than the 1024"):
            SubmitRun.model_validate(body)


def test_a_run_id_must_fit_a_subject_token() -> None:
    with pytest.raises(ValidationError, match=r"run_id\n  Value error, 5000 bytes as a subject"):
        CancelRun.model_validate({"run_id": "x" * 5000})
