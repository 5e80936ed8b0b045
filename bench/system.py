"""A whole Mainspring system for benchmarks: the embedded server's settings plus a monitor port.

The server is configured exactly as `mainspring up` configures its embedded one (file
storage, the same fsync setting), so the raw baselines measured on it are like-for-like;
only the HTTP monitoring port is added, to read the server's own counters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mainspring.apps.up import free_port, nats_server_binary, service_command, wait_for_port
from mainspring.base.settings import Settings
from mainspring.runtime.bus import set_up_now

SERVICES = ("recorder", "dispatcher", "ticker", "dataset_watcher")


@dataclass
class BenchSystem:
    """nats-server and every service as processes, sharing one home."""

    home: Path
    database_url: str | None = None
    runners: int = 1
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    nats: subprocess.Popen[bytes] | None = None
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Client URL of the server."""
        return f"nats://127.0.0.1:{self.port}"

    def settings(self) -> Settings:
        """Settings for an in-process client of this system."""
        return Settings(home=self.home, nats_url=self.url, database_url=self.database_url)

    def env(self) -> dict[str, str]:
        """Environment of every service process."""
        settings = self.settings()
        return {
            **os.environ,
            "MAINSPRING_NATS_URL": self.url,
            "MAINSPRING_HOME": str(self.home),
            "MAINSPRING_DATABASE_URL": settings.resolved_database_url(),
            "MAINSPRING_DATASET_ROOT": settings.resolved_dataset_root(),
            "MAINSPRING_ARTIFACT_ROOT": settings.resolved_artifact_root(),
            "MAINSPRING_LOG_LEVEL": "WARNING",
            # Traces as `mainspring up` has them: the default sampler, spans written to files.
            "MAINSPRING_TRACE_DIR": str(self.home / "traces"),
            **self.env_overrides,
        }

    def start(self) -> None:
        """Start the server, then every service."""
        self.home.mkdir(parents=True, exist_ok=True)
        logs = self.home / "logs"
        logs.mkdir(exist_ok=True)
        store = self.home / "nats"
        store.mkdir(exist_ok=True)
        sync = Settings().nats_sync_interval
        config = store / "nats.conf"
        config.write_text(
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(store))}\n"
            + (f"  sync_interval: {sync}\n" if sync else "")
            + "}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
        )
        self.nats = subprocess.Popen(
            [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(logs / "nats-server.log").open("ab"),
        )
        wait_for_port(self.port)
        wait_for_port(self.monitor_port)
        set_up_now(self.settings())
        labels = [*SERVICES, *(f"runner-{i}" for i in range(self.runners))]
        for label in labels:
            name = label.split("-")[0] if label.startswith("runner") else label
            self.services[label] = subprocess.Popen(
                service_command(name),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(logs / f"{label}.log").open("ab"),
            )

    def pids(self) -> dict[str, int]:
        """Process ids by part: each service, each runner replica, nats-server."""
        found = {label: process.pid for label, process in self.services.items()}
        if self.nats is not None:
            found["nats-server"] = self.nats.pid
        return found

    def log_tail(self, label: str, lines: int = 30) -> str:
        """The end of one part's log, for an error message."""
        path = self.home / "logs" / f"{label}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the services, then the server."""
        for process in self.services.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.services.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.nats is not None and self.nats.poll() is None:
            self.nats.send_signal(signal.SIGTERM)
            try:
                self.nats.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nats.kill()

    def __enter__(self) -> BenchSystem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
