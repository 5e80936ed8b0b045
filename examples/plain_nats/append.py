"""Announce rows appended to a dataset with nats-py alone: no Mainspring import.

    NATS_URL=nats://external:PASSWORD@host:4222 python append.py photos 4 6 120

Publishes `dataset.appended` for versions (FROM, TO] of DATASET with ADDED rows and waits
for JetStream's acknowledgement. The Nats-Msg-Id makes a repeated announcement of the same
range a no-op within the stream's duplicate window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import nats


async def append(dataset: str, from_version: int, to_version: int, added: int) -> None:
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    body = {
        "dataset": dataset,
        "from_version": from_version,
        "to_version": to_version,
        "added_records": added,
    }
    ack = await nc.jetstream().publish(
        "dataset.appended",
        json.dumps(body).encode(),
        headers={"Nats-Msg-Id": f"dataset:{dataset}:{from_version}:{to_version}"},
    )
    print(f"stored as message {ack.seq} of stream {ack.stream}")
    await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("from_version", type=int)
    parser.add_argument("to_version", type=int)
    parser.add_argument("added_records", type=int)
    args = parser.parse_args()
    asyncio.run(append(args.dataset, args.from_version, args.to_version, args.added_records))


if __name__ == "__main__":
    main()
