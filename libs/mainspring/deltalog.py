"""Reading a Delta Lake commit log: one JSON file per version, classified without reading data.

Each committed version N of a table is `_delta_log/{N:020}.json`, written atomically (put if
absent), so a version whose file exists is complete. Its `commitInfo` says which operation
made it; its `add` actions name the data files and carry `numRecords` in their stats.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs

VersionKind = Literal["create", "append", "update", "overwrite", "delete", "merge", "other"]

# Custom commit metadata keys written by mainspring.datasets.append from inside a run.
HOP_KEY = "mainspring.hop"
RUN_ID_KEY = "mainspring.run_id"

COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class AddedFile:
    """A data file added by a commit, with its row count from the stats (None if absent)."""

    path: str
    records: int | None
    partition_values: dict[str, str | None] = field(default_factory=dict)


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

    @property
    def kind(self) -> VersionKind:
        """What the version did to the table."""
        return classify(self)

    @property
    def added_records(self) -> int:
        """Rows added, from the add actions' stats, else the commit's operation metrics."""
        if self.added and all(f.records is not None for f in self.added):
            return sum(f.records or 0 for f in self.added)
        for name in ("num_added_rows", "numOutputRows", "numAddedRows"):
            value = self.metrics.get(name)
            if value is not None:
                return int(value)
        return sum(f.records or 0 for f in self.added)

    @property
    def hop(self) -> int:
        """The hop count of the run that made this commit (0 when not made by a run)."""
        try:
            return max(0, int(self.custom.get(HOP_KEY, 0)))
        except (TypeError, ValueError):
            return 0

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
    """A commit from the newline-delimited JSON actions of its log file."""
    info: dict[str, Any] = {}
    added: list[AddedFile] = []
    removed: list[str] = []
    lines = text.decode() if isinstance(text, bytes) else text
    for line in lines.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "commitInfo" in action:
            info = action["commitInfo"] or {}
        elif "add" in action:
            add = action["add"]
            if add.get("dataChange", True):
                added.append(
                    AddedFile(
                        path=add["path"],
                        records=_stats_records(add.get("stats")),
                        partition_values=dict(add.get("partitionValues") or {}),
                    )
                )
        elif "remove" in action and action["remove"].get("dataChange", True):
            removed.append(action["remove"]["path"])
    parameters = info.get("operationParameters") or {}
    return Commit(
        version=version,
        operation=str(info.get("operation", "")).upper(),
        parameters=parameters if isinstance(parameters, dict) else {},
        metrics=info.get("operationMetrics") or {},
        added=added,
        removed_paths=removed,
        custom={k: v for k, v in info.items() if k not in _KNOWN_COMMIT_KEYS},
        timestamp_ms=info.get("timestamp"),
    )


def _stats_records(stats: Any) -> int | None:
    if not stats:
        return None
    try:
        value = json.loads(stats).get("numRecords") if isinstance(stats, str) else None
    except ValueError:
        return None
    return int(value) if value is not None else None


def _mode(commit: Commit) -> str:
    mode = commit.parameters.get("mode") or commit.parameters.get("outputMode") or ""
    return str(mode).replace("_", "").lower()


def classify(commit: Commit) -> VersionKind:
    """Append vs update/overwrite/delete/merge, from commitInfo.operation and its mode.

    Only a version that adds rows and removes none is an append: an append-mode write that
    also removed files (a replaceWhere, say) rewrote existing rows and must not fire.
    """
    operation = commit.operation
    mode = _mode(commit)
    if operation in ("WRITE", "STREAMING UPDATE", "CREATE TABLE AS SELECT"):
        if mode == "overwrite" or commit.removed_paths:
            return "overwrite"
        # ErrorIfExists/Ignore writes create the table with its first rows: nothing existed.
        if mode in ("append", "errorifexists", "ignore", "") or operation != "WRITE":
            return "append" if commit.added else "create"
        return "other"
    if operation in ("CREATE TABLE", "CREATE OR REPLACE TABLE", "REPLACE TABLE"):
        if commit.removed_paths:
            return "overwrite"
        return "create"
    if operation == "UPDATE":
        return "update"
    if operation == "DELETE":
        return "delete"
    if operation == "MERGE":
        return "merge"
    if operation == "RESTORE":
        return "overwrite"
    return "other"


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
