"""What `mainspring setup` declares and how a service words a bus that differs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.permissions import subject_matches
from mainspring.runtime.bus import (
    differences,
    progress_stream_config,
    refusal,
    requirements,
    stream_config,
)

SETTINGS = Settings(nats_url="nats://unused", duplicate_window_s=600.0, stream_replicas=1)
[STREAM] = [r for r in requirements(SETTINGS) if r.stream == subjects.STREAM]
[PROGRESS] = [r for r in requirements(SETTINGS) if r.stream == subjects.PROGRESS_STREAM]
[LEASES] = [r for r in requirements(SETTINGS) if r.stream == f"KV_{subjects.LEASES_BUCKET}"]


def test_the_stream_as_setup_declares_it_fits() -> None:
    assert differences(STREAM, stream_config(600.0, 1)) == []


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"duplicate_window": 60.0}, "duplicate_window 60.0, this version needs 600.0"),
        ({"num_replicas": 3}, "num_replicas 3.0, this version needs 1.0"),
        ({"storage": StorageType.MEMORY}, "storage memory, this version needs file"),
        ({"subjects": ["run.>"]}, "subjects ['run.>'], this version needs"),
        ({"max_bytes": -1}, "max_bytes -1.0, this version needs 2147483648.0"),
        ({"discard": DiscardPolicy.NEW}, "discard new, this version needs old"),
    ],
)
def test_a_changed_stream_setting_is_named(change: dict[str, object], phrase: str) -> None:
    [found] = differences(STREAM, replace(stream_config(600.0, 1), **change))  # type: ignore[arg-type]

    assert found.startswith("stream MAINSPRING has ")
    assert phrase in found


def test_subject_order_is_not_a_difference() -> None:
    reordered = replace(stream_config(600.0, 1), subjects=sorted(subjects.STREAM_SUBJECTS))

    assert differences(STREAM, reordered) == []


def test_a_bucket_ttl_the_server_answers_as_a_float_fits() -> None:
    answered = StreamConfig(
        name="KV_leases",
        max_msgs_per_subject=1,
        max_age=30,
        storage=StorageType.FILE,
        num_replicas=1,
        max_bytes=128 * 2**20,
        discard=DiscardPolicy.NEW,
    )

    assert differences(LEASES, answered) == []
    assert differences(LEASES, replace(answered, max_age=None)) == [
        "bucket leases has max_age 0.0, this version needs 30.0"
    ]


def test_a_missing_stream_and_the_refusal_line() -> None:
    found = differences(STREAM, None) + differences(LEASES, None)

    assert refusal(found) == (
        "stream MAINSPRING is missing (and 1 more): "
        "run `mainspring setup` (as an admin user in a deployment)"
    )
    assert refusal([]) is None


def test_setup_declares_every_bucket_the_services_bind() -> None:
    declared = {r.stream for r in requirements(SETTINGS)}

    assert declared >= {
        f"KV_{bucket}"
        for bucket in (
            subjects.ROUTINES_BUCKET,
            subjects.DISPATCH_BUCKET,
            subjects.TICKER_BUCKET,
            subjects.WATCHER_BUCKET,
            subjects.LEDGER_BUCKET,
            subjects.LEASES_BUCKET,
            subjects.STATE_BUCKET,
        )
    } | {f"OBJ_{subjects.BUNDLES_BUCKET}", subjects.STREAM}


def test_the_stream_drops_old_messages_and_buckets_refuse_new_writes_when_full() -> None:
    settings = Settings(
        nats_url="nats://unused",
        stream_max_bytes="3GiB",
        bucket_max_bytes="64MiB",
        ledger_max_bytes="512MiB",
        bundles_max_bytes=2**29,
    )
    by_stream = {r.stream: r for r in requirements(settings)}

    assert by_stream[subjects.STREAM].settings["max_bytes"] == 3 * 2**30
    assert by_stream[subjects.STREAM].settings["discard"] == DiscardPolicy.OLD
    assert by_stream[f"KV_{subjects.ROUTINES_BUCKET}"].settings["max_bytes"] == 64 * 2**20
    assert by_stream[f"KV_{subjects.LEASES_BUCKET}"].settings["max_bytes"] == 64 * 2**20
    assert by_stream[f"KV_{subjects.LEDGER_BUCKET}"].settings["max_bytes"] == 512 * 2**20
    assert by_stream[f"OBJ_{subjects.BUNDLES_BUCKET}"].settings["max_bytes"] == 2**29
    for name, requirement in by_stream.items():
        assert requirement.settings["max_bytes"] > 0, name
        if name not in (subjects.STREAM, subjects.PROGRESS_STREAM, f"KV_{subjects.LEDGER_BUCKET}"):
            assert requirement.settings["discard"] == DiscardPolicy.NEW, name
    # Full, the ledger forgets its oldest runs rather than refuse every new outcome.
    assert by_stream[f"KV_{subjects.LEDGER_BUCKET}"].settings["discard"] == DiscardPolicy.OLD


def test_a_bus_set_up_with_other_limits_is_named_not_flipped() -> None:
    set_up_larger = stream_config(600.0, 1, max_bytes=4 * 2**30)

    assert differences(STREAM, set_up_larger) == [
        "stream MAINSPRING has max_bytes 4294967296.0, this version needs 2147483648.0"
    ]


def test_a_byte_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(nats_url="nats://unused", stream_max_bytes=0)


def test_progress_has_its_own_short_lived_stream_with_its_own_limits() -> None:
    settings = Settings(
        nats_url="nats://unused", progress_max_age_s=1800, progress_max_bytes="64MiB"
    )
    [progress] = [r for r in requirements(settings) if r.stream == subjects.PROGRESS_STREAM]

    assert progress.settings == {
        "subjects": [subjects.RUN_PROGRESS],
        "retention": "limits",
        "storage": StorageType.FILE,
        "duplicate_window": 120.0,
        "max_age": 1800.0,
        "num_replicas": 1,
        "max_bytes": 64 * 2**20,
        "discard": DiscardPolicy.OLD,
    }
    assert PROGRESS.settings["max_age"] == 3600.0, "an hour unless settings say otherwise"
    assert PROGRESS.settings["max_bytes"] == 256 * 2**20


def test_a_progress_age_below_the_duplicate_window_shrinks_the_window() -> None:
    assert progress_stream_config(max_age_s=30.0).duplicate_window == 30.0


def test_no_subject_is_stored_in_two_streams_and_every_run_subject_in_one() -> None:
    main = STREAM.settings["subjects"]
    for subject in PROGRESS.settings["subjects"]:
        assert not any(subject_matches(pattern, subject) for pattern in main), subject
    run_subjects = [
        value
        for name, value in vars(subjects).items()
        if name.startswith("RUN_") and isinstance(value, str) and value.startswith("run.")
    ]
    assert len(run_subjects) >= 10
    for subject in run_subjects:
        concrete = subject.replace(">", "x")
        homes = [
            stream
            for stream in (STREAM, PROGRESS)
            if any(subject_matches(p, concrete) for p in stream.settings["subjects"])
        ]
        # run.completed and run.held alone are prefixes: their messages have more tokens.
        if subject in (subjects.RUN_COMPLETED, subjects.RUN_HELD):
            assert homes == [], subject
            continue
        assert len(homes) == 1, subject
        assert subjects.stream_of(concrete) == homes[0].stream, subject


def test_the_main_stream_comes_before_the_progress_stream_setup_moves_the_subject_into() -> None:
    order = [r.stream for r in requirements(SETTINGS)]

    assert order.index(subjects.STREAM) < order.index(subjects.PROGRESS_STREAM)


def test_a_main_stream_an_older_version_set_up_with_run_wildcard_is_named() -> None:
    older = replace(stream_config(600.0, 1), subjects=[*subjects.STREAM_SUBJECTS, "run.>"])

    [found] = differences(STREAM, older)
    assert found.startswith("stream MAINSPRING has subjects [")
