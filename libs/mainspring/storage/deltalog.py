"""Reading a Delta Lake commit log: one JSON file per version, classified without reading data.

Each committed version N of a table is `_delta_log/{N:020}.json`, written atomically (put if
absent), so a version whose file exists is complete. Its `add` and `remove` actions say what
it did to the table; its `commitInfo`, when there is one, names the operation. Row counts
come from the adds' stats, else the operation metrics, else the data files' parquet footers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

VersionKind = Literal[
    "create",
    "append",
    "empty",
    "overwrite",
    "update",
    "delete",
    "merge",
    "restore",
    "clone",
    "convert",
    "truncate",
    "compaction",
    "schema",
    "properties",
    "other",
]

# Custom commit metadata keys written by mainspring.storage.datasets.append from inside a run.
HOP_KEY = "mainspring.hop"
RUN_ID_KEY = "mainspring.run_id"

COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class UnreadableCommit(ValueError):
    """A version's commit file that cannot be understood (not JSON, an add without a path)."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"version {version}: {reason}")
        self.version = version
        self.reason = reason


@dataclass(frozen=True)
class AddedFile:
    """A data file added by a commit: rows from its stats (None if absent), rows its own
    deletion vector marks deleted, and its size in bytes (None if absent)."""

    path: str
    records: int | None
    partition_values: dict[str, str | None] = field(default_factory=dict)
    deleted_records: int = 0
    size: int | None = None


# Operations that never fire, whatever actions they carry: they rewrite, restore or copy rows
# that were already in some table (a CLONE or CONVERT adds files and removes none). Anything
# not named here is classified by its actions alone, so a new writer's spelling of an append
# (or no commitInfo at all) still fires.
_NAMED_KINDS: dict[str, VersionKind] = {
    "UPDATE": "update",
    "DELETE": "delete",
    "MERGE": "merge",
    "RESTORE": "restore",
    "CLONE": "clone",
    "SHALLOW CLONE": "clone",
    "DEEP CLONE": "clone",
    "CONVERT": "convert",
    "CONVERT TO DELTA": "convert",
    "TRUNCATE": "truncate",
    "OPTIMIZE": "compaction",
    "REORG": "compaction",
    "ZORDER": "compaction",
    "COMPUTE STATS": "compaction",
    "ROW TRACKING BACKFILL": "compaction",
    "ROW TRACKING UNBACKFILL": "compaction",
    "VACUUM START": "compaction",
    "VACUUM END": "compaction",
    "FSCK": "compaction",
    "CHECKPOINT": "other",
    "ADD COLUMNS": "schema",
    "CHANGE COLUMN": "schema",
    "CHANGE COLUMNS": "schema",
    "REPLACE COLUMNS": "schema",
    "RENAME COLUMN": "schema",
    "DROP COLUMNS": "schema",
    "UPGRADE SCHEMA": "schema",
    "ADD CONSTRAINT": "properties",
    "DROP CONSTRAINT": "properties",
    "SET TBLPROPERTIES": "properties",
    "UNSET TBLPROPERTIES": "properties",
    "UPGRADE PROTOCOL": "properties",
    "ADD FEATURE": "properties",
    "DROP FEATURE": "properties",
}

# Rows written, by writer: Spark and Trino (numOutputRows), delta-rs (num_added_rows).
_ADDED_ROWS_METRICS = ("numOutputRows", "num_added_rows", "numAddedRows")


@dataclass(frozen=True)
class Commit:
    """One version of a table as its commit log tells it."""

    version: int
    operation: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    added: list[AddedFile]
    removed_paths: list[str]
    custom: dict[str, Any]
    timestamp_ms: int | None = None
    # Files added or removed with dataChange=false: a rewrite of rows already there.
    rearranged_files: int = 0
    has_protocol: bool = False
    has_metadata: bool = False
    # metaData.id: a table deleted and created again under the same name gets a new one.
    table_id: str | None = None

    @property
    def kind(self) -> VersionKind:
        """What the version did to the table."""
        return classify(self)

    @property
    def added_records(self) -> int | None:
        """Rows added net of deletion vectors, from every added file's stats, else the
        operation metrics; None when neither tells (the data files' footers must)."""
        if not self.added:
            return 0
        deleted = sum(f.deleted_records for f in self.added)
        if all(f.records is not None for f in self.added):
            return max(0, sum(f.records or 0 for f in self.added) - deleted)
        for name in _ADDED_ROWS_METRICS:
            value = _as_int(self.metrics.get(name))
            if value is not None:
                return max(0, value - deleted)
        return None

    @property
    def inserts_by_merge(self) -> bool:
        """A MERGE that only inserted rows: never an append, but routines may opt in."""
        return (
            self.operation == "MERGE"
            and bool(self.added)
            and not self.removed_paths
            and not self.rearranged_files
        )

    @property
    def hop(self) -> int:
        """The hop count of the run that made this commit (0 when not made by a run)."""
        return max(0, _as_int(self.custom.get(HOP_KEY)) or 0)

    @property
    def run_id(self) -> str | None:
        """The run that made this commit, if one did."""
        value = self.custom.get(RUN_ID_KEY)
        return str(value) if value else None


_KNOWN_COMMIT_KEYS = frozenset(
    {
        "timestamp",
        "operation",
        "operationParameters",
        "operationMetrics",
        "readVersion",
        "engineInfo",
        "clientVersion",
        "isolationLevel",
        "isBlindAppend",
        "userMetadata",
        "txnId",
    }
)


def parse_commit(version: int, text: bytes | str) -> Commit:
    """A commit from the newline-delimited JSON actions of its log file.

    Writers differ (no commitInfo, stats as the string "null", unknown actions), so anything
    optional is read defensively; only a file that is not JSON, or an add or remove without
    a path, raises UnreadableCommit.
    """
    info: dict[str, Any] = {}
    added: list[AddedFile] = []
    removed: list[str] = []
    rearranged = 0
    has_protocol = has_metadata = False
    table_id: str | None = None
    try:
        lines = text.decode() if isinstance(text, bytes) else text
    except UnicodeDecodeError:
        raise UnreadableCommit(version, "the commit file is not UTF-8 text") from None
    for number, line in enumerate(lines.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError as exc:
            raise UnreadableCommit(version, f"line {number} is not JSON ({exc})") from None
        if not isinstance(action, dict):
            continue
        if isinstance(action.get("commitInfo"), dict):
            info = action["commitInfo"]
        elif "add" in action:
            add = _action_body(version, number, "add", action["add"])
            if add.get("dataChange", True) is False:
                rearranged += 1
            else:
                added.append(_added_file(add))
        elif "remove" in action:
            remove = _action_body(version, number, "remove", action["remove"])
            if remove.get("dataChange", True) is False:
                rearranged += 1
            else:
                removed.append(remove["path"])
        elif "protocol" in action:
            has_protocol = True
        elif "metaData" in action:
            has_metadata = True
            metadata = action["metaData"]
            if isinstance(metadata, dict) and isinstance(metadata.get("id"), str):
                table_id = metadata["id"]
    parameters = info.get("operationParameters")
    metrics = info.get("operationMetrics")
    return Commit(
        version=version,
        operation=str(info.get("operation") or "").upper(),
        parameters=parameters if isinstance(parameters, dict) else {},
        metrics=metrics if isinstance(metrics, dict) else {},
        added=added,
        removed_paths=removed,
        custom={k: v for k, v in info.items() if k not in _KNOWN_COMMIT_KEYS},
        timestamp_ms=_as_int(info.get("timestamp")),
        rearranged_files=rearranged,
        has_protocol=has_protocol,
        has_metadata=has_metadata,
        table_id=table_id,
    )


def _action_body(version: int, line: int, name: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"]:
        raise UnreadableCommit(version, f"line {line}: the {name} action has no file path")
    return body


def _added_file(add: dict[str, Any]) -> AddedFile:
    partition_values = add.get("partitionValues")
    deletion_vector = add.get("deletionVector")
    deleted = 0
    if isinstance(deletion_vector, dict):
        deleted = max(0, _as_int(deletion_vector.get("cardinality")) or 0)
    return AddedFile(
        path=add["path"],
        records=_stats_records(add.get("stats")),
        partition_values=dict(partition_values) if isinstance(partition_values, dict) else {},
        deleted_records=deleted,
        size=_as_int(add.get("size")),
    )


def _stats_records(stats: Any) -> int | None:
    """numRecords from an add's stats: a JSON string (Spark, delta-rs), rarely an object."""
    if isinstance(stats, str):
        try:
            stats = json.loads(stats)
        except ValueError:
            return None
    if not isinstance(stats, dict):
        return None
    records = _as_int(stats.get("numRecords"))
    return records if records is not None and records >= 0 else None


def _as_int(value: Any) -> int | None:
    """An integer from a number or a numeric string (Spark writes metrics as strings)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def classify(commit: Commit) -> VersionKind:
    """What a version did, from its actions first and its operation name second.

    A version that adds data files (dataChange true) and removes none is an append, whatever
    its writer called the operation, or when it named none; operations that copy or rewrite
    rows already in a table (MERGE, RESTORE, CLONE, CONVERT, ...) never are. A version that
    removes files rewrote or deleted rows, and one whose files all have dataChange=false
    (OPTIMIZE, compaction) rearranged rows: neither fires.
    """
    named = _NAMED_KINDS.get(commit.operation)
    if named is not None:
        return named
    if commit.removed_paths:
        # Removing every file a version touched, adding none: a delete or truncate by
        # another name; with adds it replaced rows (an overwrite, a replaceWhere, a DV).
        return "overwrite" if commit.added or _is_write(commit) else "delete"
    if commit.added:
        return "append"
    if commit.rearranged_files:
        return "compaction"
    if commit.version == 0 or (commit.has_metadata and "TABLE" in commit.operation):
        return "create"
    if commit.has_metadata:
        return "schema"
    if commit.has_protocol:
        return "properties"
    if not commit.operation or _is_write(commit):
        return "empty"
    return "other"


def _is_write(commit: Commit) -> bool:
    return commit.operation in ("WRITE", "STREAMING UPDATE") or "TABLE" in commit.operation


# --- the store --------------------------------------------------------------------------------


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and base path of a local path or an object-store URI."""
    if "://" in root and not root.startswith("file://"):
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path.rstrip("/")
    local = root.removeprefix("file://")
    return pafs.LocalFileSystem(), str(Path(local).resolve())


def is_local(root: str) -> bool:
    """Does the root live on this machine's file system (so file notifications work)?"""
    return "://" not in root or root.startswith("file://")


def table_uri(root: str, name: str) -> str:
    """Where dataset NAME lives: ROOT/NAME."""
    if is_local(root):
        return str(Path(root.removeprefix("file://")).resolve() / name)
    return f"{root.rstrip('/')}/{name}"


def commit_path(base: str, name: str, version: int) -> str:
    """The log file of one version of dataset NAME under a filesystem base path."""
    return f"{base}/{name}/_delta_log/{version:020d}.json"


def read_commit(fs: pafs.FileSystem, base: str, name: str, version: int) -> Commit | None:
    """One version's commit, or None when that version is not (yet) in the log."""
    try:
        with fs.open_input_stream(commit_path(base, name, version)) as stream:
            data = stream.read()
    except (FileNotFoundError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) or "not exist" in str(exc).lower():
            return None
        raise
    return parse_commit(version, data)


def table_identity(fs: pafs.FileSystem, base: str, name: str) -> str | None:
    """The metaData.id in version 0 of the table now at NAME (None when version 0 is gone
    from the log or cannot be read): a table deleted and created again gets a new one."""
    try:
        first = read_commit(fs, base, name, 0)
    except UnreadableCommit:
        return None
    return first.table_id if first is not None else None


def data_file_path(base: str, name: str, path: str) -> str:
    """Where an add action's (URL-encoded, relative or absolute) path is on the filesystem."""
    decoded = unquote(path)
    if "://" in decoded:
        # An absolute URI (shallow clones, some writers): pyarrow filesystems take the part
        # after the scheme (a local path, or bucket/key on an object store).
        return decoded.split("://", 1)[1]
    return f"{base}/{name}/{decoded}"


def footer_records(fs: pafs.FileSystem, base: str, name: str, path: str) -> int:
    """Rows in one data file, from its parquet footer alone (no data pages are read)."""
    with fs.open_input_file(data_file_path(base, name, path)) as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def count_added_records(fs: pafs.FileSystem, base: str, name: str, commit: Commit) -> int:
    """Rows a version added net of deletion vectors: from the log when it tells, else from
    the footers of the files whose stats are missing (never a partial sum of stats)."""
    known = commit.added_records
    if known is not None:
        return known
    total = 0
    for added in commit.added:
        records = added.records
        if records is None:
            records = footer_records(fs, base, name, added.path)
        total += max(0, records - added.deleted_records)
    return total


def counted_records(fs: pafs.FileSystem, base: str, name: str, commit: Commit) -> int:
    """count_added_records, with a data file that is gone or not parquet reported as an
    UnreadableCommit (it stays so); a store that did not answer is raised as it is.

    The watcher parks such a version and the run skips it: both decide with this function.
    """
    try:
        return count_added_records(fs, base, name, commit)
    except (OSError, pa.ArrowInvalid) as exc:
        gone = isinstance(exc, FileNotFoundError) or "not exist" in str(exc).lower()
        if isinstance(exc, OSError) and not gone:
            raise
        raise UnreadableCommit(
            commit.version, f"an added file's row count cannot be read: {exc}"
        ) from None


def log_versions(fs: pafs.FileSystem, base: str, name: str) -> list[int]:
    """Every version whose commit file is in the log, ascending (a listing: use sparingly)."""
    selector = pafs.FileSelector(f"{base}/{name}/_delta_log", allow_not_found=True)
    versions = []
    for info in fs.get_file_info(selector):
        match = COMMIT_FILE.match(info.base_name)
        if match and info.type == pafs.FileType.File:
            versions.append(int(match.group(1)))
    return sorted(versions)


def dataset_names(fs: pafs.FileSystem, base: str) -> list[str]:
    """The folders directly under the root that are Delta tables (they have a _delta_log)."""
    selector = pafs.FileSelector(base, allow_not_found=True)
    names = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory or not DATASET_NAME.match(info.base_name):
            continue
        log_dir = fs.get_file_info(f"{base}/{info.base_name}/_delta_log")
        if log_dir.type == pafs.FileType.Directory:
            names.append(info.base_name)
    return sorted(names)
