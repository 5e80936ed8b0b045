"""Run artifacts on pyarrow.fs: data, metadata, and on request statistics and previews."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mainspring.contract.messages import ArtifactRef, RunOptions

PREVIEW_ROWS = 20


class ArtifactStoreError(OSError):
    """The artifact store could not be written: which store, why, and what to do, in one line."""


def store_failure(root: str, what: str, error: OSError) -> ArtifactStoreError:
    """The error for `what` not written under the artifact store `root`.

    pyarrow's message names only the deepest path it tried; a person needs the store's
    root, the setting that points there and the usual fixes.
    """
    # pyarrow puts its whole message in strerror; the errno's own words are the short why.
    why = os.strerror(error.errno) if error.errno else str(error).strip().split("\n")[0]
    return ArtifactStoreError(
        f"cannot write {what} to the artifact store at {root} ({type(error).__name__}: {why}): "
        "make MAINSPRING_ARTIFACT_ROOT a folder or object-store URI this runner can write, "
        "with free space",
    )


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path
    return pafs.LocalFileSystem(), str(Path(root).resolve())


def run_folder(root: str, run_id: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and folder of everything a run keeps: runs/{run_id}/ (artifacts, logs)."""
    fs, base = _filesystem(root)
    return fs, f"{base}/runs/{run_id}"


def run_location(root: str, run_id: str) -> str:
    """A run's folder written as its root is (a local path or an object-store URI)."""
    base = root.rstrip("/") if "://" in root else str(Path(root).resolve())
    return f"{base}/runs/{run_id}"


def delete_run_files(root: str, run_id: str) -> bool:
    """Remove a run's folder (artifacts and logs); False when it kept none."""
    fs, folder = run_folder(root, run_id)
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return False
    fs.delete_dir(folder)
    return True


def artifact_dir(root: str, run_id: str, name: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and folder of one artifact: runs/{run_id}/artifacts/{name}/."""
    fs, folder = run_folder(root, run_id)
    return fs, f"{folder}/artifacts/{name}"


def column_statistics(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Per column: count, nulls, min, max, mean (numeric), distinct estimate."""
    stats: dict[str, dict[str, Any]] = {}
    for name in table.column_names:
        column = table.column(name)
        entry: dict[str, Any] = {
            "count": len(column) - column.null_count,
            "nulls": column.null_count,
        }
        kind = column.type
        if (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_temporal(kind)
            or pa.types.is_string(kind)
        ):
            min_max = pc.min_max(column)
            entry["min"] = min_max["min"].as_py()
            entry["max"] = min_max["max"].as_py()
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            entry["mean"] = pc.mean(column).as_py()
        try:
            entry["distinct_estimate"] = pc.count_distinct(column).as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            entry["distinct_estimate"] = None
        stats[name] = entry
    return stats


def _write_json(fs: pafs.FileSystem, path: str, data: Any) -> None:
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(data, default=str, indent=2).encode())


def save_artifact(
    root: str,
    run_id: str,
    name: str,
    data: Any,
    *,
    options: RunOptions | None = None,
) -> ArtifactRef:
    """Save a pyarrow Table/RecordBatch or a file path as an artifact of a run, with the
    statistics and preview its run's options ask for (default: none)."""
    options = options or RunOptions()
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"artifact name {name!r} must be a plain name like 'scores'")
    fs, folder = artifact_dir(root, run_id, name)
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    metadata: dict[str, Any] = {
        "name": name,
        "run_id": run_id,
        "saved_at": datetime.now(UTC).isoformat(),
    }
    if isinstance(data, pa.Table):
        metadata.update(
            kind="table", rows=data.num_rows, schema=[f"{f.name}: {f.type}" for f in data.schema]
        )
        data_path, kind, rows = f"{folder}/data.parquet", "table", data.num_rows
    elif isinstance(data, (str, Path)) and Path(data).is_file():
        source = Path(data)
        metadata.update(kind="file", filename=source.name, size_bytes=source.stat().st_size)
        data_path, kind, rows = f"{folder}/{source.name}", "file", None
    else:
        raise TypeError(
            f"artifact {name!r}: save a pyarrow Table or a path to an existing file, not {type(data).__name__}"
        )
    if not options.store_artifacts:
        return ArtifactRef(name=name, uri="", kind=kind, rows=rows)
    try:
        fs.create_dir(folder, recursive=True)
        if isinstance(data, pa.Table):
            pq.write_table(data, data_path)
            if options.statistics:
                _write_json(fs, f"{folder}/statistics.json", column_statistics(data))
            if options.previews:
                _write_json(fs, f"{folder}/preview.json", data.slice(0, PREVIEW_ROWS).to_pylist())
        else:
            with fs.open_output_stream(data_path) as out:
                out.write(Path(data).read_bytes())
        _write_json(fs, f"{folder}/metadata.json", metadata)
    except OSError as exc:
        raise store_failure(root, f"artifact {name!r}", exc) from exc
    size = fs.get_file_info(data_path).size
    return ArtifactRef(name=name, uri=data_path, kind=kind, rows=rows, size_bytes=size)


def artifact_files(root: str, run_id: str, name: str) -> list[tuple[str, int]]:
    """The files stored for one artifact: (file name, size), data first."""
    fs, folder = artifact_dir(root, run_id, name)
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    files = [(Path(i.path).name, int(i.size or 0)) for i in infos if i.type == pafs.FileType.File]
    return sorted(files, key=lambda f: (f[0].endswith(".json"), f[0]))


def download_artifact(root: str, run_id: str, name: str, target: Path) -> Path:
    """Copy one artifact's folder (data, metadata, statistics, preview) to target/name."""
    fs, folder = artifact_dir(root, run_id, name)
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        raise FileNotFoundError(
            f"run {run_id} has no stored artifact {name!r}: list them with "
            f"`mainspring runs artifacts {run_id}`"
        )
    destination = (target / name).resolve()
    destination.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        folder,
        str(destination),
        source_filesystem=fs,
        destination_filesystem=pafs.LocalFileSystem(),
    )
    return destination
