"""Follow Mainspring's finished runs with nats-py alone: no Mainspring import.

    pip install nats-py
    NATS_URL=nats://client:PASSWORD@host:4222 python follow.py [ROUTINE] [--durable NAME] [--count N]

Prints one JSON object per finished run. Completions are published on
`run.completed.<routine>.<status>` in the JetStream stream MAINSPRING, so the server filters:
this script's consumer only ever sees ROUTINE's runs. With --durable, a restart resumes after
the last acknowledged run (names under `follow-`; the server deletes a durable follower
after a day without pulls). Delivery is at least once: deduplicate by `run_id`.
A routine name with characters other than letters, digits, `-` and `_` is escaped in the
subject (each other byte as `_xx` in hex, e.g. `a.b` is `a_2eb`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import nats
from nats.errors import TimeoutError as FetchTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def follow(routine: str, durable: str | None, count: int | None) -> None:
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    subject = f"run.completed.{routine}.*"
    name = f"follow-{durable}" if durable else None
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        # Seconds without a pull before the server deletes the follower.
        inactive_threshold=86400.0 if durable else 5.0,
    )
    subscription = await js.pull_subscribe(
        subject, durable=name, stream="MAINSPRING", config=config
    )
    seen = 0
    try:
        while count is None or seen < count:
            try:
                messages = await subscription.fetch(1, timeout=5)
            except FetchTimeout:
                continue
            for message in messages:
                event = json.loads(message.data)
                print(json.dumps(event), flush=True)
                # Acknowledged after handling: a crash before this line gets the run again.
                await message.ack_sync()
                seen += 1
    finally:
        await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routine", nargs="?", default="*", help="a routine name (default: all)")
    parser.add_argument("--durable", help="resume where the follower of this name stopped")
    parser.add_argument("--count", type=int, help="stop after this many runs")
    args = parser.parse_args()
    asyncio.run(follow(args.routine, args.durable, args.count))


if __name__ == "__main__":
    main()
