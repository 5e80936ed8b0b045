"""Dataset watcher settings."""

from mainspring.base.settings import Settings


class WatcherSettings(Settings):
    """How the watcher notices new versions.

    A local root is watched with file notifications (inotify) and also scanned every
    `watcher_backstop_s` in case a notification was missed; an object-store root (or
    `MAINSPRING_WATCHER_NOTIFY=false`) is polled every `watcher_poll_s`.
    """

    watcher_notify: bool = True
    watcher_poll_s: float = 1.0
    watcher_backstop_s: float = 2.0
    # How long notifications are gathered before a batch is handled (watchfiles' step).
    watcher_notify_step_ms: int = 2
