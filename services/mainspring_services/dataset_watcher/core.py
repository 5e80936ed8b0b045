"""Pure decisions of the dataset watcher: which versions to announce and how."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from mainspring.contract.messages import DatasetAppended, DatasetVersionsUnreadable
from mainspring.storage.deltalog import COMMIT_FILE, DATASET_NAME, Commit


def announcement(
    dataset: str,
    commit: Commit,
    added_records: int,
    table_records: int | None,
    table_id: str | None = None,
) -> DatasetAppended | None:
    """The `dataset.appended` for one version, or None when the version is not an append.

    Each append version is announced alone, as (version - 1, version]: the range, and so the
    Nats-Msg-Id, depends only on the version, never on how many versions a scan found.
    """
    if commit.kind != "append" and not commit.inserts_by_merge:
        return None
    return DatasetAppended(
        dataset=dataset,
        from_version=commit.version - 1,
        to_version=commit.version,
        added_records=added_records,
        added_files=[f.path for f in commit.added],
        hop=commit.hop,
        parent_run_id=commit.run_id,
        table_records=table_records,
        table_id=table_id,
        inserted_by_merge=commit.kind != "append",
    )


def rows_after(previous: tuple[int, int] | None, commit: Commit, added_records: int) -> int | None:
    """The table's rows after `commit`, from the rows after the version before it, when the
    commit only added rows; None when they must be counted from the table.

    `previous` is (version, rows). Loading a Delta table at each version replays the log
    since its last checkpoint (about 15 ms a version 99 commits after one, on this machine),
    so each append would cost more the longer its table's log; adding costs nothing. Files
    added with a deletion vector are already net in `added_records`; a version that removes
    or rearranges files (a delete, a MERGE, OPTIMIZE) is counted from the table.
    """
    if previous is None or previous[0] != commit.version - 1:
        return None
    if commit.removed_paths or commit.rearranged_files:
        return None
    return previous[1] + added_records


def is_commit_file(path: str) -> bool:
    """Is this path a version's commit file in some table's _delta_log?"""
    parts = PurePosixPath(path).parts
    return len(parts) >= 2 and parts[-2] == "_delta_log" and bool(COMMIT_FILE.match(parts[-1]))


def datasets_in(paths: Iterable[str], base: str) -> set[str]:
    """The datasets (folders directly under base) that a batch of changed paths touches."""
    found = set()
    root = PurePosixPath(base)
    for path in paths:
        try:
            relative = PurePosixPath(path).relative_to(root)
        except ValueError:
            continue
        if len(relative.parts) >= 1 and DATASET_NAME.match(relative.parts[0]):
            found.add(relative.parts[0])
    return found


def recreated(known_table: str | None, current_table: str | None) -> bool:
    """Was the dataset deleted and created again since its versions were last read? Version 0
    of the table now in its folder names another table than the one read before."""
    return known_table is not None and current_table is not None and known_table != current_table


def unreadable(dataset: str, version: int, reason: str) -> DatasetVersionsUnreadable:
    """The report of one version that cannot be read, so it is skipped instead of retried."""
    return DatasetVersionsUnreadable(
        dataset=dataset, from_version=version - 1, to_version=version, reason=reason
    )


def cleaned_gap(dataset: str, seen: int, resume: int) -> DatasetVersionsUnreadable:
    """The report of versions removed from the log (after a checkpoint) before they were read."""
    return DatasetVersionsUnreadable(
        dataset=dataset,
        from_version=seen,
        to_version=resume,
        reason=(
            f"versions {seen + 1}..{resume} were removed from the log (log retention after a "
            "checkpoint) before the watcher read them; their appends never fire: keep "
            "delta.logRetentionDuration longer than the watcher may be down"
        ),
    )


def resume_after_gap(seen: int, available: list[int]) -> int | None:
    """When version seen+1 is gone from the log (cleaned up) but later ones exist, the last
    version to treat as seen so the watcher resumes at the oldest one still there."""
    later = [v for v in available if v > seen]
    if not later or seen + 1 in later:
        return None
    return min(later) - 1
