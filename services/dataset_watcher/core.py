"""Pure decisions of the dataset watcher: which versions to announce and how."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from mainspring.deltalog import COMMIT_FILE, DATASET_NAME, Commit
from mainspring.messages import DatasetAppended


def announcement(dataset: str, commit: Commit, table_records: int | None) -> DatasetAppended | None:
    """The `dataset.appended` for one version, or None when the version is not an append.

    Each append version is announced alone, as (version - 1, version]: the range, and so the
    Nats-Msg-Id, depends only on the version, never on how many versions a scan found.
    """
    if commit.kind != "append":
        return None
    return DatasetAppended(
        dataset=dataset,
        from_version=commit.version - 1,
        to_version=commit.version,
        added_records=commit.added_records,
        added_files=[f.path for f in commit.added],
        hop=commit.hop,
        parent_run_id=commit.run_id,
        table_records=table_records,
    )


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


def resume_after_gap(seen: int, available: list[int]) -> int | None:
    """When version seen+1 is gone from the log (cleaned up) but later ones exist, the last
    version to treat as seen so the watcher resumes at the oldest one still there."""
    later = [v for v in available if v > seen]
    if not later or seen + 1 in later:
        return None
    return min(later) - 1
