"""The watcher's pure decisions: what to announce, which datasets a notification touches."""

from __future__ import annotations

import pytest

from mainspring.storage.deltalog import HOP_KEY, RUN_ID_KEY, parse_commit
from mainspring_services.dataset_watcher import core
from tests.unit.test_deltalog import commit_text


def test_an_append_is_announced_alone_with_its_rows_files_and_hop() -> None:
    commit = parse_commit(
        5,
        commit_text(
            "WRITE", {"mode": "Append"}, adds=[30, 12], custom={HOP_KEY: "2", RUN_ID_KEY: "run-9"}
        ),
    )

    announced = core.announcement("photos", commit, 42, table_records=140)

    assert announced is not None
    assert (announced.from_version, announced.to_version) == (4, 5)
    assert announced.added_records == 42
    assert announced.added_files == ["part-0.parquet", "part-1.parquet"]
    assert (announced.hop, announced.parent_run_id) == (2, "run-9")
    assert announced.table_records == 140
    assert announced.message_id() == "dataset:photos:4:5"


@pytest.mark.parametrize(
    "text",
    [
        commit_text("UPDATE", {"predicate": "id = 1"}, adds=[3], removes=1),
        commit_text("WRITE", {"mode": "Overwrite"}, adds=[3], removes=1),
        commit_text("DELETE", {}, removes=1),
        commit_text("MERGE", {}, adds=[3], removes=1),
        commit_text("CREATE TABLE", {"mode": "ErrorIfExists"}, table=True),
    ],
)
def test_other_versions_are_not_announced(text: str) -> None:
    assert core.announcement("photos", parse_commit(3, text), 3, table_records=10) is None


@pytest.mark.parametrize(
    ("path", "is_commit"),
    [
        ("/data/photos/_delta_log/00000000000000000007.json", True),
        ("/data/photos/_delta_log/_commit_1234.json.tmp", False),
        ("/data/photos/_delta_log/00000000000000000010.checkpoint.parquet", False),
        ("/data/photos/part-0001.parquet", False),
        ("/data/photos/_delta_log/_last_checkpoint", False),
    ],
)
def test_is_commit_file(path: str, is_commit: bool) -> None:
    assert core.is_commit_file(path) is is_commit


def test_datasets_in_names_the_top_folders_under_the_root() -> None:
    paths = [
        "/data/photos/_delta_log/00000000000000000001.json",
        "/data/photos/_delta_log/00000000000000000002.json",
        "/data/notes/_delta_log/00000000000000000000.json",
        "/elsewhere/x/_delta_log/00000000000000000000.json",
        "/data/.hidden/_delta_log/00000000000000000000.json",
    ]
    assert core.datasets_in(paths, "/data") == {"photos", "notes"}


@pytest.mark.parametrize(
    ("seen", "available", "resume"),
    [
        (4, [0, 1, 2, 3, 4, 5], None),  # next version is there
        (5, [0, 1, 2, 3, 4, 5], None),  # nothing new
        (-1, [30, 31, 32], 29),  # versions 0..29 cleaned up before the watcher looked
        (10, [20, 21], 19),
        (10, [], None),
    ],
)
def test_resume_after_gap(seen: int, available: list[int], resume: int | None) -> None:
    assert core.resume_after_gap(seen, available) == resume


def test_an_unreadable_version_is_reported_once_as_its_own_range() -> None:
    report = core.unreadable("photos", 9, "line 2 is not JSON")
    assert (report.from_version, report.to_version, report.reason) == (8, 9, "line 2 is not JSON")
    assert report.message_id() == "dataset-unreadable:photos:8:9"


def test_versions_cleaned_from_the_log_are_reported_with_the_fix() -> None:
    report = core.cleaned_gap("photos", seen=3, resume=9)
    assert (report.from_version, report.to_version) == (3, 9)
    assert "versions 4..9 were removed" in report.reason
    assert "delta.logRetentionDuration" in report.reason


@pytest.mark.parametrize(
    ("known", "current", "recreated"),
    [
        (None, "t-1", False),  # first look at the dataset
        ("t-1", "t-1", False),
        ("t-1", None, False),  # version 0 cleaned from the log: nothing to compare
        ("t-1", "t-2", True),
    ],
)
def test_recreation_is_told_by_the_table_id_of_version_0(
    known: str | None, current: str | None, recreated: bool
) -> None:
    assert core.recreated(known, current) is recreated


def test_the_announcement_names_its_table_and_dedups_per_table() -> None:
    commit = parse_commit(0, commit_text("WRITE", {"mode": "Append"}, adds=[2], table=True))
    assert commit.table_id == "table-id"
    announced = core.announcement("photos", commit, 2, 2, commit.table_id)
    assert announced is not None
    assert announced.message_id() == "dataset:photos@table-id:-1:0"


def test_a_merge_that_only_inserted_is_announced_as_such() -> None:
    merge = parse_commit(4, commit_text("MERGE", {}, adds=[2]))
    announced = core.announcement("photos", merge, 2, 12)
    assert announced is not None
    assert announced.inserted_by_merge
    append = core.announcement("photos", parse_commit(5, commit_text("WRITE", {}, adds=[1])), 1, 13)
    assert append is not None
    assert not append.inserted_by_merge


APPEND_7 = commit_text("WRITE", {"mode": "Append"}, adds=[7])


def test_an_append_right_after_a_counted_version_adds_its_rows() -> None:
    assert core.rows_after((4, 100), parse_commit(5, APPEND_7), 7) == 107


@pytest.mark.parametrize(
    ("previous", "version", "text"),
    [
        (None, 5, APPEND_7),  # nothing counted yet (a restart)
        ((3, 100), 5, APPEND_7),  # a version between them was not counted
        ((4, 100), 5, commit_text("MERGE", {}, adds=[3], removes=1)),
        ((4, 100), 5, commit_text("WRITE", {"mode": "Overwrite"}, adds=[3], removes=2)),
        ((4, 100), 5, commit_text("OPTIMIZE", {}, adds=[9], removes=2, data_change=False)),
    ],
)
def test_rows_are_counted_from_the_table_unless_the_version_only_added_rows(
    previous: tuple[int, int] | None, version: int, text: str
) -> None:
    assert core.rows_after(previous, parse_commit(version, text), 3) is None
