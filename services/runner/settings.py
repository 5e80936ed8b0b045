"""Runner settings."""

from pathlib import Path

from mainspring.settings import Settings


class RunnerSettings(Settings):
    """Slots, heartbeats and where bundles are unpacked."""

    heartbeat_s: float = 5.0
    cancel_grace_s: float = 5.0
    memory_poll_s: float = 0.05

    def bundle_cache(self) -> Path:
        """Unpacked bundles, one folder per digest."""
        return (self.home / "bundles").resolve()
