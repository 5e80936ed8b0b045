"""Other systems on a real bus: following completions (SDK, CLI, plain nats-py) and HTTP ingress.

One system for the module, with the deployment's NATS users: recorder, dispatcher, one
runner and the web service with a token.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from mainspring.apps.up import free_port, wait_for_port
from mainspring.base.settings import Settings
from mainspring.client import Client, Completions
from mainspring.contract import permissions, subjects
from mainspring.contract.messages import DatasetAppended, RunCompleted
from mainspring.contract.queries import RunQuery
from tests.harness import ROOT, Deployment, NatsServer, eventually, write_routine

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token"
QUICK = """
from mainspring import Routine, on_schedule


class Quick(Routine):
    def run(self, tick=on_schedule(every="1w"), n: int = 1) -> dict:
        return {"n": n}
"""
AFTER_ETL = """
from mainspring import Routine, on_complete


class AfterEtl(Routine):
    def run(self, done=on_complete("nightly-etl")) -> dict:
        return {"upstream": done.run_id, "rows": done.outputs.get("rows")}
"""


# The deployment's NATS users (deploy/nats/permissions.conf): the SDK, CLI and web service
# connect as `client`, the plain append example as `external`, each service as itself.
PASSWORDS = {user.password_variable(): f"secret-{user.name}" for user in permissions.USERS}


def user_url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:secret-{user}@127.0.0.1:{server.port}"


@dataclass
class Integrations:
    deployment: Deployment
    settings: Settings
    web: str
    started_at: datetime

    def url(self, user: str) -> str:
        return user_url(self.deployment.nats, user)


@pytest.fixture(scope="module")
def integrations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Integrations]:
    """The system with per-service users, without ticker and watcher (runs here are started
    by hand or by HTTP), and the web service with a token."""
    tmp = tmp_path_factory.mktemp("integrations")
    store = tmp / "nats"
    store.mkdir()
    # nats-server resolves includes relative to the config file.
    shutil.copy(ROOT / "deploy" / "nats" / "permissions.conf", store / "permissions.conf")
    server = NatsServer(store, "include ./permissions.conf\n", {**os.environ, **PASSWORDS})
    server.start()
    home = tmp / "home"
    home.mkdir()
    deployment = Deployment(home=home, database_url=f"sqlite:///{home / 'runs.db'}", nats=server)
    client_url = user_url(server, "client")
    deployment.extra_env = {"MAINSPRING_NATS_URL": client_url, "MAINSPRING_WEB_TOKEN": TOKEN}
    settings = deployment.settings().model_copy(update={"nats_url": client_url})
    web: subprocess.Popen[bytes] | None = None
    try:
        deployment.set_up(user_url(server, "admin"))
        started_at = datetime.now(UTC)
        for name in ("recorder", "dispatcher", "runner"):
            deployment.start(name, env={"MAINSPRING_NATS_URL": user_url(server, name)})

        async def register() -> None:
            client = await Client.connect(settings)
            try:
                for name, source in (("alpha", QUICK), ("beta", QUICK), ("after_etl", AFTER_ETL)):
                    await client.create_routine(write_routine(tmp / name, source), name)
                await client.wait_ready()
            finally:
                await client.close()

        asyncio.run(register())
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "mainspring", "web", "--port", str(port)],
            env=deployment.env(),
            stdout=subprocess.DEVNULL,
            stderr=(home / "web.log").open("wb"),
        )
        wait_for_port(port)
        yield Integrations(deployment, settings, f"http://127.0.0.1:{port}", started_at)
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=10)
        deployment.stop()


@pytest.fixture
async def client(integrations: Integrations) -> AsyncIterator[Client]:
    connected = await Client.connect(integrations.settings)
    yield connected
    await connected.close()


async def finished(client: Client, routine: str, count: int) -> list[str]:
    """Start `count` runs of a routine and wait until each has ended; their ids."""
    run_ids = [await client.submit(routine) for _ in range(count)]
    for run_id in run_ids:
        assert (await client.wait(run_id, timeout=60))["status"] == "completed"
    return run_ids


async def take(follower: Completions, count: int, timeout: float = 30) -> list[RunCompleted]:
    return [await asyncio.wait_for(anext(follower), timeout) for _ in range(count)]


async def nothing_more(follower: Completions) -> bool:
    try:
        await asyncio.wait_for(anext(follower), 1.5)
    except TimeoutError:
        return True
    return False


async def test_a_durable_follower_gets_exactly_the_runs_it_missed_and_no_other_routines(
    client: Client,
) -> None:
    async with client.completions(routine="alpha", durable="missed") as follower:
        seen = await finished(client, "alpha", 1)
        assert [e.run_id for e in await take(follower, 1)] == seen

    missed = await finished(client, "alpha", 10)
    await finished(client, "beta", 3)

    async with client.completions(routine="alpha", durable="missed") as follower:
        events = await take(follower, 10)
        assert sorted(e.run_id for e in events) == sorted(missed)
        assert {e.routine for e in events} == {"alpha"}
        assert await nothing_more(follower)
    # Filtered by the server: it never even sent beta's completions to this consumer.
    info = await client.js.consumer_info(subjects.STREAM, "follow-missed")
    assert info.delivered.consumer_seq == 11
    assert info.num_pending == 0
    # Each session acknowledged all it handled: nothing waits to be delivered again.
    assert info.num_ack_pending == 0
    assert info.config.inactive_threshold == 86400.0


async def test_since_replays_and_a_follower_of_one_routine_hears_nothing_of_another(
    client: Client, integrations: Integrations
) -> None:
    gamma = client.completions(routine="gamma")
    async with gamma:
        beta = await finished(client, "beta", 2)
        assert await nothing_more(gamma)
    async with client.completions(routine="beta", since=integrations.started_at) as replay:
        replayed: list[RunCompleted] = []
        while not set(beta) <= {e.run_id for e in replayed}:
            replayed.append(await asyncio.wait_for(anext(replay), 30))
    assert {e.routine for e in replayed} == {"beta"}


async def test_the_cli_prints_one_json_object_per_finished_run(
    client: Client, integrations: Integrations
) -> None:
    ran = await finished(client, "beta", 2)
    beta_runs = await client.list_runs(RunQuery(routine="beta", limit=100))
    follow = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "mainspring", "runs", "follow"],
        *["--routine", "beta", "--since", "10m", "--json"],
        env=integrations.deployment.env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert follow.stdout is not None
    try:
        lines = [await asyncio.wait_for(follow.stdout.readline(), 30) for _ in beta_runs]
    finally:
        follow.terminate()
        await follow.wait()
    printed = [RunCompleted.model_validate_json(line) for line in lines]
    assert {e.routine for e in printed} == {"beta"}
    assert set(ran) <= {e.run_id for e in printed}


async def test_the_plain_nats_py_examples_run_as_written(
    client: Client, integrations: Integrations
) -> None:
    env = {**integrations.deployment.env(), "NATS_URL": integrations.url("client")}
    examples = ROOT / "examples" / "plain_nats"
    follow = await asyncio.create_subprocess_exec(
        *[sys.executable, str(examples / "follow.py"), "beta", "--durable", "plain"],
        *["--count", "2"],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(
            lambda: client.js.consumer_info(subjects.STREAM, "follow-plain"),
            what="the example's durable follower",
        )
        await finished(client, "alpha", 1)
        beta = await finished(client, "beta", 2)
        out, err = await asyncio.wait_for(follow.communicate(), 30)
    finally:
        if follow.returncode is None:
            follow.kill()
    assert follow.returncode == 0, err.decode()
    assert sorted(json.loads(line)["run_id"] for line in out.splitlines()) == sorted(beta)

    append = await asyncio.create_subprocess_exec(
        *[sys.executable, str(examples / "append.py"), "photos", "4", "6", "120"],
        env={**env, "NATS_URL": integrations.url("external")},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(append.communicate(), 30)
    assert append.returncode == 0, err.decode()
    stored = await client.js.get_last_msg(subjects.STREAM, subjects.DATASET_APPENDED)
    assert stored.data is not None
    assert DatasetAppended.model_validate_json(stored.data).to_version == 6


def post(
    url: str, body: Any, token: str | None = TOKEN, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def send(url: str, body: Any, **options: Any) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(post, url, body, **options)


async def test_http_refuses_without_the_token(integrations: Integrations) -> None:
    append = {"dataset": "photos", "from_version": 0, "to_version": 1, "added_records": 1}
    for token in (None, "wrong"):
        status, answer = await send(
            integrations.web + "/api/events/dataset.appended", append, token=token
        )
        assert status == 401
        assert "MAINSPRING_WEB_TOKEN" in answer["error"]


async def test_http_appends_are_stored_once_and_checked(
    client: Client, integrations: Integrations
) -> None:
    url = integrations.web + "/api/events/dataset.appended"
    append = {"dataset": "http-photos", "from_version": 7, "to_version": 9, "added_records": 5}
    assert await send(url, append) == (
        202,
        {"subject": "dataset.appended", "message_id": "dataset:http-photos:7:9"},
    )
    first = await client.js.get_last_msg(subjects.STREAM, subjects.DATASET_APPENDED)
    assert (await send(url, append))[0] == 202
    again = await client.js.get_last_msg(subjects.STREAM, subjects.DATASET_APPENDED)
    assert again.seq == first.seq
    assert again.data is not None
    assert json.loads(again.data)["dataset"] == "http-photos"

    status, answer = await send(url, {"dataset": "http-photos", "from_version": 7})
    assert status == 422
    assert answer["error"].startswith("field 'to_version': Field required")
    status, answer = await send(integrations.web + "/api/events/run.started", append)
    assert status == 404


async def test_http_external_completion_triggers_a_routine(
    client: Client, integrations: Integrations
) -> None:
    url = integrations.web + "/api/events/run.completed"
    done = {"run_id": "etl-77", "routine": "nightly-etl", "status": "completed"}
    status, answer = await send(url, {**done, "outputs": {"rows": 1200}})
    assert status == 202, answer
    assert answer["subject"] == "external.completed.nightly-etl.completed"

    async def downstream() -> dict[str, Any] | None:
        runs = await client.list_runs(RunQuery(routine="after_etl", status="completed"))
        return runs[0] if runs else None

    run = await eventually(downstream, timeout=60, what="after_etl's run")
    assert run["outputs"] == {"upstream": "etl-77", "rows": 1200}

    status, answer = await send(url, {**done, "status": "done"})
    assert status == 422
    assert answer["error"].startswith("field 'status'")


async def test_http_runs_with_a_repeated_idempotency_key_are_one_run(
    client: Client, integrations: Integrations
) -> None:
    url = integrations.web + "/api/routines/alpha/runs"
    body = {"inputs": {"n": 5}, "labels": ["from-http"], "attributes": {"ticket": "T-1"}}
    status, first = await send(url, body, key="order-42")
    assert status == 202
    run = await client.wait(first["run_id"], timeout=60)
    assert (run["status"], run["outputs"], run["source"]) == ("completed", {"n": 5}, "api")
    assert (run["labels"], run["attributes"]) == (["from-http"], {"ticket": "T-1"})

    # Answered from the run history, not the bus's duplicate window: any later time works.
    status, again = await send(url, {"inputs": {"n": 6}}, key="order-42")
    assert (status, again) == (200, {**first, "status": "completed", "repeated": True})
    labelled = await client.list_runs(RunQuery(routine="alpha", label="from-http"))
    assert [r["id"] for r in labelled] == [first["run_id"]]

    status, bad = await send(url, {"inputs": {"n": "many"}}, key="order-43")
    assert status == 400
    assert "'n'" in bad["error"]
    status, bad = await send(url, {"input": {"n": 1}})
    assert status == 422
    assert bad["error"].startswith("field 'input' is not accepted")
    status, bad = await send(integrations.web + "/api/routines/nope/runs", {})
    assert status == 404
    assert "routine create" in bad["error"]
