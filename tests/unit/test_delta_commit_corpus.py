"""Commit files written by Spark, Databricks, delta-rs, Delta Kernel, Trino, Unity Catalog and
kafka-delta-ingest (their projects' own test data, see delta_commits/README.md), classified and
counted as the watcher does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mainspring.storage import datasets
from mainspring.storage.deltalog import count_added_records, filesystem, parse_commit

CORPUS = Path(__file__).parent / "delta_commits"
TABLES = Path(__file__).parent / "delta_tables"


def expectations() -> list[tuple[str, str, str]]:
    lines = (CORPUS / "expected.tsv").read_text().splitlines()
    return [
        (file, kind, rows)
        for file, kind, rows in (line.split("\t") for line in lines if not line.startswith("#"))
    ]


def version_of(file: str) -> int:
    return int(Path(file).name[:20])


@pytest.mark.parametrize(("file", "kind", "rows"), expectations(), ids=lambda v: str(v)[-70:])
def test_real_commit_is_classified_and_counted(file: str, kind: str, rows: str) -> None:
    commit = parse_commit(version_of(file), (CORPUS / file).read_bytes())

    assert commit.kind == kind
    if kind == "append":
        assert commit.added_records == (None if rows == "-" else int(rows))


def test_the_corpus_holds_every_file_it_lists_and_every_writer() -> None:
    listed = {file for file, _, _ in expectations()}
    stored = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.json")}
    assert listed == stored
    writers = {file.split("/")[1] for file in listed}
    assert writers >= {"delta", "delta-rs", "delta-kernel-rs", "trino", "unitycatalog"}
    assert "kafka-delta-ingest" in writers


def test_stats_and_operation_metrics_agree_where_a_writer_wrote_both() -> None:
    checked = 0
    for file, kind, _ in expectations():
        if kind != "append":
            continue
        text = (CORPUS / file).read_text()
        commit = parse_commit(version_of(file), text)
        metric = commit.metrics.get("numOutputRows")
        if metric is None or any(f.records is None for f in commit.added):
            continue
        assert sum(f.records or 0 for f in commit.added) == int(metric), file
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("version", [0, 1, 3])
def test_appends_without_stats_are_counted_from_the_parquet_footers(version: int) -> None:
    # Spark Delta 0.2 wrote no stats and no metrics: only the data files know.
    fs, base = filesystem(str(TABLES))
    text = (TABLES / "delta-0.2.0" / "_delta_log" / f"{version:020d}.json").read_text()
    commit = parse_commit(version, text)
    assert commit.kind == "append"
    assert commit.added_records is None

    rows_read = sum(pq.read_table(TABLES / "delta-0.2.0" / f.path).num_rows for f in commit.added)
    assert rows_read > 0
    assert count_added_records(fs, base, "delta-0.2.0", commit) == rows_read


def test_rows_of_appends_without_stats_reach_the_event() -> None:
    event = datasets.dataset_event(
        str(TABLES), {"dataset": "delta-0.2.0", "from_version": -1, "to_version": 3}, 100
    )
    expected = sum(
        pq.read_table(TABLES / "delta-0.2.0" / f.path).num_rows
        for f in datasets.appended_files(str(TABLES), "delta-0.2.0", -1, 3)
    )
    assert sum(batch.num_rows for batch in event.added_rows()) == expected


def test_a_later_deletion_vector_does_not_change_what_an_append_delivered() -> None:
    # Version 1 (a DELETE) marks rows 0 and 9 deleted; version 0's event is what it appended.
    event = datasets.dataset_event(
        str(TABLES), {"dataset": "table-with-dv-small", "from_version": -1, "to_version": 1}, 100
    )
    assert pa.Table.from_batches(event.added_rows()).column("value").to_pylist() == list(range(10))


def test_the_table_row_count_subtracts_deletion_vectors() -> None:
    from deltalake import DeltaTable

    table = DeltaTable(str(TABLES / "table-with-dv-small"))
    assert table.count() == 10  # deltalake's own count ignores the deletion vector
    assert datasets.table_records(table, str(TABLES), "table-with-dv-small") == 8


def test_an_append_whose_file_carries_a_deletion_vector_delivers_only_live_rows(
    tmp_path: Path,
) -> None:
    # A writer may commit a file with its deletion vector in one append: build that table
    # from the real data file and deletion vector, with version 0 adding both at once.
    table = tmp_path / "photos"
    shutil.copytree(TABLES / "table-with-dv-small", table)
    log = table / "_delta_log"
    create = (log / f"{0:020d}.json").read_text().splitlines()
    with_dv = next(
        json.loads(line)
        for line in (log / f"{1:020d}.json").read_text().splitlines()
        if '"add"' in line
    )
    (log / f"{1:020d}.json").unlink()
    (log / f"{0:020d}.json").write_text(
        "\n".join([*(line for line in create if '"add"' not in line), json.dumps(with_dv)]) + "\n"
    )

    fs, base = filesystem(str(tmp_path))
    commit = parse_commit(0, (log / f"{0:020d}.json").read_text())
    assert commit.kind == "append"
    assert count_added_records(fs, base, "photos", commit) == 8
    event = datasets.dataset_event(
        str(tmp_path), {"dataset": "photos", "from_version": -1, "to_version": 0}, 3
    )
    assert pa.Table.from_batches(event.added_rows()).column("value").to_pylist() == list(
        range(1, 9)
    )


def test_a_stat_less_append_whose_file_is_gone_is_skipped_as_the_watcher_skipped_it(
    tmp_path: Path,
) -> None:
    shutil.copytree(TABLES / "delta-0.2.0", tmp_path / "t")
    version_1 = datasets.appended_files(str(tmp_path), "t", 0, 1)
    kept = [f for f in datasets.appended_files(str(tmp_path), "t", -1, 3) if f not in version_1]
    (tmp_path / "t" / version_1[0].path).unlink()  # the whole version is then left out

    event = datasets.dataset_event(
        str(tmp_path), {"dataset": "t", "from_version": -1, "to_version": 3}, 100
    )

    expected = sum(pq.read_table(tmp_path / "t" / f.path).num_rows for f in kept)
    assert sum(batch.num_rows for batch in event.added_rows()) == expected
