"""The NATS users table: the shipped permissions.conf is generated from it, and it holds the
promises (no service manages streams, only the dispatcher requests runs, ...)."""

from __future__ import annotations

import pytest

from mainspring.contract import permissions, subjects
from mainspring.contract.permissions import SERVICE_USERS, USER_NAMES, subject_matches, user
from tests.harness import ROOT

COMMITTED = ROOT / "deploy" / "nats" / "permissions.conf"
STREAMS = (
    subjects.STREAM,
    subjects.PROGRESS_STREAM,
    "KV_run_ledger",
    "KV_routines",
    permissions.BUNDLES_STREAM,
)


def test_the_shipped_permissions_are_what_the_table_generates() -> None:
    assert COMMITTED.read_text() == permissions.rendered(), (
        "deploy/nats/permissions.conf is stale: run `just docs` and commit it"
    )


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("run.completed.>", "run.completed.a.failed", True),
        ("run.completed.>", "run.completed", False),
        ("$JS.API.STREAM.INFO.*", "$JS.API.STREAM.INFO.MAINSPRING", True),
        ("$JS.API.STREAM.INFO.*", "$JS.API.STREAM.INFO.MAINSPRING.x", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.b", "a.b.c", False),
    ],
)
def test_subject_matching_follows_nats(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@pytest.mark.parametrize("name", [n for n in USER_NAMES if n != "admin"])
@pytest.mark.parametrize("operation", ["DELETE", "PURGE", "UPDATE", "CREATE"])
def test_only_admin_manages_the_stream_and_buckets(name: str, operation: str) -> None:
    for stream in STREAMS:
        subject = f"$JS.API.STREAM.{operation}.{stream}"
        if (name, operation, stream) == ("client", "PURGE", permissions.BUNDLES_STREAM):
            continue  # the bundle sweep removes unused code: the bundle store, never the stream
        assert not user(name).may_publish(subject), f"{name} may publish {subject}"


@pytest.mark.parametrize("name", [n for n in USER_NAMES if n != "dispatcher"])
def test_only_the_dispatcher_requests_runs(name: str) -> None:
    assert user(name).may_publish(subjects.RUN_REQUESTED) is (name == "admin")


def test_the_dispatcher_may_read_the_requests_a_redelivered_trigger_looks_for() -> None:
    # The fence of a trigger redelivered past the duplicate window: direct gets by subject.
    assert user("dispatcher").may_publish(f"$JS.API.STREAM.MSG.GET.{subjects.STREAM}")


@pytest.mark.parametrize("name", ["client", "subscriber", "external"])
@pytest.mark.parametrize("durable", permissions.SERVICE_DURABLES)
def test_nobody_outside_a_service_touches_its_durables(name: str, durable: str) -> None:
    stream = permissions.durable_stream(durable)
    for subject in (
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.run.requested",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.DELETE.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.1.2.3.4.0",
    ):
        assert not user(name).may_publish(subject), f"{name} may publish {subject}"


def test_the_recorder_reads_progress_from_its_own_stream() -> None:
    recorder = user("recorder")
    durable = subjects.RECORDER_PROGRESS_CONSUMER
    for stream, allowed in ((subjects.PROGRESS_STREAM, True), (subjects.STREAM, False)):
        assert recorder.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}") is allowed
        assert recorder.may_publish(f"$JS.ACK.{stream}.{durable}.1.2.3.4.0") is allowed


def test_the_subscriber_only_creates_completion_followers() -> None:
    subscriber = user("subscriber")
    create = f"$JS.API.CONSUMER.CREATE.{subjects.STREAM}.follow-mine"

    assert subscriber.may_publish(f"{create}.run.completed.hello.failed")
    assert not subscriber.may_publish(f"{create}.run.requested")
    for subject in (subjects.RUN_SUBMITTED, subjects.RUN_CANCEL, "run.completed.hello.completed"):
        assert not subscriber.may_publish(subject)


def test_the_external_user_reports_workflows_never_a_routines_completion() -> None:
    external = user("external")

    assert external.may_publish("external.completed.etl.completed")
    assert external.may_publish(subjects.DATASET_APPENDED)
    assert not external.may_publish("run.completed.hello.completed")
    assert not any(p.startswith("$JS.API") for p in external.publish)


def test_every_service_has_a_user_and_none_is_unrestricted() -> None:
    for name in SERVICE_USERS:
        assert not user(name).unrestricted
        assert user(name).allow_responses


def test_an_unknown_user_is_named_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match="no NATS user 'nobody': the users are admin"):
        user("nobody")
