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

from mainspring import subjects
from tests.harness import ROOT, Deployment, NatsServer, copy_example, eventually

pytestmark = pytest.mark.e2e

SERVICES = ("ticker", "dataset_watcher", "dispatcher", "runner", "recorder", "client")
PASSWORDS = {f"MAINSPRING_{name.upper()}_PASSWORD": f"secret-{name}" for name in SERVICES}


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
