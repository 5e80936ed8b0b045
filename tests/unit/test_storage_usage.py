"""`mainspring status`: messages and bytes of the stream and each bucket, one line each."""

from __future__ import annotations

from mainspring.apps.present import storage_lines
from mainspring.apps.status import stream_usage

JSZ = {
    "account_details": [
        {
            "name": "$G",
            "stream_detail": [
                {
                    "name": "MAINSPRING",
                    "config": {"max_bytes": 2 * 2**30},
                    "state": {"messages": 1234, "bytes": 3 * 2**20},
                },
                {
                    "name": "KV_routines",
                    "config": {"max_bytes": 128 * 2**20},
                    "state": {"messages": 3, "bytes": 1536},
                },
                {"name": "OLD_UNBOUNDED", "config": {"max_bytes": -1}, "state": {}},
            ],
        }
    ]
}


def test_usage_of_every_stream_sorted_with_its_limit() -> None:
    assert stream_usage(JSZ) == [
        {"name": "KV_routines", "messages": 3, "bytes": 1536, "max_bytes": 128 * 2**20},
        {"name": "MAINSPRING", "messages": 1234, "bytes": 3 * 2**20, "max_bytes": 2 * 2**30},
        {"name": "OLD_UNBOUNDED", "messages": 0, "bytes": 0, "max_bytes": None},
    ]
    assert stream_usage({}) == []


def test_one_line_per_stream() -> None:
    assert storage_lines(stream_usage(JSZ)) == [
        "KV_routines    3 messages, 1.5KiB of 128.0MiB",
        "MAINSPRING     1,234 messages, 3.0MiB of 2.0GiB",
        "OLD_UNBOUNDED  0 messages, 0B of no limit",
    ]
