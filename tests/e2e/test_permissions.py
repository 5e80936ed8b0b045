"""Per-service NATS users from deploy/nats/permissions.conf: least privilege, and it all still works."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from mainspring.contract import subjects
from tests.harness import ROOT, Deployment, NatsServer, copy_example, eventually, write_routine

pytestmark = pytest.mark.e2e

SERVICES = ("ticker", "dataset_watcher", "dispatcher", "runner", "recorder", "client")
USERS = (*SERVICES, "admin", "external")
PASSWORDS = {f"MAINSPRING_{name.upper()}_PASSWORD": f"secret-{name}" for name in USERS}


def url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:secret-{user}@127.0.0.1:{server.port}"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Deployment]:
    # nats-server resolves includes relative to the config file, so the permissions go beside it.
    store = tmp_path / "nats"
    store.mkdir()
    shutil.copy(ROOT / "deploy" / "nats" / "permissions.conf", store / "permissions.conf")
    server = NatsServer(
        store, config="include ./permissions.conf\n", env={**os.environ, **PASSWORDS}
    )
    server.start()
    home = tmp_path / "home"
    home.mkdir()
    deployment = Deployment(home=home, database_url=f"sqlite:///{home / 'runs.db'}", nats=server)
    deployment.extra_env = {"MAINSPRING_NATS_URL": url(server, "client")}
    deployment.set_up(url(server, "admin"))
    for name in ("recorder", "dispatcher", "runner", "ticker", "dataset_watcher"):
        deployment.start(name, env={"MAINSPRING_NATS_URL": url(server, name)})
    try:
        yield deployment
    finally:
        deployment.stop()


PRINTS = """
from mainspring import Routine, on_schedule

class Prints(Routine):
    def run(self, tick=on_schedule(every="1d")):
        print("printed by the run")
"""


async def test_system_runs_with_per_service_users(secured: Deployment, tmp_path: Path) -> None:
    folder = copy_example("hello", tmp_path)
    secured.cli("routine", "create", str(folder), "--name", "hello")

    result = secured.cli("run", "hello", "--wait", "--timeout", "60")

    assert "status: completed" in result.stdout, secured.logs()
    runs = json.loads(secured.cli("runs", "list", "--json").stdout)
    assert runs[0]["status"] == "completed"

    # A run's output streams live from the runner to a client, and is kept.
    secured.cli("routine", "create", str(write_routine(tmp_path / "p", PRINTS)), "--name", "p")
    heard: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on_output(message: Msg) -> None:
        if not heard.done():
            heard.set_result(message.data)

    connection = await nats.connect(url(secured.nats, "client"))
    try:
        await connection.subscribe(subjects.RUN_LOG_ANY, cb=on_output)
        await connection.flush()
        run_id = secured.cli("run", "p").stdout.strip()
        assert b"printed by the run" in await asyncio.wait_for(heard, timeout=30)
    finally:
        await connection.close()

    def stored_log() -> bool:
        return "printed by the run" in secured.cli("runs", "logs", run_id, check=False).stdout

    await eventually(lambda: asyncio.to_thread(stored_log), what="the run's stored log")


@pytest.mark.parametrize("user", ["runner", "ticker", "client", "recorder"])
async def test_only_the_dispatcher_may_publish_run_requests(secured: Deployment, user: str) -> None:
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def on_error(error: Exception) -> None:
        if "permissions violation" in str(error).lower() and not refused.done():
            refused.set_result(error)

    connection = await nats.connect(url(secured.nats, user), error_cb=on_error)
    try:
        await connection.publish(subjects.RUN_REQUESTED, b"{}")
        # The server answers a forbidden publish with an -ERR naming the subject.
        error = await asyncio.wait_for(refused, timeout=10)
    finally:
        await connection.close()

    assert f'publish to "{subjects.RUN_REQUESTED}"' in str(error).lower()


async def test_dispatcher_may_publish_run_requests(secured: Deployment) -> None:
    connection = await nats.connect(url(secured.nats, "dispatcher"))
    js = connection.jetstream()
    try:
        # The services declare the stream as they start.
        await eventually(lambda: js.stream_info(subjects.STREAM), what="the stream declared")
        # A JetStream publish is acknowledged only once the stream stored the message: a
        # positive answer, where a core publish would only be met by silence.
        ack = await js.publish(subjects.RUN_REQUESTED, b"{}", stream=subjects.STREAM)
    finally:
        await connection.close()

    assert ack.stream == subjects.STREAM
    assert ack.seq > 0


async def _refused(secured: Deployment, user: str, subject: str) -> list[Exception]:
    """Publish as `user` and wait for the server's permissions violation (or fail the wait)."""
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    async def violation() -> bool:
        return any("permissions violation" in str(e).lower() for e in errors)

    connection = await nats.connect(url(secured.nats, user), error_cb=on_error)
    try:
        await connection.publish(subject, b"{}")
        await connection.flush()
        await eventually(violation, 10, what=f"the server refusing {user} on {subject}")
    finally:
        await connection.close()
    return errors


async def test_the_client_cannot_write_the_run_ledger(secured: Deployment) -> None:
    # Cancel marks and outcomes are the services' facts; the client asks with run.cancel.
    errors = await _refused(secured, "client", "$KV.run_ledger.cancel.some-run")

    assert any("$kv.run_ledger.cancel.some-run" in str(e).lower() for e in errors), errors


async def test_the_client_cannot_write_the_dispatchers_cursors(secured: Deployment) -> None:
    # `routine create` records where the dataset stood on the definition; the dispatcher
    # alone writes the cursor.
    errors = await _refused(secured, "client", "$KV.dispatch.cursor.embed")

    assert any("$kv.dispatch.cursor.embed" in str(e).lower() for e in errors), errors


async def test_cancel_is_a_command_the_dispatcher_turns_into_a_mark(
    secured: Deployment, tmp_path: Path
) -> None:
    # Under per-service users: the client publishes run.cancel, the dispatcher writes the mark.
    connection = await nats.connect(url(secured.nats, "client"))
    try:
        body = b'{"run_id": "never-started", "requested_by": "test"}'
        await eventually(
            lambda: connection.jetstream().publish("run.cancel", body), 30, what="the stream"
        )
        ledger = await eventually(
            lambda: connection.jetstream().key_value("run_ledger"), 30, what="the run ledger"
        )
        mark = await eventually(
            lambda: ledger.get("cancel.never-started"), 30, what="the dispatcher's cancel mark"
        )
    finally:
        await connection.close()

    assert mark.value == b"test"


async def test_only_the_dispatcher_requests_in_memory_runs(secured: Deployment) -> None:
    # The caller of an in-memory run asks with run.submitted; the request is the dispatcher's.
    errors = await _refused(secured, "client", "run.in_memory")

    assert any('"run.in_memory"' in str(e) for e in errors), errors


async def test_the_client_cannot_publish_a_run_outcome(secured: Deployment) -> None:
    # Outcomes are settled and published by services; the client reports or commands.
    errors = await _refused(secured, "client", "run.completed.hello.completed")

    assert any("run.completed.hello.completed" in str(e) for e in errors), errors


IN_MEMORY = """
from mainspring import Routine, on_schedule


class Local(Routine):
    allow_in_memory = True

    # A schedule that fires once in four years: the run here is the one started by hand.
    def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {"hop": self.run_info.hop, "number": self.run_info.number}
"""


async def test_an_in_memory_run_is_numbered_and_ended_by_the_dispatcher(
    secured: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "routine.py").write_text(IN_MEMORY)
    secured.cli("routine", "create", str(folder), "--name", "local")

    result = secured.cli("run", "local", "--in-memory")

    assert '"number": 1' in result.stdout, secured.logs()

    async def recorded() -> dict[str, object] | None:
        runs = json.loads(secured.cli("runs", "list", "--json").stdout)
        return runs[0] if runs and runs[0]["status"] == "completed" else None

    run = await eventually(recorded, 30, what="the dispatcher publishing the outcome")
    assert run["run_number"] == 1
    assert run["outputs"] == {"hop": 0, "number": 1}


async def test_a_report_for_a_run_that_is_not_in_memory_ends_nothing(
    secured: Deployment,
) -> None:
    # run.in_memory_reported is open to the client: the dispatcher must not let it end a
    # run a runner holds (or invent one).
    body = b'{"run_id": "held-by-a-runner", "routine": "hello", "status": "cancelled"}'
    connection = await nats.connect(url(secured.nats, "client"))
    try:
        await eventually(
            lambda: connection.jetstream().publish("run.in_memory_reported", body),
            30,
            what="the stream",
        )
    finally:
        await connection.close()
    dispatcher = secured.services["dispatcher"]

    await eventually(
        lambda: _logged(dispatcher.log(), "ignored a report for run held-by-a-runner"),
        30,
        what="the dispatcher refusing the report",
    )
    assert '"run_id": "held-by-a-runner"' not in secured.cli("runs", "list", "--json").stdout


async def _logged(log: str, text: str) -> bool | None:
    return True if text in log else None


async def refusal_of(server: NatsServer, user: str, subject: str) -> str:
    """Publish as `user` and return the server's permissions error for `subject`."""
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_error(error: Exception) -> None:
        if "permissions violation" in str(error).lower() and not refused.done():
            refused.set_result(str(error))

    connection = await nats.connect(url(server, user), error_cb=on_error)
    try:
        await connection.publish(subject, b"{}")
        return await asyncio.wait_for(refused, timeout=10)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "subject", ["run.completed.hello.completed", "run.requested", "run.submitted"]
)
async def test_an_external_system_cannot_forge_a_routines_run(
    secured: Deployment, subject: str
) -> None:
    error = await refusal_of(secured.nats, "external", subject)

    assert subject in error


@pytest.mark.parametrize(
    "subject", ["external.completed.nightly-etl.completed", "dataset.appended"]
)
async def test_an_external_system_may_report_workflows_and_appends(
    secured: Deployment, subject: str
) -> None:
    connection = await nats.connect(url(secured.nats, "external"))
    try:
        # A stream acknowledgement proves the server let the message through and stored it.
        ack = await connection.jetstream().publish(subject, b"{}")
    finally:
        await connection.close()

    assert ack.stream == "MAINSPRING"
