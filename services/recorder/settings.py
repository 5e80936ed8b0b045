"""Recorder settings."""

from mainspring.settings import Settings


class RecorderSettings(Settings):
    """The shared settings, and when a running run without runner heartbeats is failed."""

    # Well above the runners' ack wait (30s): while any runner lives, a lost run is
    # redelivered and heartbeats again long before this.
    stale_run_after_s: float = 180.0
    stale_sweep_every_s: float = 10.0
