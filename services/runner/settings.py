"""Runner settings."""

from pathlib import Path

from mainspring.settings import Settings


class RunnerSettings(Settings):
    """Slots, heartbeats and where bundles are unpacked."""

    heartbeat_s: float = 5.0
    cancel_grace_s: float = 5.0
    memory_poll_s: float = 0.05
    # A runner that stops heartbeating loses its run to another replica after this long.
    run_ack_wait_s: float = 30.0
    # Leases of a killed runner free themselves after this long (refreshed every heartbeat).
    lease_ttl_s: float = 30.0
    # How soon a run held back (concurrency, memory) is offered again.
    hold_retry_s: float = 1.0
    # On SIGTERM: how long running runs may finish before they are handed back; with the
    # hand-back's own grace this stays inside `mainspring up`'s 10s stop window.
    drain_timeout_s: float = 5.0
    hand_back_grace_s: float = 2.0
    warm_workers: bool = True

    def bundle_cache(self) -> Path:
        """Unpacked bundles, one folder per digest."""
        return (self.home / "bundles").resolve()
