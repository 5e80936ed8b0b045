"""`python -m bench [NAME ...]`: run each benchmark module's main() (all when none is named).

A name may be written with hyphens (`latency-under-load` is bench.latency_under_load).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(names: list[str]) -> None:
    """Import bench modules by name and run their main()."""
    available = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )
    for name in [n.replace("-", "_") for n in names] or available:
        if name not in available:
            raise SystemExit(f"no benchmark {name!r}: choose from {', '.join(available)}")
        print(f"== bench.{name}", flush=True)
        started = time.monotonic()
        importlib.import_module(f"bench.{name}").main()
        print(f"(bench.{name} took {time.monotonic() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
