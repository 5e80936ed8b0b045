"""The dataset SDK on a local root: writes, the commit log it leaves, the rows an event yields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from mainspring.storage import datasets
from mainspring.storage.datasets import DatasetError


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "datasets")


def rows(first: int, count: int) -> dict[str, list[object]]:
    return {
        "id": list(range(first, first + count)),
        "text": [f"t{i}" for i in range(first, first + count)],
    }


def test_event_rows_are_exactly_the_appended_ones_in_exact_batches(root: str) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    datasets.append("photos", rows(0, 7), root=root)  # v1
    datasets.append("photos", rows(7, 7), root=root)  # v2
    datasets.update("photos", {"text": "upper(text)"}, root=root)  # v3: rewrites every file
    datasets.append("photos", rows(14, 7), root=root)  # v4
    datasets.overwrite_column("photos", "text", ["x"] * 21, root=root)  # v5
    datasets.append("photos", rows(21, 2), root=root)  # v6

    event = datasets.dataset_event(
        root, {"dataset": "photos", "from_version": 1, "to_version": 6, "added_records": 16}, 5
    )

    assert [b.num_rows for b in event] == [5, 5, 5, 1]
    assert pa.Table.from_batches(event.added_rows()).column("id").to_pylist() == list(range(7, 23))
    assert pa.Table.from_batches(event.added_rows()).column("text").to_pylist()[:2] == [
        "t7",
        "t8",
    ]  # as appended
    assert [v.kind for v in datasets.history("photos", root=root)] == [
        "append",
        "overwrite",
        "append",
        "update",
        "append",
        "append",
        "create",
    ]


def test_an_empty_range_yields_nothing(root: str) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    datasets.append("photos", rows(0, 3), root=root)
    datasets.update("photos", {"text": "'a'"}, root=root)
    event = datasets.dataset_event(
        root, {"dataset": "photos", "from_version": 1, "to_version": 2}, 3
    )
    assert list(event) == []
    assert event.added_rows() == []


def test_an_append_from_a_run_carries_its_run_and_hop(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    monkeypatch.setenv("MAINSPRING_RUN_ID", "run-42")
    monkeypatch.setenv("MAINSPRING_RUN_HOP", "3")
    datasets.append("photos", rows(0, 2), root=root)

    latest = datasets.history("photos", root=root)[0]
    assert (latest.kind, latest.hop, latest.run_id, latest.added_rows) == ("append", 3, "run-42", 2)


def test_appended_rows_are_cast_to_the_dataset_schema(root: str) -> None:
    datasets.create("photos", "id:int64,score:float64", root=root)
    datasets.append(
        "photos",
        pa.table({"score": pa.array([1], pa.int32()), "id": pa.array([5], pa.int32())}),
        root=root,
    )
    assert datasets.info("photos", root=root).rows == 1


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("id:integer", "unknown type 'integer'"),
        ("id", "is not name:type"),
        ("id:int64,", "is not name:type"),
        ("v:list<nope>", "unknown type 'nope'"),
    ],
)
def test_bad_schema_names_the_fix(schema: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as raised:
        datasets.parse_schema(schema)
    assert "\n" not in str(raised.value)


def test_errors_are_one_line_naming_the_fix(root: str, tmp_path: Path) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    (tmp_path / "bad.parquet").write_text("not parquet")
    (tmp_path / "rows.txt").write_text("1,2")
    cases: list[tuple[Callable[[], object], str]] = [
        (
            lambda: datasets.append("missing", rows(0, 1), root=root),
            "mainspring dataset create missing",
        ),
        (
            lambda: datasets.append("photos", {"idx": [1]}, root=root),
            "give columns id:int64, text:string",
        ),
        (
            lambda: datasets.append("photos", {"id": ["a"], "text": ["b"]}, root=root),
            "convert the columns",
        ),
        (
            lambda: datasets.append("photos", tmp_path / "bad.parquet", root=root),
            "check the file's format",
        ),
        (
            lambda: datasets.append("photos", tmp_path / "rows.txt", root=root),
            "use .parquet, .csv or .jsonl",
        ),
        (lambda: datasets.append("photos", tmp_path / "none.csv", root=root), "does not exist"),
        (lambda: datasets.create("photos", "id:int64", root=root), "already exists"),
        (lambda: datasets.create("../up", "id:int64", root=root), "is not allowed"),
        (lambda: datasets.update("photos", {"nope": "1"}, root=root), "has no column 'nope'"),
        (
            lambda: datasets.overwrite_column("photos", "text", ["a", "b"], root=root),
            "needs 0 values",
        ),
    ]
    for action, fix in cases:
        with pytest.raises(DatasetError) as raised:
            action()
        assert fix in str(raised.value)
        assert "\n" not in str(raised.value)


def test_event_rows_stream_file_by_file(root: str) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    for first in (0, 10, 20):
        datasets.append("photos", rows(first, 10), root=root)
    event = datasets.dataset_event(
        root, {"dataset": "photos", "from_version": 0, "to_version": 3}, 10
    )
    batches = iter(event)

    assert next(batches).column("id").to_pylist() == list(range(10))
    # The last file has not been opened yet: removing it now only fails when it is reached.
    last = datasets.appended_files(root, "photos", 2, 3)[0]
    (Path(root) / "photos" / last.path).unlink()
    assert next(batches).column("id").to_pylist() == list(range(10, 20))
    with pytest.raises(FileNotFoundError):
        next(batches)


def test_rows_a_merge_inserted_reach_only_events_that_ask_for_them(root: str) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    datasets.append("photos", rows(0, 2), root=root)  # v1
    table = DeltaTable(f"{root}/photos")
    table.merge(
        pa.table(rows(10, 2)), predicate="s.id = t.id", source_alias="s", target_alias="t"
    ).when_not_matched_insert_all().execute()  # v2: inserts only
    datasets.append("photos", rows(20, 1), root=root)  # v3
    event = {"dataset": "photos", "from_version": 0, "to_version": 3}

    appends_only = pa.Table.from_batches(datasets.dataset_event(root, event).added_rows())
    with_merges = pa.Table.from_batches(
        datasets.dataset_event(root, {**event, "merge_inserts": True}).added_rows()
    )

    assert appends_only.column("id").to_pylist() == [0, 1, 20]
    assert with_merges.column("id").to_pylist() == [0, 1, 10, 11, 20]
    assert datasets.history("photos", root=root)[1].kind == "merge"


def test_added_rows_are_record_batches_like_iterating_the_event(tmp_path: Path) -> None:
    root = str(tmp_path)
    datasets.create("photos", "id:int64,text:string", root=root)
    first = datasets.append("photos", {"id": [1, 2], "text": ["a", "b"]}, root=root)
    last = datasets.append("photos", {"id": [3], "text": ["c"]}, root=root)
    event = datasets.dataset_event(
        root,
        {"dataset": "photos", "from_version": first - 1, "to_version": last, "added_records": 3},
        batch_size=1024,
    )
    batches = event.added_rows()
    assert all(isinstance(batch, pa.RecordBatch) for batch in batches)
    assert [batch.to_pylist() for batch in batches] == [batch.to_pylist() for batch in event]
    assert sorted(row["id"] for batch in batches for row in batch.to_pylist()) == [1, 2, 3]


def test_append_returns_its_own_commits_version_among_other_writers(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets.create("photos", "id:int64,text:string", root=root)
    real_write = write_deltalake

    def between_two_other_writers(table: DeltaTable, data: pa.Table, **options: Any) -> None:
        other = DeltaTable(f"{root}/photos")
        real_write(other, pa.Table.from_pydict(rows(100, 1)), mode="append")  # v1
        real_write(table, data, **options)  # v2: ours, after a conflict-free retry
        real_write(other, pa.Table.from_pydict(rows(200, 1)), mode="append")  # v3

    monkeypatch.setattr(datasets, "write_deltalake", between_two_other_writers)

    assert datasets.append("photos", rows(0, 1), root=root) == 2
