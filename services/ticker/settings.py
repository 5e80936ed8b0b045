"""Ticker settings."""

from mainspring.settings import Settings


class TickerSettings(Settings):
    """How far back a restarted ticker looks for missed ticks by default."""

    default_catchup_window_s: float = 3600.0
