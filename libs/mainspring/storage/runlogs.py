"""Run logs: a run's stdout and stderr, bounded, kept as one file in the artifact store.

A runner captures the output of each run as it happens (see services/mainspring_services/runner/child.py),
streams it live on `log.run.<id>` and, when the run ends, copies the file to
`runs/<id>/logs/output.log` in the artifact store, so any host can read it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from mainspring.storage.artifacts import run_folder, store_failure

LOG_NAME = "output.log"
# A run printing in a loop must not fill the runner's disk or the artifact store.
DEFAULT_MAX_BYTES = 4 * 2**20


class BoundedLog:
    """Keeps the first max_bytes of a run's output and counts what it cuts (no I/O)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.kept = 0
        self.dropped = 0

    def take(self, data: bytes) -> bytes:
        """The part of `data` that fits under the cap; the rest is counted as dropped."""
        room = max(0, self.max_bytes - self.kept)
        kept = data[:room]
        self.kept += len(kept)
        self.dropped += len(data) - len(kept)
        return kept

    def cut_marker(self) -> bytes:
        """The line that marks the cut at the end of the log (empty when nothing was cut)."""
        if not self.dropped:
            return b""
        return (
            f"\n[mainspring: output cut here: the log keeps the first {self.max_bytes} bytes; "
            f"{self.dropped} more were dropped (raise MAINSPRING_RUN_LOG_MAX_BYTES to keep more)]\n"
        ).encode()


def log_path(root: str, run_id: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path of a run's log file in the artifact store."""
    fs, folder = run_folder(root, run_id)
    return fs, f"{folder}/logs/{LOG_NAME}"


def store_log(root: str, run_id: str, local: Path) -> str | None:
    """Copy a run's local log file to the artifact store; its path there (None: no output)."""
    try:
        data = local.read_bytes()
    except FileNotFoundError:
        return None
    if not data:
        return None  # most runs print nothing: no empty file for each of them
    fs, path = log_path(root, run_id)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)
    except OSError as exc:
        raise store_failure(root, "the run's output", exc) from exc
    return path


def read_log(root: str, run_id: str) -> bytes | None:
    """A finished run's log from the artifact store (None: it kept none)."""
    fs, path = log_path(root, run_id)
    try:
        with fs.open_input_stream(path) as source:
            data: bytes = source.read()
            return data
    except FileNotFoundError:
        return None
