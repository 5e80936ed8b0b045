"""Run the benchmarks: `python -m bench [NAME ...]` (all when no name is given).

Each benchmark is a module of this package with a `main()` that prints its figures, each
beside a raw baseline measured in the same run (the machines are noisy, ratios travel).
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = {
    "ticker": "bench.ticker",
}


def main(argv: list[str]) -> int:
    """Run the named benchmarks in order."""
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        print(f"== {name} ==", flush=True)
        started = time.monotonic()
        importlib.import_module(BENCHMARKS[name]).main()
        print(f"({name} took {time.monotonic() - started:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
