"""Runner settings."""

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from mainspring.base.settings import Settings
from mainspring.base.units import parse_memory
from mainspring.storage.runlogs import DEFAULT_MAX_BYTES


class RunnerSettings(Settings):
    """Slots, heartbeats, worker reuse and where bundles are unpacked."""

    heartbeat_s: float = 5.0
    cancel_grace_s: float = 5.0
    memory_poll_s: float = 0.05
    # A runner that stops heartbeating loses its run to another replica after this long.
    run_ack_wait_s: float = 30.0
    # How soon a run held back (concurrency, memory) is offered again.
    hold_retry_s: float = 1.0
    # On SIGTERM: how long running runs may finish before they are handed back; with the
    # hand-back's own grace this stays inside `mainspring up`'s 10s stop window.
    drain_timeout_s: float = 5.0
    hand_back_grace_s: float = 2.0
    # Unbound workers started ahead of time (one per slot), so a new digest starts warm too.
    warm_workers: bool = True
    # A reused worker is recycled after this many runs, or once its resident memory grew
    # this much over its post-import baseline (leaks and fragmentation add up).
    max_runs_per_worker: int = Field(default=1000, ge=1)
    worker_max_rss_growth: int = Field(default=512 * 2**20, ge=0)
    # Idle workers kept across all digests; the least recently used go first.
    max_idle_workers: int = Field(default=8, ge=0)
    # run.started is published once a run has lasted this long: a shorter run is told by
    # its completion alone (which names the runner, attempt and folder), so a quick run
    # costs three stored messages (submitted or fired, requested, completed), not four.
    run_started_after_s: float = Field(default=0.1, ge=0)
    # Whom routine code runs as when the runner is root: a user name or uid; unset means
    # `nobody` where that user can reach the bundles and stores, else the runner's user;
    # `root` keeps root. See worker_user.py.
    worker_user: str | None = None
    # The intake pulls at most this many requests at once (one per free slot below it).
    intake_max_fetch: int = Field(default=64, ge=1)
    # How long an idle runner's pull for new requests waits on the server before it is
    # asked again (a request arriving meanwhile is delivered at once, so this costs no
    # latency; it bounds how long a pull lost with the connection goes unnoticed).
    intake_poll_s: float = Field(default=5.0, gt=0)
    # A run's stdout and stderr together keep at most this much (the cut is marked).
    run_log_max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=0)

    @field_validator("worker_max_rss_growth", "run_log_max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        # Written like a routine's `memory`: 512MiB, 1GiB, or plain bytes.
        return parse_memory(value) if isinstance(value, str) else value

    def bundle_cache(self) -> Path:
        """Unpacked bundles, one folder per digest."""
        return (self.home / "bundles").resolve()
