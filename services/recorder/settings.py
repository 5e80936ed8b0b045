"""Recorder settings."""

from pydantic import Field

from mainspring.settings import Settings


class RecorderSettings(Settings):
    """The shared settings, how many run events one commit records, and the stale run sweep."""

    # Well above the runners' ack wait (30s): while any runner lives, a lost run is
    # redelivered and heartbeats again long before this.
    stale_run_after_s: float = 180.0
    stale_sweep_every_s: float = 10.0
    # At most this many events per transaction; below the consumer's max ack pending (1000),
    # so a whole batch can be outstanding at once.
    record_batch_size: int = Field(default=500, ge=1, le=1000)
