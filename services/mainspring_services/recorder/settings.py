"""Recorder settings."""

from pydantic import Field

from mainspring.base.settings import Settings
from mainspring.runtime.deadletters import REDELIVERY


class RecorderSettings(Settings):
    """The shared settings, how many run events one commit records, the stale run sweep and
    the retention of finished runs."""

    # Well above the runners' ack wait (30s): while any runner lives, a lost run is
    # redelivered and heartbeats again long before this.
    stale_run_after_s: float = 180.0
    stale_sweep_every_s: float = 10.0
    # A batch fetched by a recorder that stops (killed, frozen) goes to another replica, or
    # to the same one restarted, after this long. The consumer keeps the wait it was created
    # with: a new value applies to a bus where the recorder's consumers do not exist yet.
    record_ack_wait_s: float = Field(default=30.0, gt=0)
    # At most this many events per transaction; below the consumer's max ack pending (1000),
    # so a whole batch can be outstanding at once.
    record_batch_size: int = Field(default=500, ge=1, le=1000)
    # Progress travels on its own stream and may reach the recorder before its run's
    # request: it is redelivered with the shared growing pause (about 15 minutes over 20
    # deliveries) until the run is recorded, and parked after this many deliveries.
    unknown_run_deliveries: int = Field(
        default=REDELIVERY.max_deliveries, ge=1, le=REDELIVERY.max_deliveries
    )
    # Retention: finished runs created more than retention_days ago, or beyond the newest
    # retention_runs_per_routine finished runs of their routine, are deleted with their logs
    # and artifacts, every retention_every_s. Unset: every run is kept.
    retention_days: float | None = Field(default=None, gt=0)
    retention_runs_per_routine: int | None = Field(default=None, ge=1)
    retention_every_s: float = Field(default=3600.0, gt=0)
    # False keeps no run history (no run rows, no node tables) while trigger firings are
    # still recorded: embedded mode with provenance=None, like lythonic's NullProvenance.
    record_runs: bool = True
