"""`mainspring dev DIR`: register a folder's routines, re-register on each edit, print each run.

A new version is registered for each edit that changes the code; runs already requested
finish on the version they started with (a run carries its code digest). An edit that
breaks the contract is refused with its one-line error and the last good version stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from mainspring.base.schedules import ScheduleError
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, RunCompleted
from mainspring.sdk.bundle import BundleError, bundle_files, make_bundle, routine_entrypoints
from mainspring.sdk.routine import ContractError, InputError
from mainspring.storage.registry import RoutineDefinition

Say = Callable[[str], None]
Signature = tuple[tuple[str, int, int], ...]

# Errors of an edit the author fixes in the code: refused in one line, the loop goes on.
# OSError: a file renamed or removed while it was bundled; the next look sees the result.
EDIT_ERRORS = (BundleError, ContractError, InputError, ScheduleError, ValueError, OSError)


def folder_signature(folder: Path) -> Signature:
    """What an edit changes: each bundled file's path, modification time and size."""
    signature: list[tuple[str, int, int]] = []
    if not folder.is_dir():  # moved away for a moment (a checkout): nothing to register
        return ()
    for path in bundle_files(folder):
        with contextlib.suppress(FileNotFoundError):  # removed while we looked
            stat = path.stat()
            signature.append((path.relative_to(folder).as_posix(), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


def snake_case(name: str) -> str:
    """`EmbedNewRows` → `embed_new_rows`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def routine_names(folder: Path, entrypoints: list[str], name: str | None) -> dict[str, str]:
    """Routine name → entrypoint: one routine is named `name` or after its folder, several
    after their classes."""
    if not entrypoints:
        raise BundleError(
            f"{folder} holds no Routine class: define one, e.g. `class Hello(Routine):`"
        )
    if len(entrypoints) == 1:
        return {name or folder.resolve().name: entrypoints[0]}
    if name is not None:
        raise BundleError(
            f"{folder} holds {len(entrypoints)} Routine classes ({', '.join(entrypoints)}): "
            "--name names one routine; leave it out to name each after its class"
        )
    return {snake_case(entry.rpartition(":")[2]): entry for entry in entrypoints}


def describe_run(completed: RunCompleted, version: str | None) -> str:
    """One line for a finished run: number, status, time, version, outputs or error."""
    took = ""
    if completed.started_at is not None:
        took = f" in {(completed.finished_at - completed.started_at).total_seconds():.2f}s"
    on = f" on version {version[:12]}" if version else ""
    head = f"{completed.routine} #{completed.run_number} {completed.status}{took}{on}"
    if completed.status == "completed":
        return f"{head}: {json.dumps(completed.outputs, default=str)}"
    return f"{head}: {completed.error or 'no error given'}"


class DevLoop:
    """Registers a folder's routines with a client and follows their runs."""

    def __init__(self, client: Any, folder: Path, name: str | None, say: Say, warn: Say) -> None:
        self.client = client
        self.folder = folder
        self.name = name
        self.say = say
        self.warn = warn
        self.registered: dict[str, RoutineDefinition] = {}
        # The code version of each run requested, to name it when the run ends.
        self.versions: dict[str, str] = {}

    async def follow_runs(self) -> list[Any]:
        """Print each run of our routines as it ends; returns the subscriptions."""

        async def on_requested(message: Msg) -> None:
            request = RequestRun.model_validate_json(message.data)
            if request.routine in self.registered:
                self.versions[request.run_id] = request.routine_version

        async def on_completed(message: Msg) -> None:
            completed = RunCompleted.model_validate_json(message.data)
            if completed.routine in self.registered:
                self.say(describe_run(completed, self.versions.pop(completed.run_id, None)))

        nc = self.client.nc
        return [
            await nc.subscribe(subjects.RUN_REQUESTED, cb=on_requested),
            await nc.subscribe(subjects.RUN_IN_MEMORY, cb=on_requested),
            await nc.subscribe(subjects.RUN_COMPLETED_ANY, cb=on_completed),
        ]

    async def register(self) -> bool:
        """Register each routine whose code changed; returns whether a version changed."""
        try:
            entrypoints = await asyncio.to_thread(routine_entrypoints, self.folder)
            targets = routine_names(self.folder, entrypoints, self.name)
            _, digest = await asyncio.to_thread(make_bundle, self.folder)
        except EDIT_ERRORS as exc:
            self.refuse("", exc)
            return False
        changed = False
        for routine, entrypoint in targets.items():
            last = self.registered.get(routine)
            if last is not None and last.version == digest and last.entrypoint == entrypoint:
                continue
            try:
                definition = await self.client.create_routine(self.folder, routine, entrypoint)
            except EDIT_ERRORS as exc:
                self.refuse(routine, exc)
                continue
            self.registered[routine] = definition
            changed = True
            self.say(
                f"registered {routine}: {definition.entrypoint}, version {definition.version[:12]}"
                + (" (runs in flight finish on the previous one)" if last is not None else "")
            )
        return changed

    def refuse(self, routine: str, error: Exception) -> None:
        """Say why an edit was not registered and which version keeps running."""
        last = self.registered.get(routine)
        keeps = f"; {routine} stays on version {last.version[:12]}" if last else ""
        self.warn(f"refused: {error}{keeps}")

    async def collect_bundles(self) -> None:
        """Delete the code of versions nothing uses any more; a failure only warns."""
        try:
            deleted = await self.client.collect_bundles()
        except Exception as exc:  # noqa: BLE001 - collecting is housekeeping: the loop goes on
            self.warn(f"could not collect unused code bundles: {exc}")
            return
        if deleted:
            self.say(f"deleted {len(deleted)} code bundle(s) no routine or unfinished run uses")

    async def watch(self, poll_s: float) -> None:
        """Re-register after each edit, once the folder has held still for one poll."""
        seen = await asyncio.to_thread(folder_signature, self.folder)
        while True:
            await asyncio.sleep(poll_s)
            current = await asyncio.to_thread(folder_signature, self.folder)
            if current == seen:
                continue
            # Editors save in steps (a temporary file, then a rename): wait for stillness.
            await asyncio.sleep(poll_s)
            if await asyncio.to_thread(folder_signature, self.folder) != current:
                continue
            seen = current
            if await self.register():
                await self.collect_bundles()


async def develop(
    client: Any,
    folder: Path,
    name: str | None,
    poll_s: float = 0.5,
    say: Say | None = None,
    warn: Say | None = None,
) -> None:
    """Register the folder's routines, then follow edits and runs until cancelled."""
    # Compiled code is neither written nor read: an edit keeping a file's size within the
    # same second would otherwise import the .pyc of the code before it.
    sys.dont_write_bytecode = True
    sys.pycache_prefix = tempfile.mkdtemp(prefix="mainspring-dev-")
    loop = DevLoop(
        client,
        folder,
        name,
        say or (lambda line: print(line, flush=True)),
        warn or (lambda line: print(f"mainspring dev: {line}", file=sys.stderr, flush=True)),
    )
    subscriptions = await loop.follow_runs()
    try:
        await loop.register()
        loop.say(f"watching {folder} for edits; Ctrl-C stops")
        await loop.watch(poll_s)
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
