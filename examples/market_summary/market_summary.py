"""The lythonic tutorial's market-summary pipeline: fetch prices, then summarize them.

Register it with `mainspring dag create examples/market_summary` and run it with
`mainspring dag run pipelines:market_summary --wait`. `summarize` receives `fetch_prices`'s
whole return value because its parameter's annotation equals that return annotation.
"""

from mainspring.compose import Dag, Namespace


async def fetch_prices() -> dict[str, float]:
    """Simulate fetching latest prices."""
    return {"AAPL": 185.0, "GOOG": 140.0}


async def summarize(prices: dict[str, float]) -> str:
    total = sum(prices.values())
    return f"Portfolio value: ${total:.2f}"


ns = Namespace()
ns.register(fetch_prices, nsref="market:fetch")
ns.register(summarize, nsref="market:summarize")

dag = Dag()
dag.node(ns.get("market:fetch")) >> dag.node(ns.get("market:summarize"))

ns.register(dag, nsref="pipelines:market_summary")
