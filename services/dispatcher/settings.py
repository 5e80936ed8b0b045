"""Dispatcher settings: the shared ones are enough (max_hops, crash_loop_threshold)."""

from mainspring.settings import Settings

DispatcherSettings = Settings
