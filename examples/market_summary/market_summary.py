"""The lythonic tutorial's pipelines: a market summary, and orders taken from a queue.

Register them with `mainspring dag create examples/market_summary` (the triggers declared
here are created inactive) and run one with `mainspring dag run pipelines:market_summary
--wait`; or run the whole tutorial in one process with `python run_tutorial.py` (embedded
mode). `summarize` receives `fetch_prices`'s whole return value because its parameter's
annotation equals that return annotation.
"""

import os
from pathlib import Path

from mainspring.compose import Dag, Namespace


async def fetch_prices() -> dict[str, float]:
    """Simulate fetching latest prices."""
    return {"AAPL": 185.0, "GOOG": 140.0}


async def summarize(prices: dict[str, float]) -> str:
    total = sum(prices.values())
    return f"Portfolio value: ${total:.2f}"


def process_order(message: str) -> str:
    """Handle one order taken from the queue."""
    return f"processed: {message}"


def check_queue() -> dict[str, str] | None:
    """Take the oldest order line from the queue file: a dict fires, None skips.

    Runs on a runner, in a process of its own, at every tick of the queue_check trigger;
    the file is named by MARKET_ORDER_QUEUE (no queue: nothing to do).
    """
    named = os.environ.get("MARKET_ORDER_QUEUE")
    queue = Path(named) if named else None
    if queue is None or not queue.exists():
        return None
    first, _, rest = queue.read_text().partition("\n")
    queue.write_text(rest)
    return {"message": first} if first.strip() else None


ns = Namespace()
ns.register(fetch_prices, nsref="market:fetch")
ns.register(summarize, nsref="market:summarize")

dag = Dag()
dag.node(ns.get("market:fetch")) >> dag.node(ns.get("market:summarize"))

ns.register(dag, nsref="pipelines:market_summary")

ns.register_trigger(
    name="hourly_market",
    dag_nsref="pipelines:market_summary",
    trigger_type="poll",
    schedule="0 * * * *",
)

ns.register(process_order, nsref="orders:process")
orders = Dag()
orders.node(ns.get("orders:process"))
ns.register(orders, nsref="pipelines:process_order")

ns.register_trigger(
    name="queue_check",
    dag_nsref="pipelines:process_order",
    trigger_type="poll",
    poll_fn=check_queue,
    schedule="*/10 * * * * *",  # every 10 seconds (six fields: seconds first)
)
