"""What `mainspring setup` declares and how a service words a bus that differs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

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
        if name != subjects.STREAM:
            assert requirement.settings["discard"] == DiscardPolicy.NEW, name


def test_a_bus_set_up_with_other_limits_is_named_not_flipped() -> None:
    set_up_larger = stream_config(600.0, 1, max_bytes=4 * 2**30)

    assert differences(STREAM, set_up_larger) == [
        "stream MAINSPRING has max_bytes 4294967296.0, this version needs 2147483648.0"
    ]


def test_a_byte_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(nats_url="nats://unused", stream_max_bytes=0)
