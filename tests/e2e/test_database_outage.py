"""The recorder's database goes away under load for half a minute: nothing acked while it is
away, the recorder keeps serving and says why it is not ready, then catches up with every run."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from sqlmodel import Session, col, select

from mainspring.apps.up import free_port
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.storage.records import RunRecord, open_engine
from mainspring_services.recorder.handlers import RUNS_DURABLE
from tests.harness import Deployment, TcpProxy, consumer_idle, eventually, write_routine

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

QUICK = """
from mainspring import Routine, on_schedule

class Quick(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *"), n: int = 0) -> dict:
        return {"n": n}
"""
OUTAGE_S = 30.0
SUBMIT_EVERY_S = 0.25
# A recorder that backs off tries the database a few times a second at most; one that
# retries in a tight loop (a fetch, a failed commit, a nak, the next fetch) makes thousands.
MAX_CONNECT_ATTEMPTS_PER_S = 10


def readyz(port: int) -> tuple[int, str]:
    """The recorder's readiness answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def through(proxy: TcpProxy, database_url: str) -> str:
    """The database URL with its host and port replaced by the proxy's."""
    return re.sub(r"@[^/]+/", f"@127.0.0.1:{proxy.port}/", database_url)


def recorded(database_url: str, run_ids: set[str]) -> dict[str, str]:
    """The recorded status of each of these runs, read from the real database."""
    engine = open_engine(database_url, migrate=False)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(RunRecord.id, RunRecord.status).where(col(RunRecord.id).in_(run_ids))
            ).all()
            return dict(rows)
    finally:
        engine.dispose()


@pytest.mark.parametrize("deployment", ["postgres"], indirect=True)
async def test_recorder_rides_out_a_database_outage_under_load(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        await ride_out_an_outage(deployment, client, tmp_path, proxy)


async def ride_out_an_outage(
    deployment: Deployment, client: Client, tmp_path: Path, proxy: TcpProxy
) -> None:
    http_port = free_port()
    recorder = deployment.start(
        "recorder",
        env={
            "MAINSPRING_DATABASE_URL": through(proxy, deployment.database_url),
            "MAINSPRING_HTTP_PORT": str(http_port),
        },
    )
    for name in ("dispatcher", "ticker", "dataset_watcher", "runner"):
        deployment.start(name)
    await client.create_routine(write_routine(tmp_path / "quick", QUICK), "quick")
    await client.wait_ready(timeout=60)

    completed: dict[str, str] = {}

    async def on_completed(message: Msg) -> None:
        body = json.loads(message.data)
        completed[body["run_id"]] = body["status"]

    watch = await client.nc.subscribe(f"{subjects.RUN_COMPLETED}.quick.*", cb=on_completed)
    submitted: list[str] = []
    stop_submitting = asyncio.Event()

    async def submit_steadily() -> None:
        while not stop_submitting.is_set():
            submitted.append(await client.submit("quick", {"n": len(submitted)}))
            await asyncio.sleep(SUBMIT_EVERY_S)

    load = asyncio.create_task(submit_steadily())
    try:
        await eventually(
            lambda: asyncio.to_thread(recorded, deployment.database_url, set(completed)),
            timeout=60,
            what="runs recorded before the outage",
        )

        proxy.cut()
        cut_at = time.monotonic()
        completed_before_cut = set(completed)

        async def not_ready() -> str | None:
            status, body = await asyncio.to_thread(readyz, http_port)
            return body if status == 503 and "database does not answer" in body else None

        await eventually(not_ready, timeout=20, what="/readyz naming the database")

        async def runs_completed_while_cut() -> bool:
            return len(set(completed) - completed_before_cut) >= 10

        await eventually(runs_completed_while_cut, timeout=OUTAGE_S, what="runs ending meanwhile")
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        # Nothing acked while the database was away: what ended meanwhile is still pending.
        info = await client.js.consumer_info(subjects.STREAM, RUNS_DURABLE)
        assert info.num_pending + info.num_ack_pending > 0, "events acked without a database"
        attempts_per_s = proxy.attempts_while_cut / (time.monotonic() - cut_at)
        proxy.restore()
        assert attempts_per_s <= MAX_CONNECT_ATTEMPTS_PER_S, (
            f"the recorder tried the database {attempts_per_s:.0f} times a second while it was away"
        )
        assert recorder.alive(), "the recorder died while its database was away"
    finally:
        stop_submitting.set()
        await load
        proxy.restore()

    async def every_run_completed() -> bool:
        return set(submitted) <= set(completed)

    await eventually(every_run_completed, timeout=120, what="every submitted run ended")

    async def all_recorded_final() -> bool:
        rows = await asyncio.to_thread(recorded, deployment.database_url, set(completed))
        assert rows == completed, {
            run_id: (rows.get(run_id), status)
            for run_id, status in completed.items()
            if rows.get(run_id) != status
        }
        return True

    # Nacked events come back after a delay that has grown during the outage (at most 60s).
    await eventually(all_recorded_final, timeout=150, interval=1, what="every run recorded")
    assert await consumer_idle(client.js, RUNS_DURABLE)
    assert await asyncio.to_thread(readyz, http_port) == (200, "ready\n")
    dead = json.loads(deployment.cli("deadletters", "list", "--json").stdout)
    assert dead == [], dead
    assert {name: s.alive() for name, s in deployment.services.items()} == dict.fromkeys(
        deployment.services, True
    )
    await watch.unsubscribe()
