"""Recorder under a backlog: run events recorded per second, and a page of 50 answered meanwhile.

A real nats-server (fsync always, as `mainspring up`) and the recorder as its own process, on
SQLite under a temp home (and on PostgreSQL when MAINSPRING_BENCH_POSTGRES holds an admin URL).
RUNS runs' events (requested, started, completed: what the dispatcher and a runner publish)
are stored while the recorder is paused (SIGSTOP), then it resumes and drains them; the rate
is events acked per second. The baseline drains the same stored events with the simplest raw
nats-py consumer on the same server: fetch up to the same batch size, ack each, no parsing, no
database. During the recorder's drain a client asks for pages of 50 runs back to back
(`runs list`); their latency is printed as median and p99 (p99 only from >= 1,000 samples,
else max).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from bench.measure import percentile
from mainspring.apps.up import free_port, start_nats_server, wait_for_port
from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, RunCompleted, RunStarted
from mainspring.runtime.bus import set_up_now

RUNS = int(os.environ.get("MAINSPRING_BENCH_RECORDER_RUNS", "5000"))
BATCH = 500
ROOT = Path(__file__).resolve().parent.parent


def events() -> list[tuple[str, bytes]]:
    """Three events per run, in the order the services publish them."""
    t0 = datetime.now(UTC)
    out: list[tuple[str, bytes]] = []
    for index in range(RUNS):
        at = t0 + timedelta(milliseconds=index)
        run_id, routine = f"bench-{index:06d}", f"r{index % 10}"
        request = RequestRun(
            run_id=run_id,
            routine=routine,
            routine_version="d1",
            entrypoint="r.py:R",
            run_number=index + 1,
            source="trigger",
            trigger_kind="schedule",
            requested_at=at,
        )
        started = RunStarted(run_id=run_id, routine=routine, runner="bench", started_at=at)
        done = RunCompleted(run_id=run_id, routine=routine, status="completed", finished_at=at)
        out += [
            (subjects.RUN_REQUESTED, request.model_dump_json().encode()),
            (subjects.RUN_STARTED, started.model_dump_json().encode()),
            (done.subject(), done.model_dump_json().encode()),
        ]
    return out


async def publish(js: JetStreamContext, messages: list[tuple[str, bytes]]) -> None:
    """Pipelined publishes, each acked by the stream."""
    for start in range(0, len(messages), 500):
        chunk = messages[start : start + 500]
        await asyncio.gather(*(js.publish(subject, body) for subject, body in chunk))


async def drained(js: JetStreamContext, consumer: str) -> bool:
    info = await js.consumer_info(subjects.STREAM, consumer)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def raw_drain(nc: NatsClient, js: JetStreamContext, count: int) -> float:
    """Seconds for a bare consumer to fetch and ack `count` stored run events."""
    consumer = f"bench-raw-{uuid.uuid4().hex[:6]}"
    subscription = await js.pull_subscribe(
        "run.>",
        durable=consumer,
        stream=subjects.STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000),
    )
    started = time.perf_counter()
    seen = 0
    while seen < count:
        for message in await subscription.fetch(batch=BATCH, timeout=5):
            await message.ack()
            seen += 1
    await nc.flush()  # every ack reached the server
    return time.perf_counter() - started


def measure(database_url: str, home: Path) -> dict[str, float | int]:
    """Start nats-server and the recorder, drive the drain, stop both."""
    port = free_port()
    server = start_nats_server(home / "nats", port, home / "nats.log")
    env = {
        **os.environ,
        "MAINSPRING_NATS_URL": f"nats://127.0.0.1:{port}",
        "MAINSPRING_HOME": str(home),
        "MAINSPRING_DATABASE_URL": database_url,
        "MAINSPRING_DUPLICATE_WINDOW_S": "120",
    }
    wait_for_port(port)
    set_up_now(Settings(nats_url=env["MAINSPRING_NATS_URL"], duplicate_window_s=120))
    with (home / "recorder.log").open("wb") as log:
        recorder = subprocess.Popen(
            [sys.executable, "-m", "mainspring_services.recorder.main"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port)
            return asyncio.run(drive(f"nats://127.0.0.1:{port}", recorder))
        finally:
            recorder.send_signal(signal.SIGCONT)
            recorder.terminate()
            recorder.wait(timeout=30)
            server.terminate()
            server.wait(timeout=15)


async def drive(url: str, recorder: subprocess.Popen[bytes]) -> dict[str, float | int]:
    """Store the events while the recorder is paused, then time its drain and the raw one."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    while True:
        try:
            await nc.request(subjects.API_RUNS_LIST, b'{"limit": 1}', timeout=1)
            break
        except (NatsTimeoutError, NoRespondersError):
            await asyncio.sleep(0.2)  # the recorder is still starting
    stored = events()
    recorder.send_signal(signal.SIGSTOP)
    await publish(js, stored)
    latencies: list[float] = []
    recorder.send_signal(signal.SIGCONT)
    started = time.perf_counter()
    while not await drained(js, subjects.RECORDER_RUNS_CONSUMER):
        asked = time.perf_counter()
        await nc.request(subjects.API_RUNS_LIST, b'{"limit": 50}', timeout=10)
        latencies.append((time.perf_counter() - asked) * 1000)
    recorder_s = time.perf_counter() - started
    raw_s = await raw_drain(nc, js, len(stored))
    await nc.close()
    return {
        "events": len(stored),
        "recorder_per_s": len(stored) / recorder_s,
        "raw_per_s": len(stored) / raw_s,
        "pages": len(latencies),
        "page_p50_ms": percentile(latencies, 0.5) if latencies else 0.0,
        "page_tail_ms": percentile(latencies, 0.99 if len(latencies) >= 1000 else 1.0)
        if latencies
        else 0.0,
    }


def postgres_database(admin_url: str) -> tuple[str, str]:
    """A fresh database on the PostgreSQL server at admin_url: (its URL, its name)."""
    import psycopg

    name = f"mainspring_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


def main() -> None:
    """Print each database's drain rate beside the raw consumer's, and the page latency."""
    targets: list[tuple[str, str | None]] = [("sqlite", None)]
    admin = os.environ.get("MAINSPRING_BENCH_POSTGRES")
    if admin:
        targets.append(("postgres", admin))
    for label, admin_url in targets:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            if admin_url is None:
                url, name = f"sqlite:///{home / 'runs.db'}", ""
            else:
                url, name = postgres_database(admin_url)
            try:
                result = measure(url, home)
            finally:
                if admin_url is not None:
                    import psycopg

                    with psycopg.connect(admin_url, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        tail = "p99" if result["pages"] >= 1000 else "max"
        print(
            f"recorder {label}: {result['events']} run events drained at "
            f"{result['recorder_per_s']:.0f}/s vs raw consumer {result['raw_per_s']:.0f}/s "
            f"(ratio {result['recorder_per_s'] / result['raw_per_s']:.3f}); "
            f"{result['pages']} pages of 50 meanwhile: median {result['page_p50_ms']:.1f} ms, "
            f"{tail} {result['page_tail_ms']:.1f} ms",
            flush=True,
        )
