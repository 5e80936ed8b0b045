"""What `mainspring setup` declares and how a service words a bus that differs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nats.js.api import StorageType, StreamConfig

from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.runtime.bus import differences, refusal, requirements, stream_config

SETTINGS = Settings(nats_url="nats://unused", duplicate_window_s=600.0, stream_replicas=1)
[STREAM] = [r for r in requirements(SETTINGS) if r.stream == subjects.STREAM]
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
