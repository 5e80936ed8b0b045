"""Dispatcher settings: the shared ones (max_hops, crash_loop_threshold) and its ack wait."""

from pydantic import Field

from mainspring.base.settings import Settings


class DispatcherSettings(Settings):
    """The shared settings and how long a dispatcher holds a message unacknowledged."""

    # A message fetched by a dispatcher that stops (killed, frozen) goes to another replica,
    # or to the same one restarted, after this long; handling one takes milliseconds. The
    # consumers keep the wait they were created with: a new value applies to a bus where the
    # dispatcher's consumers do not exist yet. Dataset appends keep their own 5 s.
    dispatch_ack_wait_s: float = Field(default=30.0, gt=0)
    # Messages a dispatcher consumer fetches in one pull: what is waiting, up to this many,
    # handled alongside each other (one routine's in order). One fetch per message cost more
    # CPU than the handling of a no-op run's request.
    dispatch_batch_size: int = Field(default=64, ge=1, le=1000)
