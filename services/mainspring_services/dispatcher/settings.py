"""Dispatcher settings: the shared ones are enough (max_hops, crash_loop_threshold)."""

from mainspring.base.settings import Settings

DispatcherSettings = Settings
