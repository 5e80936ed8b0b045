"""Classifying commit-log versions and counting their rows without reading data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mainspring.deltalog import HOP_KEY, RUN_ID_KEY, parse_commit


def commit_text(
    operation: str,
    parameters: dict[str, Any] | None = None,
    adds: list[int | None] | None = None,
    removes: int = 0,
    metrics: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    data_change: bool = True,
) -> str:
    """The JSON lines of one commit file."""
    info = {
        "timestamp": 1_700_000_000_000,
        "operation": operation,
        "operationParameters": parameters or {},
        "operationMetrics": metrics or {},
        **(custom or {}),
    }
    lines = [{"commitInfo": info}]
    for index, records in enumerate(adds or []):
        stats = json.dumps({"numRecords": records}) if records is not None else None
        lines.append(
            {
                "add": {
                    "path": f"part-{index}.parquet",
                    "partitionValues": {},
                    "size": 10,
                    "dataChange": data_change,
                    "stats": stats,
                }
            }
        )
    lines += [
        {"remove": {"path": f"old-{i}.parquet", "dataChange": data_change}} for i in range(removes)
    ]
    return "\n".join(json.dumps(line) for line in lines)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (commit_text("WRITE", {"mode": "Append"}, adds=[3]), "append"),
        (commit_text("WRITE", {"mode": "Append"}, adds=[3, 4]), "append"),
        (commit_text("WRITE", {"mode": "ErrorIfExists"}, adds=[2]), "append"),
        (commit_text("WRITE", {"mode": "ErrorIfExists"}), "create"),
        (commit_text("WRITE", {"mode": "Overwrite"}, adds=[1], removes=2), "overwrite"),
        (commit_text("WRITE", {"mode": "Overwrite"}, adds=[1]), "overwrite"),
        # An append-mode write that also removed files rewrote rows: not an append.
        (commit_text("WRITE", {"mode": "Append"}, adds=[1], removes=1), "overwrite"),
        (commit_text("STREAMING UPDATE", {"outputMode": "Append"}, adds=[5]), "append"),
        (
            commit_text("STREAMING UPDATE", {"outputMode": "Complete"}, adds=[5], removes=1),
            "overwrite",
        ),
        (commit_text("CREATE TABLE", {"mode": "ErrorIfExists"}), "create"),
        (commit_text("UPDATE", {"predicate": "id = 1"}, adds=[3], removes=1), "update"),
        (commit_text("DELETE", {"predicate": "id = 9"}, removes=1), "delete"),
        (commit_text("MERGE", {"predicate": "s.id = t.id"}, adds=[4], removes=1), "merge"),
        (commit_text("OPTIMIZE", {}, adds=[9], removes=3, data_change=False), "other"),
        (commit_text("SET TBLPROPERTIES", {}), "other"),
        (commit_text("RESTORE", {"version": 2}, adds=[1], removes=1), "overwrite"),
    ],
)
def test_classify(text: str, kind: str) -> None:
    assert parse_commit(7, text).kind == kind


@pytest.mark.parametrize(
    ("adds", "metrics", "records"),
    [
        ([3, 4], {}, 7),
        ([3, 4], {"num_added_rows": 99}, 7),  # stats win: they are per file
        ([3, None], {"num_added_rows": 9}, 9),  # a file without stats: trust the metrics
        ([None], {}, 0),
        ([], {"num_added_rows": 0}, 0),
    ],
)
def test_added_records_come_from_stats_else_metrics(
    adds: list[int | None], metrics: dict[str, Any], records: int
) -> None:
    commit = parse_commit(1, commit_text("WRITE", {"mode": "Append"}, adds=adds, metrics=metrics))
    assert commit.added_records == records


@pytest.mark.parametrize(
    ("custom", "hop", "run_id"),
    [
        ({}, 0, None),
        ({HOP_KEY: "3", RUN_ID_KEY: "r-1"}, 3, "r-1"),
        ({HOP_KEY: 2}, 2, None),
        ({HOP_KEY: "lots"}, 0, None),
        ({HOP_KEY: "-4"}, 0, None),
    ],
)
def test_hop_and_run_from_commit_metadata(
    custom: dict[str, Any], hop: int, run_id: str | None
) -> None:
    commit = parse_commit(1, commit_text("WRITE", {"mode": "Append"}, adds=[1], custom=custom))
    assert (commit.hop, commit.run_id) == (hop, run_id)
