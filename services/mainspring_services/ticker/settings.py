"""Ticker settings."""

from mainspring.base.settings import Settings


class TickerSettings(Settings):
    """Catch-up window, on-time grace and how often fired ticks are saved."""

    # How far back `catchup="all"` reaches when a routine sets no catchup_window.
    default_catchup_window_s: float = 3600.0
    # A tick at most this late is on time and fires whatever the catch-up policy.
    misfire_grace_s: float = 1.0
    # Cursors are saved in batches; must stay well inside the stream's duplicate window.
    persist_interval_s: float = 1.0
    # Ticks due at the same instant publish concurrently, at most this many at a time.
    max_publishes_in_flight: int = 512
