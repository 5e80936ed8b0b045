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

from mainspring.base.settings import Settings
from mainspring.client import Client
from mainspring.contract import permissions, subjects
from tests.harness import ROOT, Deployment, NatsServer, copy_example, eventually, write_routine

pytestmark = pytest.mark.e2e

SERVICES = ("ticker", "dataset_watcher", "dispatcher", "runner", "recorder", "client")
PASSWORDS = {user.password_variable(): f"secret-{user.name}" for user in permissions.USERS}


def url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:secret-{user}@127.0.0.1:{server.port}"


def shipped_server(tmp_path: Path) -> NatsServer:
    """A nats-server with the shipped deploy/nats/permissions.conf, started."""
    # nats-server resolves includes relative to the config file, so the permissions go beside it.
    store = tmp_path / "nats"
    store.mkdir()
    shutil.copy(ROOT / "deploy" / "nats" / "permissions.conf", store / "permissions.conf")
    server = NatsServer(
        store, config="include ./permissions.conf\n", env={**os.environ, **PASSWORDS}
    )
    server.start()
    return server


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[NatsServer]:
    """The shipped users on a bare server: enough to see what it refuses."""
    server = shipped_server(tmp_path)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Deployment]:
    server = shipped_server(tmp_path)
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
    # Every service works within its narrowed grants: a call it makes but was not granted
    # shows as a violation in its log (often retried quietly), so any is a failure.
    refused = [
        name
        for name, process in deployment.services.items()
        if "permissions violation" in process.log().lower()
    ]
    assert not refused, f"services refused by the server: {refused}\n{deployment.logs()}"


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
    # hello's own schedule (every 10s) may have a run going too: this one was started by hand.
    assert [r["status"] for r in runs if r["source"] == "manual"] == ["completed"]

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


SERIAL = """
import time
from mainspring import Routine, on_schedule

class Serial(Routine):
    max_concurrent = 1

    def run(self, tick=on_schedule(cron="0 0 29 2 *"), seconds: float = 0.2):
        time.sleep(seconds)
"""


async def test_runs_held_for_max_concurrent_are_released_and_cancelled_within_the_grants(
    secured: Deployment, tmp_path: Path
) -> None:
    secured.cli("routine", "create", str(write_routine(tmp_path / "s", SERIAL)), "--name", "s")
    first = secured.cli("run", "s", "--input", "seconds=3").stdout.strip()
    held = [secured.cli("run", "s").stdout.strip() for _ in range(3)]
    secured.cli("runs", "cancel", held[-1])

    async def statuses() -> dict[str, str] | None:
        runs = json.loads(secured.cli("runs", "list", "--json").stdout)
        found = {r["id"]: r["status"] for r in runs}
        done = all(found.get(run_id) in ("completed", "cancelled") for run_id in [first, *held])
        return found if done else None

    found = await eventually(statuses, 60, what="the held runs released in turn")
    assert [found[run_id] for run_id in [first, *held]] == [
        "completed",
        "completed",
        "completed",
        "cancelled",
    ], secured.logs()


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
    # The recorder may still be starting: ask until it answers.
    listed = await eventually(
        lambda: asyncio.to_thread(secured.cli, "runs", "list", "--json"), 30, what="the recorder"
    )
    assert '"run_id": "held-by-a-runner"' not in listed.stdout


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


# Every forbidden action of every user, each met by the server's own permissions violation.


async def violation_of(server: NatsServer, user: str, subject: str, action: str) -> str:
    """Publish (or subscribe) as `user` and return the server's permissions error naming it."""
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_error(error: Exception) -> None:
        if "permissions violation" in str(error).lower() and not refused.done():
            refused.set_result(str(error))

    connection = await nats.connect(url(server, user), error_cb=on_error)
    try:
        if action == "publish":
            await connection.publish(subject, b"{}")
        else:
            await connection.subscribe(subject)
        await connection.flush()
        error = await asyncio.wait_for(refused, timeout=10)
    finally:
        await connection.close()
    assert f'{action.replace("subscribe", "subscription")} to "{subject}"'.lower() in error.lower()
    return error


STREAM_MANAGEMENT = [
    f"$JS.API.STREAM.{operation}.{stream}"
    for operation in ("DELETE", "PURGE", "UPDATE")
    for stream in (subjects.STREAM, "KV_run_ledger")
]


@pytest.mark.parametrize("subject", STREAM_MANAGEMENT)
@pytest.mark.parametrize("user", [*permissions.SERVICE_USERS, "client", "subscriber", "external"])
async def test_nobody_but_admin_deletes_purges_or_changes_a_stream(
    shipped: NatsServer, user: str, subject: str
) -> None:
    await violation_of(shipped, user, subject, "publish")


RUNNER_QUEUE = f"{subjects.STREAM}.{subjects.RUNNER_CONSUMER}"


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        # Taking or acknowledging runs from the runners' work queue, or redefining it.
        ("client", f"$JS.API.CONSUMER.MSG.NEXT.{RUNNER_QUEUE}"),
        ("client", f"$JS.ACK.{RUNNER_QUEUE}.1.5.5.1700000000000000000.0"),
        ("client", f"$JS.API.CONSUMER.CREATE.{RUNNER_QUEUE}.run.requested"),
        ("client", f"$JS.API.CONSUMER.DELETE.{RUNNER_QUEUE}"),
        ("subscriber", f"$JS.API.CONSUMER.MSG.NEXT.{RUNNER_QUEUE}"),
        ("subscriber", f"$JS.ACK.{RUNNER_QUEUE}.1.5.5.1700000000000000000.0"),
        ("ticker", f"$JS.API.CONSUMER.MSG.NEXT.{RUNNER_QUEUE}"),
        ("recorder", f"$JS.API.CONSUMER.MSG.NEXT.{RUNNER_QUEUE}"),
        ("dispatcher", f"$JS.API.CONSUMER.DELETE.{RUNNER_QUEUE}"),
        # Writing facts that are another's.
        ("client", "$KV.leases.run.some-run"),
        ("client", "$KV.ticker.last.hello"),
        ("ticker", "$KV.run_ledger.outcome.some-run"),
        ("dataset_watcher", "$KV.routines.hello"),
        ("recorder", "$KV.state.hello"),
        ("runner", "$KV.routines.hello"),
        # Publishing what is not one's to say.
        ("runner", subjects.RUN_REQUESTED),
        ("runner", subjects.SCHEDULE_FIRED),
        ("ticker", "run.completed.hello.completed"),
        ("dataset_watcher", subjects.RUN_SUBMITTED),
        ("recorder", subjects.RUN_REQUESTED),
        ("external", subjects.RUN_CANCEL),
        ("external", f"$JS.API.STREAM.INFO.{subjects.STREAM}"),
        ("external", "$KV.routines.hello"),
        # The read-only subscriber publishes nothing of the system's.
        ("subscriber", subjects.RUN_SUBMITTED),
        ("subscriber", subjects.RUN_CANCEL),
        ("subscriber", subjects.DATASET_APPENDED),
        ("subscriber", "external.completed.etl.completed"),
        ("subscriber", "run.completed.hello.completed"),
        ("subscriber", "api.runs.list"),
        ("subscriber", "$KV.routines.hello"),
        ("subscriber", f"$JS.API.CONSUMER.CREATE.{subjects.STREAM}.follow-x.run.requested"),
    ],
)
async def test_a_forbidden_publish_is_refused(shipped: NatsServer, user: str, subject: str) -> None:
    await violation_of(shipped, user, subject, "publish")


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("subscriber", subjects.RUN_REQUESTED),
        ("subscriber", subjects.RUN_LOG_ANY),
        ("subscriber", "deadletter.>"),
        ("subscriber", "api.>"),
        ("subscriber", ">"),
        ("external", "run.>"),
        ("external", subjects.RUN_LOG_ANY),
        ("ticker", subjects.RUN_REQUESTED),
        ("runner", "api.>"),
        ("client", subjects.RUN_HEARTBEAT),
    ],
)
async def test_a_forbidden_subscription_is_refused(
    shipped: NatsServer, user: str, subject: str
) -> None:
    await violation_of(shipped, user, subject, "subscribe")


async def test_the_read_only_subscriber_follows_completions(
    secured: Deployment, tmp_path: Path
) -> None:
    # Its schedule never fires in the test: the one completion is the run started by hand.
    folder = write_routine(tmp_path / "once", IN_MEMORY)
    secured.cli("routine", "create", str(folder), "--name", "once")
    client = await Client.connect(Settings(nats_url=url(secured.nats, "subscriber")))
    try:
        async with client.completions(routine="once", durable="watcher") as follower:
            run_id = secured.cli("run", "once").stdout.strip()
            event = await asyncio.wait_for(anext(follower), timeout=60)
    finally:
        await client.close()

    assert event.run_id == run_id
    assert event.status == "completed"
