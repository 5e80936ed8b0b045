"""lythonic's "Scheduled Triggers" tutorial in embedded mode: the whole system in this process's
asyncio application, as lythonic's TriggerManager runs it.

    python examples/market_summary/run_tutorial.py [HOME]      # or: just tutorial

It fires the hourly market summary once by hand and prints its node table and history, then
lets the queue_check poll trigger (every 10 seconds) skip an empty queue and fire for one order.
HOME (default: a new temporary folder) holds the bus, the logs and the run history.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from market_summary import ns

import mainspring

POLL_WAIT_S = 40.0


async def events_until(
    manager: Any, name: str, status: str, timeout_s: float = POLL_WAIT_S
) -> list[dict[str, Any]]:
    """The trigger's events once one has `status` (the ticker fires every 10 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        events: list[dict[str, Any]] = await manager.get_events(name)
        if any(e["status"] == status for e in events):
            return events
        if loop.time() > deadline:
            raise TimeoutError(f"{name} recorded no {status} event within {timeout_s:g}s")
        await asyncio.sleep(0.5)


async def main(home: Path) -> None:
    queue = home / "orders.queue"
    # The poll function runs in a runner's process, which inherits this environment.
    os.environ["MARKET_ORDER_QUEUE"] = str(queue)
    async with mainspring.embedded(namespace=ns, home=home) as manager:
        await manager.activate("hourly_market")
        run_id = await manager.fire("hourly_market")
        run = await manager.wait(run_id, timeout=60)
        print(f"run {run_id}: {run['status']}, outputs {run['outputs']}")
        for node in run["dag"]["nodes"]:
            print(f"  node {node['label']}: {node['status']} -> {node['output']!r}")
        for event in await manager.get_events("hourly_market"):
            print(
                f"Fired at: {event['fired_at']}, status: {event['status']}, run: {event['run_id']}"
            )

        await manager.activate("queue_check")
        manager.start()
        await events_until(manager, "queue_check", "skipped")
        print("queue_check: the queue is empty, so the tick was skipped")
        queue.write_text("new order\n")
        events = await events_until(manager, "queue_check", "fired")
        manager.stop()
        fired = next(e for e in events if e["status"] == "fired")
        order = await manager.wait(fired["run_id"], timeout=60)
        print(f"queue_check fired with {fired['payload']}: {order['outputs']}")
        await manager.deactivate("queue_check")


if __name__ == "__main__":
    home = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="tutorial-"))
    print(f"home: {home}")
    asyncio.run(main(home))
