"""The process a poll function runs in: import it from the bundle, call it, report.

`python -m mainspring_services.runner.poll_child BUNDLE_DIR RESULT_FILE`, the function's
`module:qualname` on stdin. The result (a JSON payload, or an error line) goes to
RESULT_FILE, so what the function prints never mixes with it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from mainspring_services.runner.worker_user import become_worker_user


def call_poll(bundle_dir: Path, fn: str) -> dict[str, Any]:
    """Import and call `module:qualname`; a dict fires, None skips, anything else is an error."""
    module_name, _, qualname = fn.partition(":")
    sys.path.insert(0, str(bundle_dir.resolve()))
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception as exc:  # noqa: BLE001 - user code
        return {"error": f"cannot import poll function {fn}: {type(exc).__name__}: {exc}"}
    try:
        value = target()
        if inspect.isawaitable(value):
            # An `async def` poll function: its result is what the coroutine returns.
            value = asyncio.run(_awaited(value))
    except BaseException as exc:  # noqa: BLE001 - user code
        return {"error": f"{type(exc).__name__}: {exc}"}
    if value is not None and not isinstance(value, dict):
        return {
            "error": f"poll function {fn} returned {type(value).__name__}: return a dict "
            "(fire, keys become inputs) or None (skip)"
        }
    try:
        return {"payload": None if value is None else json.loads(json.dumps(value, default=str))}
    except ValueError as exc:
        return {"error": f"poll function {fn} returned a dict that is not JSON: {exc}"}


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def main() -> None:
    """Entry point."""
    become_worker_user(os.environ)
    fn = sys.stdin.read().strip()
    result = call_poll(Path(sys.argv[1]), fn)
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
