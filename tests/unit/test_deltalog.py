"""Classifying commit-log versions and counting their rows without reading data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mainspring.storage.deltalog import (
    HOP_KEY,
    RUN_ID_KEY,
    UnreadableCommit,
    count_added_records,
    data_file_path,
    filesystem,
    parse_commit,
)


def commit_text(
    operation: str,
    parameters: dict[str, Any] | None = None,
    adds: list[int | None] | None = None,
    removes: int = 0,
    metrics: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    data_change: bool = True,
    table: bool = False,
    metadata: bool = False,
    commit_info: bool = True,
    dv_cardinality: list[int] | None = None,
) -> str:
    """The JSON lines of one commit file (`table`: it creates the table, with protocol and
    metaData actions, as version 0 does)."""
    info = {
        "timestamp": 1_700_000_000_000,
        "operation": operation,
        "operationParameters": parameters or {},
        "operationMetrics": metrics or {},
        **(custom or {}),
    }
    lines: list[dict[str, Any]] = [{"commitInfo": info}] if commit_info else []
    if table:
        lines.append({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
    if table or metadata:
        lines.append({"metaData": {"id": "table-id", "schemaString": "{}"}})
    for index, records in enumerate(adds or []):
        stats = json.dumps({"numRecords": records}) if records is not None else None
        add: dict[str, Any] = {
            "path": f"part-{index}.parquet",
            "partitionValues": {},
            "size": 10,
            "dataChange": data_change,
            "stats": stats,
        }
        if dv_cardinality and dv_cardinality[index]:
            add["deletionVector"] = {"storageType": "u", "cardinality": dv_cardinality[index]}
        lines.append({"add": add})
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
        # A first write is an append however its writer spells it: nothing existed before.
        (commit_text("WRITE", {"mode": "Overwrite"}, adds=[1]), "append"),
        (commit_text("CREATE TABLE", {}, adds=[4], table=True), "append"),
        (commit_text("CREATE OR REPLACE TABLE AS SELECT", {}, adds=[4], table=True), "append"),
        (commit_text("STREAMING UPDATE", {"outputMode": "Append"}, adds=[5]), "append"),
        (commit_text("", {}, adds=[5]), "append"),  # delta-rs before 0.12 named no operation
        (commit_text("WRITE", {}, adds=[5], commit_info=False), "append"),  # no commitInfo
        (commit_text("COPY INTO", {}, adds=[5]), "append"),  # an operation never heard of
        (commit_text("WRITE", {"mode": "ErrorIfExists"}, table=True), "create"),
        (commit_text("CREATE TABLE", {"mode": "ErrorIfExists"}, table=True), "create"),
        (commit_text("WRITE", {"mode": "Append"}), "empty"),  # not "create" past version 0
        (commit_text("WRITE", {"mode": "Overwrite"}, adds=[1], removes=2), "overwrite"),
        (commit_text("WRITE", {"mode": "Overwrite"}, removes=2), "overwrite"),
        # An append-mode write that also removed files rewrote rows: not an append.
        (commit_text("WRITE", {"mode": "Append"}, adds=[1], removes=1), "overwrite"),
        (
            commit_text("STREAMING UPDATE", {"outputMode": "Complete"}, adds=[5], removes=1),
            "overwrite",
        ),
        (commit_text("UPDATE", {"predicate": "id = 1"}, adds=[3], removes=1), "update"),
        (commit_text("DELETE", {"predicate": "id = 9"}, removes=1), "delete"),
        (commit_text("", {}, removes=1), "delete"),
        (commit_text("MERGE", {"predicate": "s.id = t.id"}, adds=[4], removes=1), "merge"),
        (commit_text("MERGE", {"predicate": "s.id = t.id"}, adds=[4]), "merge"),  # inserts only
        (commit_text("OPTIMIZE", {}, adds=[9], removes=3, data_change=False), "compaction"),
        (commit_text("", {}, adds=[9], removes=3, data_change=False), "compaction"),
        (commit_text("SET TBLPROPERTIES", {}), "properties"),
        (commit_text("ADD COLUMNS", {}, metadata=True), "schema"),
        (commit_text("RESTORE", {"version": 2}, adds=[1], removes=1), "restore"),
        (commit_text("RESTORE", {"version": 2}, adds=[1]), "restore"),  # restores files only
        (commit_text("CLONE", {}, adds=[1], table=True), "clone"),
        (commit_text("CONVERT", {}, adds=[1], table=True), "convert"),
        (commit_text("TRUNCATE", {}, removes=2), "truncate"),
    ],
)
def test_classify(text: str, kind: str) -> None:
    version = 0 if '"protocol"' in text else 7
    assert parse_commit(version, text).kind == kind


@pytest.mark.parametrize(
    ("adds", "metrics", "records"),
    [
        ([3, 4], {}, 7),
        ([3, 4], {"num_added_rows": 99}, 7),  # stats win: they are per file
        ([3, None], {"num_added_rows": 9}, 9),  # a file without stats: trust the metrics
        ([3, None], {"numOutputRows": "9"}, 9),  # Spark writes its metrics as strings
        ([None], {}, None),  # nothing in the log says: the footers must
        ([3, None], {}, None),  # never a partial sum of stats
        ([], {"num_added_rows": 0}, 0),
    ],
)
def test_added_records_come_from_stats_else_metrics(
    adds: list[int | None], metrics: dict[str, Any], records: int | None
) -> None:
    commit = parse_commit(1, commit_text("WRITE", {"mode": "Append"}, adds=adds, metrics=metrics))
    assert commit.added_records == records


def test_deletion_vectors_on_added_files_are_subtracted() -> None:
    text = commit_text("WRITE", {"mode": "Append"}, adds=[10, 5], dv_cardinality=[2, 0])
    assert parse_commit(1, text).added_records == 13


@pytest.mark.parametrize(
    ("stats", "records"),
    [
        ('{"numRecords": 4}', 4),
        ("null", None),  # a writer that had no stats wrote the JSON string "null"
        ('"4"', None),
        ("[1, 2]", None),
        ("{not json", None),
        ('{"minValues": {}}', None),
        ('{"numRecords": "12"}', 12),
        ('{"numRecords": -1}', None),
        ({"numRecords": 6}, 6),  # an object rather than a string
        (None, None),
        (17, None),
    ],
)
def test_odd_stats_are_read_defensively(stats: Any, records: int | None) -> None:
    add = {"path": "a.parquet", "partitionValues": None, "dataChange": True, "stats": stats}
    text = "\n".join(json.dumps(line) for line in [{"commitInfo": 7}, {"add": add}, {"txn": {}}])
    commit = parse_commit(3, text)
    assert commit.kind == "append"
    assert commit.added[0].records == records


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"add": {"path": "a.parquet"}}\n{"add": ', "line 2 is not JSON"),
        ('{"add": {"size": 3}}', "add action has no file path"),
        ('{"remove": "x"}', "remove action has no file path"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_commit_that_cannot_be_understood_says_why(text: str | bytes, reason: str) -> None:
    with pytest.raises(UnreadableCommit, match=reason):
        parse_commit(4, text)


def test_rows_without_stats_or_metrics_are_counted_from_the_parquet_footers(
    tmp_path: Path,
) -> None:
    table = tmp_path / "photos"
    table.mkdir()
    pq.write_table(pa.table({"id": list(range(11))}), table / "a b.parquet")
    pq.write_table(pa.table({"id": list(range(4))}), table / "c.parquet")
    add = {"path": "a%20b.parquet", "dataChange": True, "stats": None}
    with_dv = {
        "path": "c.parquet",
        "dataChange": True,
        "stats": "null",
        "deletionVector": {"storageType": "i", "cardinality": 1},
    }
    text = "\n".join(json.dumps({"add": a}) for a in (add, with_dv))
    commit = parse_commit(2, text)

    fs, base = filesystem(str(tmp_path))
    assert commit.added_records is None
    assert count_added_records(fs, base, "photos", commit) == 11 + 4 - 1


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


@pytest.mark.parametrize(
    ("text", "inserts_only"),
    [
        (commit_text("MERGE", {}, adds=[4]), True),
        (commit_text("MERGE", {}, adds=[4], removes=1), False),  # updated or deleted rows
        (commit_text("MERGE", {}), False),  # matched nothing
        (commit_text("WRITE", {"mode": "Append"}, adds=[4]), False),  # an append, not a merge
    ],
)
def test_a_merge_that_only_inserted_is_told_apart(text: str, inserts_only: bool) -> None:
    commit = parse_commit(3, text)
    assert commit.inserts_by_merge is inserts_only
    assert commit.kind != "append" or not inserts_only


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("part-0.parquet", "/data/photos/part-0.parquet"),
        ("p%3D1/part%200.parquet", "/data/photos/p=1/part 0.parquet"),  # URL-encoded
        ("file:///elsewhere/part-0.parquet", "/elsewhere/part-0.parquet"),
        ("s3://bucket/t/part-0.parquet", "bucket/t/part-0.parquet"),
    ],
)
def test_data_file_paths_resolve_like_the_writers_meant(path: str, where: str) -> None:
    assert data_file_path("/data", "photos", path) == where
