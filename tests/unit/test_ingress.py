"""The pure parts of HTTP ingress: token checks, key-derived run ids, validation messages."""

from __future__ import annotations

import pytest

from mainspring.apps.ingress import (
    IngressError,
    authorized,
    dataset_appended,
    external_completion,
    idempotent_run_id,
    run_request,
)
from mainspring.apps.web import check_exposure


def test_token_is_required_only_when_set() -> None:
    assert authorized(None, None)
    assert authorized("s3cret", "Bearer s3cret")
    assert not authorized("s3cret", None)
    assert not authorized("s3cret", "Bearer s3cre")
    assert not authorized("s3cret", "s3cretx")


def test_a_key_is_one_run_per_routine_forever() -> None:
    first = idempotent_run_id("embed", "order-42")
    assert first == idempotent_run_id("embed", "order-42")
    assert first != idempotent_run_id("report", "order-42")
    assert first != idempotent_run_id("embed", "order-43")
    # Not splittable: "a" + "\nb" must not equal "a\n" + "b" across routine and key.
    assert idempotent_run_id("a", "b c") != idempotent_run_id("a b", "c")


@pytest.mark.parametrize("key", ["", "   ", "x" * 201, "line\nbreak"])
def test_a_bad_key_is_refused(key: str) -> None:
    with pytest.raises(IngressError, match="Idempotency-Key must be") as refused:
        idempotent_run_id("embed", key)
    assert refused.value.status == 400


def test_an_append_is_validated_naming_the_field() -> None:
    good = dataset_appended(
        {"dataset": "photos", "from_version": 4, "to_version": 6, "added_records": 120}
    )
    assert good.message_id() == "dataset:photos:4:6"
    with pytest.raises(IngressError, match="field 'added_records': Field required") as bad:
        dataset_appended({"dataset": "photos", "from_version": 4, "to_version": 6})
    assert bad.value.status == 422
    with pytest.raises(IngressError, match="body must be a JSON object"):
        dataset_appended([1, 2])


def test_an_external_completion_goes_to_its_own_root() -> None:
    completed, subject, message_id = external_completion(
        {"run_id": "etl-1", "routine": "nightly-etl", "status": "completed"}
    )
    assert subject == "external.completed.nightly-etl.completed"
    assert message_id == "external:nightly-etl:etl-1"
    assert completed.outputs == {}
    with pytest.raises(IngressError, match="field 'status'"):
        external_completion({"run_id": "etl-1", "routine": "nightly-etl", "status": "done"})


def test_a_run_request_takes_known_fields_only() -> None:
    request = run_request(
        "embed", {"inputs": {"n": 1}, "labels": ["x"], "attributes": {"team": "a"}}, "id-1", "http"
    )
    assert (request.request_id, request.routine, request.source) == ("id-1", "embed", "api")
    assert request.attributes == {"team": "a"}
    with pytest.raises(IngressError, match="field 'input' is not accepted: use inputs"):
        run_request("embed", {"input": {"n": 1}}, "id-1", "http")
    with pytest.raises(IngressError, match="field 'labels'"):
        run_request("embed", {"labels": "x"}, "id-1", "http")


def test_the_page_leaves_loopback_only_with_a_token() -> None:
    assert check_exposure("127.0.0.1", None) is None
    assert check_exposure("0.0.0.0", "s3cret") is None
    refusal = check_exposure("0.0.0.0", None)
    assert refusal is not None
    assert "MAINSPRING_WEB_TOKEN" in refusal


async def test_an_unacknowledged_publish_is_a_503_naming_the_likely_causes() -> None:
    from nats.errors import TimeoutError as NatsTimeoutError

    from mainspring.apps.web import acknowledged

    with pytest.raises(IngressError, match=r"may publish it .*permissions\.conf") as refused:
        async with acknowledged("external.completed.x.completed"):
            raise NatsTimeoutError
    assert refused.value.status == 503
