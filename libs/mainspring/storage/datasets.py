"""Datasets: Delta Lake tables under the dataset root (ROOT/NAME), so Spark, DuckDB and Polars
read the same data.

The registry of datasets is the root itself: every folder directly under it that holds a
`_delta_log` is a dataset. No second record can drift from the store, and a table that
Spark or Polars wrote there is watched just like one made with `mainspring dataset create`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, SchemaMismatchError, TableNotFoundError

from mainspring.base.settings import Settings
from mainspring.sdk.triggers import DatasetEvent
from mainspring.storage import deltalog

log = logging.getLogger("mainspring.storage.datasets")


class DatasetError(ValueError):
    """A dataset is missing, or a file or schema is wrong; the message names the fix."""


_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "float": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "str": pa.string(),
    "utf8": pa.string(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "date32": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as `dataset list` shows it."""

    name: str
    uri: str
    version: int
    rows: int
    columns: list[str]
    # Why the table does not load (then version is its last commit and rows and columns
    # are unknown); None for a readable table.
    error: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """One version of a dataset, from its commit log."""

    version: int
    at: datetime | None
    operation: str
    kind: str
    added_rows: int
    added_files: int
    removed_files: int
    hop: int
    run_id: str | None


def default_root() -> str:
    """The dataset root from MAINSPRING_DATASET_ROOT or home."""
    return Settings().resolved_dataset_root()


def check_name(name: str) -> str:
    """A dataset name usable as a folder and in bus keys."""
    if not deltalog.DATASET_NAME.match(name):
        raise DatasetError(
            f"dataset name {name!r} is not allowed: use letters, digits, '_', '-', '.' "
            "(starting with a letter or digit), e.g. photos"
        )
    return name


def parse_schema(text: str) -> pa.Schema:
    """`id:int64,text:string` (also `list<float32>`) as a pyarrow schema."""
    fields = []
    for part in text.split(","):
        column, sep, type_name = part.partition(":")
        column, type_name = column.strip(), type_name.strip().lower()
        if not sep or not column or not type_name:
            raise DatasetError(
                f"bad schema {text!r}: {part.strip()!r} is not name:type; write e.g. "
                "--schema 'id:int64,text:string'"
            )
        fields.append(pa.field(column, _parse_type(type_name, text)))
    return pa.schema(fields)


def _parse_type(type_name: str, text: str) -> pa.DataType:
    if type_name.startswith("list<") and type_name.endswith(">"):
        return pa.list_(_parse_type(type_name[5:-1].strip(), text))
    if type_name in _TYPES:
        return _TYPES[type_name]
    known = ", ".join(sorted(_TYPES))
    raise DatasetError(
        f"bad schema {text!r}: unknown type {type_name!r}; use one of {known} or list<TYPE>"
    )


def read_file(path: str | Path) -> pa.Table:
    """A .parquet, .csv or .jsonl (.json, .ndjson) file as a table."""
    file = Path(path)
    if not file.is_file():
        raise DatasetError(
            f"file {str(path)!r} does not exist: give a .parquet, .csv or .jsonl file"
        )
    suffix = file.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(file)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(file)
        if suffix in (".jsonl", ".ndjson", ".json"):
            import pyarrow.json as pjson

            return pjson.read_json(file)
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(
            f"cannot read {file.name} as {suffix[1:]}: {first}; check the file's format"
        ) from None
    raise DatasetError(
        f"file {file.name!r} has an unknown type {suffix or '(none)'}: use .parquet, .csv or .jsonl"
    )


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (str, Path)):
        return read_file(data)
    if isinstance(data, dict):
        return pa.table(data)
    if isinstance(data, list):
        return pa.Table.from_pylist(data)
    raise DatasetError(
        f"cannot write a {type(data).__name__}: give a pyarrow Table, a dict of columns, "
        "a list of row dicts or a file path"
    )


def _open(name: str, root: str) -> DeltaTable:
    uri = deltalog.table_uri(root, check_name(name))
    try:
        return DeltaTable(uri)
    except (TableNotFoundError, DeltaError, OSError) as exc:
        fs, base = deltalog.filesystem(root)
        if deltalog.log_versions(fs, base, name):
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatasetError(
                f"dataset {name!r} has a commit log that deltalake cannot load ({first}): "
                f"`mainspring dataset show {name}` names the unreadable version; rewrite it "
                "with the engine that wrote it"
            ) from None
        raise DatasetError(
            f"dataset {name!r} does not exist under {root}: create it with "
            f"`mainspring dataset create {name} --schema 'id:int64,text:string'`"
        ) from None


def _arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def _conform(data: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """The data's columns in the dataset's order and types, or a one-line error."""
    missing = [f.name for f in schema if f.name not in data.column_names]
    extra = [c for c in data.column_names if c not in schema.names]
    if missing or extra:
        expected = ", ".join(f"{f.name}:{f.type}" for f in schema)
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise DatasetError(f"rows do not fit dataset {name!r} ({what}): give columns {expected}")
    try:
        return data.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise DatasetError(
            f"rows do not fit dataset {name!r}: {first}; convert the columns to "
            + ", ".join(f"{f.name}:{f.type}" for f in schema)
        ) from None


def run_commit_properties() -> CommitProperties | None:
    """Commit metadata naming the run this process executes, so loop protection applies."""
    run_id = os.environ.get("MAINSPRING_RUN_ID")
    if not run_id:
        return None
    return CommitProperties(
        custom_metadata={
            deltalog.RUN_ID_KEY: run_id,
            deltalog.HOP_KEY: str(int(os.environ.get("MAINSPRING_RUN_HOP", "0") or 0)),
        }
    )


def create(
    name: str, schema: pa.Schema | str | None = None, data: Any = None, root: str | None = None
) -> DatasetInfo:
    """Create dataset NAME with a schema (or `id:int64,...` text), or from initial rows."""
    root = root or default_root()
    uri = deltalog.table_uri(root, check_name(name))
    if DeltaTable.is_deltatable(uri):
        raise DatasetError(
            f"dataset {name!r} already exists: append to it with `mainspring dataset append {name} FILE`"
        )
    if deltalog.is_local(root):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    arrow_schema = parse_schema(schema) if isinstance(schema, str) else schema
    if data is not None:
        table = _as_table(data)
        if arrow_schema is not None:
            table = _conform(table, arrow_schema, name)
        write_deltalake(uri, table, mode="error", commit_properties=run_commit_properties())
    elif arrow_schema is not None:
        DeltaTable.create(
            uri, arrow_schema, mode="error", commit_properties=run_commit_properties()
        )
    else:
        raise DatasetError(
            f"dataset {name!r} needs a schema or rows: --schema 'id:int64,text:string' or --from FILE"
        )
    if deltalog.is_local(root):
        share_with_group(Path(uri))
    return info(name, root)


def share_with_group(table_folder: Path) -> None:
    """Keep a new dataset appendable by the group its root is shared with.

    A root runner shares the local dataset root with its routines' user (group-owned,
    group-writable, setgid: see the runner's worker_user). Folders made below it inherit the
    group but not the write bit, so a dataset created by someone else (`mainspring dataset
    create` as root) would refuse a routine's append; an append adds files to the table's
    folder and its log only, so those two are opened to the group.
    """
    root_mode = table_folder.parent.stat().st_mode
    if not (root_mode & stat.S_ISGID and root_mode & stat.S_IWGRP):
        return
    for folder in (table_folder, table_folder / "_delta_log"):
        with contextlib.suppress(OSError):
            folder.chmod(stat.S_IMODE(folder.stat().st_mode) | stat.S_IRWXG | stat.S_ISGID)


def append(name: str, data: Any, root: str | None = None) -> int:
    """Append rows (a table, dict of columns, row dicts or a file) to NAME; returns the new version.

    Inside a run the commit carries the run id and hop, so a routine appending to the
    dataset it watches is stopped by max_hops instead of looping.
    """
    root = root or default_root()
    table = _open(name, root)
    rows = _conform(_as_table(data), _arrow_schema(table), name)
    try:
        write_deltalake(table, rows, mode="append", commit_properties=run_commit_properties())
    except SchemaMismatchError as exc:
        raise DatasetError(f"rows do not fit dataset {name!r}: {exc}") from None
    # The write leaves the table at its own commit. update_incremental() replayed the log
    # since the last checkpoint again (up to 15 ms at 99 commits past one) and could move
    # past our version to another writer's.
    return table.version()


def update(
    name: str, set_values: dict[str, str], where: str | None = None, root: str | None = None
) -> int:
    """UPDATE NAME SET col = SQL expression [WHERE predicate]; a new version that never fires."""
    if not set_values:
        raise DatasetError("nothing to update: give --set column=expression, e.g. --set score=0")
    table = _open(name, root or default_root())
    unknown = [c for c in set_values if c not in _arrow_schema(table).names]
    if unknown:
        raise DatasetError(
            f"dataset {name!r} has no column {unknown[0]!r}: columns are "
            + ", ".join(_arrow_schema(table).names)
        )
    try:
        table.update(updates=set_values, predicate=where, commit_properties=run_commit_properties())
    except (DeltaError, Exception) as exc:  # noqa: BLE001 - delta-rs raises many types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(
            f"cannot update dataset {name!r}: {first}; expressions are SQL, e.g. "
            "--set \"text=upper(text)\" --where 'id > 10'"
        ) from None
    return table.version()  # the update's own commit, as in append()


def overwrite_column(name: str, column: str, values: Any, root: str | None = None) -> int:
    """Replace one column's values in table order (rewrites the table: an overwrite, never fires)."""
    table = _open(name, root or default_root())
    current = table.to_pyarrow_table()
    schema = _arrow_schema(table)
    if column not in schema.names:
        raise DatasetError(
            f"dataset {name!r} has no column {column!r}: columns are {', '.join(schema.names)}"
        )
    if isinstance(values, pa.Table):
        if values.num_columns != 1:
            raise DatasetError(
                f"column values for {column!r} must be one column, got {values.num_columns}"
            )
        values = values.column(0)
    array = pa.array(values) if isinstance(values, list) else values
    if len(array) != current.num_rows:
        raise DatasetError(
            f"column {column!r} needs {current.num_rows} values (one per row), got {len(array)}"
        )
    try:
        new_column = pc.cast(array, schema.field(column).type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DatasetError(
            f"values for {column!r} do not convert to {schema.field(column).type}: {exc}"
        ) from None
    rewritten = current.set_column(schema.get_field_index(column), schema.field(column), new_column)
    write_deltalake(table, rewritten, mode="overwrite", commit_properties=run_commit_properties())
    return table.version()  # the write's own commit, as in append()


def info(name: str, root: str | None = None) -> DatasetInfo:
    """Name, location, version, row count (from the log's stats) and columns of a dataset."""
    root = root or default_root()
    table = _open(name, root)
    return DatasetInfo(
        name=name,
        uri=table.table_uri,
        version=table.version(),
        rows=table_records(table, root, name),
        columns=[f"{f.name}:{f.type}" for f in _arrow_schema(table)],
    )


def list_datasets(root: str | None = None) -> list[DatasetInfo]:
    """Every dataset under the root."""
    root = root or default_root()
    fs, base = deltalog.filesystem(root)
    found = []
    for name in deltalog.dataset_names(fs, base):
        try:
            found.append(info(name, root))
        except DatasetError as exc:
            # One table another engine left unreadable must not hide the others.
            last = max(deltalog.log_versions(fs, base, name), default=-1)
            uri = deltalog.table_uri(root, name)
            found.append(DatasetInfo(name, uri, last, 0, [], error=str(exc)))
    return found


def history(name: str, root: str | None = None) -> list[VersionInfo]:
    """Every version still in the log, newest first, with operation and row counts."""
    root = root or default_root()
    fs, base = deltalog.filesystem(root)
    if not deltalog.log_versions(fs, base, check_name(name)):
        _open(name, root)  # says the dataset does not exist, and how to create it
    versions = []
    for version in reversed(deltalog.log_versions(fs, base, name)):
        try:
            commit = deltalog.read_commit(fs, base, name, version)
        except deltalog.UnreadableCommit as exc:
            versions.append(VersionInfo(version, None, exc.reason, "unreadable", 0, 0, 0, 0, None))
            continue
        if commit is None:
            continue
        versions.append(
            VersionInfo(
                version=version,
                at=(
                    datetime.fromtimestamp(commit.timestamp_ms / 1000, UTC)
                    if commit.timestamp_ms
                    else None
                ),
                operation=commit.operation
                + (f" ({commit.parameters['mode']})" if commit.parameters.get("mode") else ""),
                kind=commit.kind,
                added_rows=_added_rows(fs, base, name, commit),
                added_files=len(commit.added),
                removed_files=len(commit.removed_paths),
                hop=commit.hop,
                run_id=commit.run_id,
            )
        )
    return versions


def _added_rows(fs: Any, base: str, name: str, commit: deltalog.Commit) -> int:
    try:
        return deltalog.count_added_records(fs, base, name, commit)
    except OSError:
        # A data file already vacuumed away: the log's own figures are all that is left.
        return commit.added_records or 0


def current_state(name: str, root: str | None = None) -> tuple[int, int] | None:
    """(version, row count) of a dataset now, or None when it does not exist yet."""
    root = root or default_root()
    uri = deltalog.table_uri(root, check_name(name))
    if not DeltaTable.is_deltatable(uri):
        return None
    table = DeltaTable(uri)
    return table.version(), table_records(table, root, name)


# --- the rows of an append event ---------------------------------------------------------------


def appended_files(
    root: str, name: str, from_version: int, to_version: int
) -> list[deltalog.AddedFile]:
    """The data files added by append versions in (from_version, to_version], in commit order."""
    return [
        f for _, files in _appended_by_version(root, name, from_version, to_version) for f in files
    ]


def appended_records(
    root: str, name: str, from_version: int, to_version: int, merge_inserts: bool = False
) -> int:
    """Rows appended in (from_version, to_version], net of deletion vectors, from the log
    (footers only for files without stats)."""
    fs, base = deltalog.filesystem(root)
    total = 0
    for _, files in _appended_by_version(root, name, from_version, to_version, merge_inserts):
        for added in files:
            records = added.records
            if records is None:
                records = deltalog.footer_records(fs, base, name, added.path)
            total += max(0, records - added.deleted_records)
    return total


def _appended_by_version(
    root: str, name: str, from_version: int, to_version: int, merge_inserts: bool = False
) -> list[tuple[int, list[deltalog.AddedFile]]]:
    fs, base = deltalog.filesystem(root)
    appends: list[tuple[int, list[deltalog.AddedFile]]] = []
    oldest: int | None = None
    for version in range(from_version + 1, to_version + 1):
        try:
            commit = deltalog.read_commit(fs, base, name, version)
        except deltalog.UnreadableCommit as exc:
            # The watcher announced it as unreadable, never as an append: its rows were
            # never counted, so the event leaves them out rather than failing the run.
            log.warning("dataset %s %s; its rows are left out", name, exc)
            continue
        if commit is None:
            if oldest is None:
                oldest = min(deltalog.log_versions(fs, base, name), default=None)
            if oldest is not None and version < oldest:
                # Cleaned from the log after a checkpoint before it was read: the watcher
                # reported the gap; what the version added is no longer known.
                log.warning("dataset %s version %s is gone from the log; skipped", name, version)
                continue
            raise DatasetError(
                f"dataset {name!r} has no version {version} in its log under {root}: was it "
                "removed, or does MAINSPRING_DATASET_ROOT point elsewhere?"
            )
        if commit.kind == "append" or (merge_inserts and commit.inserts_by_merge):
            if commit.added_records is None:
                try:
                    # What the watcher could not count it parked, never announced: skip it
                    # the same way. (Files with stats are opened only when read below, so
                    # a file vacuumed after its append was announced still fails loudly.)
                    deltalog.counted_records(fs, base, name, commit)
                except deltalog.UnreadableCommit as exc:
                    log.warning("dataset %s %s; its rows are left out", name, exc)
                    continue
            appends.append((version, commit.added))
    return appends


def iter_appended(
    root: str,
    name: str,
    from_version: int,
    to_version: int,
    batch_size: int,
    merge_inserts: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The rows appended in (from_version, to_version], streamed file by file in batches of
    exactly batch_size rows (the last may be shorter); memory stays about two batches."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in _file_batches(root, name, from_version, to_version, batch_size, merge_inserts):
        if pending and batch.schema != pending[0].schema:
            # A file from before a schema change: hand out what we hold rather than mix schemas.
            yield _concat(pending)
            pending, pending_rows = [], 0
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= batch_size:
            combined = _concat(pending)
            yield combined.slice(0, batch_size)
            rest = combined.slice(batch_size)
            pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
    if pending_rows:
        yield _concat(pending)


def _file_batches(
    root: str, name: str, from_version: int, to_version: int, batch_size: int, merge_inserts: bool
) -> Iterator[pa.RecordBatch]:
    fs, base = deltalog.filesystem(root)
    versions = _appended_by_version(root, name, from_version, to_version, merge_inserts)
    for version, files in versions:
        masks = (
            _deletion_masks(root, name, version) if any(f.deleted_records for f in files) else {}
        )
        for added in files:
            path = deltalog.data_file_path(base, name, added.path)
            keep = _mask_of(masks, added.path)
            offset = 0
            with fs.open_input_file(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_size):
                    rows = batch.num_rows
                    if keep is not None:
                        batch = batch.filter(_keep_slice(keep, offset, rows))
                    offset += rows
                    yield _plain_types(_with_partition_values(batch, added.partition_values))


def _deletion_masks(root: str, name: str, version: int) -> dict[str, list[bool]]:
    """Keep masks (True = row kept) of the files with deletion vectors, as of one version.

    Read through deltalake at the append's own version, so rows deleted by a later version
    are still delivered: the event is what that version appended.
    """
    table = DeltaTable(deltalog.table_uri(root, name), version=version)
    masks: dict[str, list[bool]] = {}
    for batch in table.deletion_vectors():
        arrow = pa.record_batch(batch)
        paths = arrow.column("filepath").to_pylist()
        vectors = arrow.column("selection_vector").to_pylist()
        for file_uri, keep in zip(paths, vectors, strict=True):
            masks[unquote(str(file_uri))] = list(keep)
    return masks


def _mask_of(masks: dict[str, list[bool]], path: str) -> list[bool] | None:
    suffix = "/" + unquote(path).lstrip("/")
    for file_uri, keep in masks.items():
        if file_uri.endswith(suffix) or file_uri == unquote(path):
            return keep
    return None


def _keep_slice(keep: list[bool], offset: int, rows: int) -> pa.Array:
    # Rows past the end of a selection vector were never deleted.
    window = keep[offset : offset + rows]
    return pa.array(window + [True] * (rows - len(window)), pa.bool_())


def table_records(
    table: DeltaTable, root: str, name: str, footer_cache: dict[str, int] | None = None
) -> int:
    """Rows in a table at its loaded version: per file from the stats, else the parquet
    footer, less the rows its deletion vector removes. No data pages are read."""
    actions = table.get_add_actions()
    per_file: list[int | None] = actions.column("num_records").to_pylist()
    total = sum(records for records in per_file if records is not None)
    if None in per_file:
        fs, base = deltalog.filesystem(root)
        cache = footer_cache if footer_cache is not None else {}
        paths = actions.column("path").to_pylist()
        for path, records in zip(paths, per_file, strict=True):
            if records is None:
                if path not in cache:
                    cache[path] = deltalog.footer_records(fs, base, name, str(path))
                total += cache[path]
    if "deletionVectors" in (table.protocol().reader_features or []):
        for batch in table.deletion_vectors():
            for keep in pa.record_batch(batch).column("selection_vector").to_pylist():
                total -= sum(1 for kept in keep if not kept)
    return max(0, total)


_PLAIN: dict[pa.DataType, pa.DataType] = {
    pa.string_view(): pa.string(),
    pa.large_string(): pa.string(),
    pa.binary_view(): pa.binary(),
    pa.large_binary(): pa.binary(),
}


def _plain_types(batch: pa.RecordBatch) -> pa.RecordBatch:
    # Writers differ in string layout (delta-rs merges and Polars write views): one layout
    # keeps the files of one event in one schema.
    if not any(f.type in _PLAIN for f in batch.schema):
        return batch
    schema = pa.schema(
        [f.with_type(_PLAIN.get(f.type, f.type)) for f in batch.schema],
        metadata=batch.schema.metadata,
    )
    return batch.cast(schema)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def _with_partition_values(batch: pa.RecordBatch, values: dict[str, str | None]) -> pa.RecordBatch:
    # Partition columns live in the folder names, not in the files: add them back.
    for column, value in values.items():
        if column not in batch.schema.names:
            batch = batch.append_column(column, pa.array([value] * batch.num_rows, pa.string()))
    return batch


def dataset_event(root: str, event: dict[str, Any], batch_size: int = 1024) -> DatasetEvent:
    """The DatasetEvent a dataset-triggered run receives, reading rows lazily from the store."""
    name = str(event["dataset"])
    from_version = int(event["from_version"])
    to_version = int(event["to_version"])
    root = root or default_root()
    size = max(1, int(batch_size))
    merge_inserts = bool(event.get("merge_inserts", False))

    def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
        return iter_appended(
            root, name, from_version, to_version, max(1, batch_rows), merge_inserts
        )

    reader: Callable[[int], Iterator[pa.RecordBatch]] = batches
    added = event.get("added_records")
    if added is None:
        # A range asked for by hand: nobody announced it, so count it from the log.
        added = appended_records(root, name, from_version, to_version, merge_inserts)
    return DatasetEvent(
        dataset=name,
        from_version=from_version,
        to_version=to_version,
        added_records=int(added),
        batches=reader,
        batch_size=size,
    )
