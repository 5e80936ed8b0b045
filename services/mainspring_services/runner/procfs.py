"""What /proc says about a process: its children, resident memory and peak memory."""

from __future__ import annotations

import contextlib
from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """Direct children of a process, from every one of its threads."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return children


def live_descendants(pid: int) -> list[int]:
    """Every process below pid that has not exited (zombies are dead, only unreaped)."""
    found: list[int] = []
    frontier = child_pids(pid)
    while frontier:
        current = frontier.pop()
        try:
            state = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(current)
        frontier.extend(child_pids(current))
    return sorted(found)


def _status_bytes(pid: int, field: str) -> int:
    try:
        with Path(f"/proc/{pid}/status").open() as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 once it is gone)."""
    return _status_bytes(pid, "VmRSS:")


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory a process held since it started or since reset_peak_rss."""
    return _status_bytes(pid, "VmHWM:")


def reset_peak_rss(pid: int) -> None:
    """Start a process's peak resident memory afresh from what it holds now (Linux >= 4.0)."""
    with contextlib.suppress(OSError), Path(f"/proc/{pid}/clear_refs").open("w") as refs:
        refs.write("5")


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (a routine may fork workers)."""
    total, frontier, seen = 0, [pid], set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss_bytes(current)
        frontier.extend(child_pids(current))
    return total


def descendants_rss_bytes(pid: int) -> int:
    """Resident memory of everything below a process (0 once it is gone)."""
    return sum(tree_rss_bytes(child) for child in child_pids(pid))
