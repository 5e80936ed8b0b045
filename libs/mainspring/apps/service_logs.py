"""The log files `mainspring up` keeps in its home, read for `mainspring logs`."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class NoSuchLog(LookupError):
    """No log file of that name in the home."""


def logs_folder(home: Path) -> Path:
    """Where `up` writes one log per part (nats-server, each service, web, up itself)."""
    return home / "logs"


def log_files(home: Path) -> dict[str, Path]:
    """Every log in the home by part name, sorted by name."""
    folder = logs_folder(home)
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.log"))}


def find_log(home: Path, name: str) -> Path:
    """The log of one part; `dataset-watcher` and `dataset_watcher` both work."""
    files = log_files(home)
    for candidate in (name, name.replace("-", "_"), name.replace("_", "-")):
        if candidate in files:
            return files[candidate]
    known = ", ".join(files) or "none yet"
    raise NoSuchLog(
        f"no log named {name!r} in {logs_folder(home.resolve())}: choose one of {known} "
        "(or set MAINSPRING_HOME to the home `mainspring up` used)"
    )


def last_lines(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last count lines before byte offset end (default: all), without holding the file."""
    kept: deque[bytes] = deque(maxlen=count)
    read = 0
    with path.open("rb") as handle:
        for line in handle:
            if end is not None and read + len(line) > end:
                break
            read += len(line)
            kept.append(line)
    return [line.decode(errors="replace").rstrip("\n") for line in kept]


@dataclass
class LogFollower:
    """Hands out the lines appended to some log files since it last looked."""

    paths: list[Path]
    offsets: dict[Path, int] = field(default_factory=dict)
    partial: dict[Path, str] = field(default_factory=dict)

    def skip_to_end(self) -> None:
        """Start after what the files hold now."""
        for path in self.paths:
            self.offsets[path] = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> Iterator[tuple[Path, str]]:
        """Whole lines written since the last call (a file cut shorter is read from its start)."""
        for path in self.paths:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            offset = self.offsets.get(path, 0)
            if size < offset:
                offset = 0
                self.partial.pop(path, None)
            if size == offset:
                continue
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset)
            self.offsets[path] = offset + len(chunk)
            text = self.partial.pop(path, "") + chunk.decode(errors="replace")
            *complete, rest = text.split("\n")
            if rest:
                self.partial[path] = rest
            for line in complete:
                yield path, line
