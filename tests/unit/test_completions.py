"""The pure parts of following completions: filters, follower names, replay starts, lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.js.api import DeliverPolicy

from mainspring.client.completions import (
    FollowError,
    check_since,
    completion_filter,
    completion_line,
    follower_config,
    follower_name,
    parse_since,
    resume_mismatch,
)
from mainspring.contract.messages import RunCompleted
from mainspring.contract.subjects import run_completed_subject

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("routine", "status", "expected"),
    [
        (None, None, "run.completed.*.*"),
        ("embed", None, "run.completed.embed.*"),
        (None, "failed", "run.completed.*.failed"),
        ("a.b", "completed", "run.completed.a_2eb.completed"),
    ],
)
def test_filter_matches_the_subject_completions_are_published_on(
    routine: str | None, status: str | None, expected: str
) -> None:
    assert completion_filter(routine, status) == expected
    if routine and status:
        assert run_completed_subject(routine, status) == expected


def test_filter_refuses_a_status_that_never_ends_a_run() -> None:
    with pytest.raises(FollowError, match="status 'running': use one of cancelled, completed"):
        completion_filter(None, "running")


def test_durable_names_carry_the_prefix_subscribers_are_granted() -> None:
    assert follower_name("billing") == "follow-billing"
    assert follower_name("follow-billing") == "follow-billing"
    for bad in ("a.b", "a b", "x>", ""):
        with pytest.raises(FollowError, match="letters, digits"):
            follower_name(bad)


def test_since_inside_retention_only() -> None:
    assert check_since(NOW - timedelta(days=13), NOW) == NOW - timedelta(days=13)
    with pytest.raises(FollowError, match="14 days"):
        check_since(NOW - timedelta(days=15), NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", NOW - timedelta(minutes=90)),
        ("2d", NOW - timedelta(days=2)),
        ("2026-11-29T10:00+00:00", datetime(2026, 11, 29, 10, 0, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_parse_since_names_both_forms_on_bad_input() -> None:
    with pytest.raises(FollowError, match=r"ISO time .* or a duration ago"):
        parse_since("yesterday", NOW)
    with pytest.raises(FollowError, match="older than the stream keeps"):
        parse_since("30d", NOW)


def test_config_new_only_unless_since_and_inactivity_for_durables() -> None:
    live = follower_config("run.completed.*.*", "follow-x", None, timedelta(hours=2))
    assert live.deliver_policy == DeliverPolicy.NEW
    assert live.durable_name == "follow-x"
    assert live.inactive_threshold == 7200.0
    replay = follower_config("run.completed.*.*", None, NOW)
    assert replay.deliver_policy == DeliverPolicy.BY_START_TIME
    assert replay.opt_start_time == NOW
    assert replay.durable_name is None


def test_a_durable_resumes_only_its_own_selection() -> None:
    assert resume_mismatch("follow-x", "run.completed.a.*", "run.completed.a.*") is None
    why = resume_mismatch("follow-x", "run.completed.a.*", "run.completed.b.*")
    assert why is not None
    assert "another --durable name" in why


def test_completion_line() -> None:
    event = RunCompleted(
        run_id="r1",
        routine="embed",
        run_number=7,
        status="failed",
        error="ValueError: bad\ntraceback",
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=2.5),
    )
    assert completion_line(event) == (
        "2026-11-29T12:00:02+00:00 embed #7 failed r1 2.5s error: ValueError: bad"
    )


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--since", "yesterday"], "since 'yesterday': give an ISO time"),
        (["--since", "30d"], "older than the stream keeps completions (14 days)"),
        (["--durable", "a.b"], "durable name 'a.b': use letters, digits"),
    ],
)
def test_runs_follow_refuses_a_bad_selection_before_connecting(
    flags: list[str],
    error: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mainspring.apps.cli import main

    # Nothing listens here: reaching for the bus would be a different error.
    monkeypatch.setenv("MAINSPRING_NATS_URL", "nats://127.0.0.1:1")
    assert main(["runs", "follow", *flags]) == 2
    assert error in capsys.readouterr().err
