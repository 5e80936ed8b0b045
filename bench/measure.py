"""What every benchmark shares: one percentile, honest summaries, ratios, CPU and server counters.

A p99 is printed only from at least 1,000 samples; below that the summary says "max",
because a "p99" of 40 samples is just the largest one under another name.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mainspring.storage import deltalog

P99_MIN_SAMPLES = 1000
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def smoke() -> bool:
    """BENCH_SMOKE=1: a few seconds per figure, to prove the benchmark still works (CI)."""
    return os.environ.get("BENCH_SMOKE", "").lower() in ("1", "true", "yes")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[min(len(ordered), int(rank)) - 1]


@dataclass(frozen=True)
class Summary:
    """Median and tail of a sample: p99 when there are enough samples, else the max."""

    samples: int
    median: float
    tail: float
    tail_name: str  # "p99" or "max"

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        """Summarise a non-empty list of measurements."""
        if not values:
            raise ValueError("no samples: the benchmark measured nothing")
        if len(values) >= P99_MIN_SAMPLES:
            return cls(len(values), statistics.median(values), percentile(values, 0.99), "p99")
        return cls(len(values), statistics.median(values), max(values), "max")

    def text(self, unit: str = "ms", digits: int = 2) -> str:
        """`median 1.23 ms, p99 4.56 ms (n=1000)`."""
        return (
            f"median {self.median:.{digits}f} {unit}, {self.tail_name} "
            f"{self.tail:.{digits}f} {unit} (n={self.samples})"
        )


def ratio(ours: float, raw: float) -> str:
    """ours / raw, printed as `0.0123x`."""
    if raw <= 0:
        return "n/a"
    value = ours / raw
    return f"{value:.4f}x" if value < 0.1 else f"{value:.2f}x"


def save_results(name: str, results: dict[str, Any]) -> Path:
    """Write one benchmark's figures as JSON under bench/results/ (or BENCH_RESULTS_DIR)."""
    chosen = os.environ.get("BENCH_RESULTS_DIR")
    folder = Path(chosen) if chosen else RESULTS_DIR / "smoke" if smoke() else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    stamped = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **results}
    path.write_text(json.dumps(stamped, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Summary):
        return asdict(value)
    return str(value)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table (benchmarks print to logs and terminals alike)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))


# --- CPU of processes, from /proc --------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Every live descendant of a process."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            frontier.extend(children)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped.

    Processes that exited and were waited for count in their parent's cutime/cstime, live
    ones are read directly: a run's CPU is counted whichever way its process ended, once.
    """
    total = 0.0
    own = _stat_fields(pid)
    if own is None:
        return 0.0
    # Fields after the command (0-based from state): utime 11, stime 12, cutime 13, cstime 14.
    total += sum(int(own[i]) for i in (11, 12, 13, 14)) / _TICKS
    for child in descendants(pid):
        fields = _stat_fields(child)
        if fields is not None:
            # A live descendant's cutime holds what it reaped itself (a fork server's runs).
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS
    return total


# --- nats-server monitoring ---------------------------------------------------------------


def monitor(port: int, path: str) -> dict[str, Any]:
    """One JSON document from nats-server's HTTP monitoring port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as response:
        loaded: dict[str, Any] = json.loads(response.read())
    return loaded


@dataclass(frozen=True)
class ServerCounters:
    """What the server counted so far: stored messages per stream, API calls, client messages."""

    stream_messages: dict[str, int]
    api_calls: int
    # Messages each client connection sent to / received from the server, by service name.
    sent_by: dict[str, int]
    received_by: dict[str, int]

    @classmethod
    def read(cls, port: int) -> ServerCounters:
        """Read /jsz and /connz now."""
        jsz = monitor(port, "jsz?streams=true")
        streams: dict[str, int] = {}
        for account in jsz.get("account_details", []):
            for stream in account.get("stream_detail", []):
                # last_seq counts every message ever stored (KV overwrites included);
                # the stream's current count would hide what retention removed.
                streams[stream["name"]] = int(stream["state"]["last_seq"])
        sent: dict[str, int] = {}
        received: dict[str, int] = {}
        connz = monitor(port, "connz?limit=10000")
        for conn in connz.get("connections", []):
            role = service_role(conn.get("name", ""))
            # The server's in_msgs are what the client published, out_msgs what it delivered.
            sent[role] = sent.get(role, 0) + int(conn.get("in_msgs", 0))
            received[role] = received.get(role, 0) + int(conn.get("out_msgs", 0))
        return cls(streams, int(jsz.get("api", {}).get("total", 0)), sent, received)

    def minus(self, earlier: ServerCounters) -> ServerCounters:
        """What happened between two readings."""

        def delta(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
            return {key: value - then.get(key, 0) for key, value in now.items()}

        return ServerCounters(
            delta(self.stream_messages, earlier.stream_messages),
            self.api_calls - earlier.api_calls,
            delta(self.sent_by, earlier.sent_by),
            delta(self.received_by, earlier.received_by),
        )


def service_role(connection_name: str) -> str:
    """`runner@host:123` -> `runner`; unnamed connections are the benchmark's own."""
    return connection_name.split("@", 1)[0] or "bench"


def commit_time(root: str, dataset: str, version: int) -> float:
    """When a version of a local dataset was committed (its log file's mtime, wall clock).

    Not when `datasets.append` returned: the write goes on after the commit (its state
    update, a checkpoint every 100 versions) for up to tens of milliseconds, by which time
    the watcher may have announced the version and a run started.
    """
    return Path(deltalog.commit_path(root, dataset, version)).stat().st_mtime
