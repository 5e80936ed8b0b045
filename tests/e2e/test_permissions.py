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
from nats.errors import Error as NatsError

from tests.harness import ROOT, Deployment, NatsServer, copy_example

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


async def test_system_runs_with_per_service_users(secured: Deployment, tmp_path: Path) -> None:
    folder = copy_example("hello", tmp_path)
    secured.cli("routine", "create", str(folder), "--name", "hello")

    result = secured.cli("run", "hello", "--wait", "--timeout", "60")

    assert "status: completed" in result.stdout, secured.logs()
    runs = json.loads(secured.cli("runs", "list", "--json").stdout)
    assert runs[0]["status"] == "completed"


@pytest.mark.parametrize("user", ["runner", "ticker", "client", "recorder"])
async def test_only_the_dispatcher_may_publish_run_requests(secured: Deployment, user: str) -> None:
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    connection = await nats.connect(url(secured.nats, user), error_cb=on_error)
    try:
        await connection.publish("run.requested", b"{}")
        await connection.flush()
        await asyncio.sleep(0.5)
    finally:
        await connection.close()

    assert any("permissions violation" in str(e).lower() for e in errors), errors


async def test_dispatcher_may_publish_run_requests(secured: Deployment) -> None:
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    connection = await nats.connect(url(secured.nats, "dispatcher"), error_cb=on_error)
    try:
        await connection.publish("run.requested", b"{}")
        await connection.flush()
        await asyncio.sleep(0.5)
    finally:
        await connection.close()

    assert not [e for e in errors if isinstance(e, NatsError) and "permission" in str(e).lower()]


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
