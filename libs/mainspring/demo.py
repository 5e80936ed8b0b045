"""`mainspring demo`: the whole system on this machine, example routines, their runs shown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mainspring.cli import print_run, short_time, table
from mainspring.client import Client
from mainspring.records import RunQuery
from mainspring.settings import Settings
from mainspring.up import System

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def say(text: str) -> None:
    """A demo step, visibly."""
    print(f"\n==> {text}", flush=True)


async def _demo(settings: Settings) -> None:
    client = await Client.connect(settings)
    try:
        await client.wait_ready()
        say("registering examples/hello (runs every 10s, or by hand)")
        hello = await client.create_routine(EXAMPLES / "hello", "hello")
        print(f"    {hello.name}: {hello.entrypoint}, version {hello.version[:12]}")

        say("mainspring run hello --input name=newcomer --wait")
        run_id = await client.submit(
            "hello", {"name": "newcomer", "steps": 5}, labels=["demo"], source="manual"
        )
        run = await client.wait(run_id, timeout=60)
        print_run(run)

        say("waiting for the schedule to fire hello twice on its own")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = await client.list_runs(
                RunQuery(routine="hello", source="trigger", status="completed")
            )
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.5)

        say("mainspring runs list")
        runs = await client.list_runs(RunQuery(limit=10))
        rows = [
            {**r, "created": short_time(r["created_at"]), "number": r["run_number"]} for r in runs
        ]
        print(table(rows, ["id", "routine", "number", "status", "source", "created"]))

        say("mainspring routine events hello")
        events = await client.trigger_events("hello", 5)
        for event in events:
            event["scheduled_at"] = short_time(event["scheduled_at"])
        print(table(events, ["scheduled_at", "kind", "status", "run_id"]))
    finally:
        await client.close()


def run_demo(keep_up: bool = False) -> int:
    """Start everything, run the demo, stop (or stay up with keep_up)."""
    settings = Settings()
    system = System(settings)
    system.start()
    print(
        f"mainspring is up: NATS {system.nats_url}, home {system.home}, logs in {system.home / 'logs'}"
    )
    print(f"watch it live on the web page: http://127.0.0.1:{system.web_port}", flush=True)
    try:
        asyncio.run(_demo(settings.model_copy(update={"nats_url": system.nats_url})))
        if keep_up:
            say("staying up; try `mainspring runs list` in another terminal. Ctrl-C stops.")
            while True:
                system.supervise_once()
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping")
        system.stop()
    return 0
