"""The routine author's loop on the real system: the pytest plugin's shared system, `mainspring dev`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import IO

import pyarrow as pa
import pytest

from mainspring.sdk.bundle import make_bundle
from mainspring.testing import TestSystem
from tests.harness import copy_example, eventually, write_routine

pytestmark = pytest.mark.e2e


def test_the_plugin_system_runs_the_example_chain(
    mainspring_system: TestSystem, tmp_path: Path
) -> None:
    mainspring_system.create_dataset("photos", "id:int64,text:string")
    mainspring_system.register(copy_example("embed_new_rows", tmp_path), "embed_new_rows")
    mainspring_system.register(copy_example("embedding_report", tmp_path), "embedding_report")
    mainspring_system.append(
        "photos", pa.table({"id": list(range(100)), "text": ["a photo"] * 100})
    )
    [embedded] = mainspring_system.wait_for_runs("embed_new_rows")
    assert embedded["status"] == "completed", embedded.get("error")
    assert embedded["outputs"] == {"embedded": 100, "versions": [0, 1]}
    [report] = mainspring_system.wait_for_runs("embedding_report")
    assert report["outputs"] == {"upstream_run": embedded["id"], "embedded": 100, "total": 100}


EDITED = """
from mainspring import Routine, on_schedule


class Edited(Routine):
    def run(self, tick=on_schedule(every="1h"){extra}) -> dict:
        return {{"version": {version!r}}}
"""


class Output:
    """The lines a process prints on stdout and stderr, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        for stream in (process.stdout, process.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, needle: str, after: int = 0, timeout_s: float = 30.0) -> int:
        """The index of the first line from `after` on containing `needle`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                for index in range(after, len(self.lines)):
                    if needle in self.lines[index]:
                        return index
            time.sleep(0.05)
        shown = "\n".join(self.lines)
        raise AssertionError(f"no line with {needle!r} after {timeout_s:g}s; printed:\n{shown}")


def test_dev_registers_each_edit_and_the_next_run_uses_it(
    mainspring_system: TestSystem, tmp_path: Path
) -> None:
    folder = write_routine(tmp_path / "edited", EDITED.format(extra="", version=1))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mainspring",
            "dev",
            str(folder),
            "--name",
            "edited",
            "--poll",
            "0.1",
        ],
        env=mainspring_system.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = Output(process)
    try:
        seen = output.wait_for("registered edited: routine.py:Edited, version ")
        first = mainspring_system.run("edited")
        assert first["outputs"] == {"version": 1}
        seen = output.wait_for("edited #1 completed", seen)
        assert f"on version {first['routine_version'][:12]}: " in output.lines[seen]

        write_routine(folder, EDITED.format(extra="", version="two"))
        seen = output.wait_for("registered edited: ", seen)
        second = mainspring_system.run("edited")
        assert second["outputs"] == {"version": "two"}
        assert second["routine_version"] != first["routine_version"]
        assert second["routine_version"][:12] in output.lines[seen]
        seen = output.wait_for("edited #2 completed", seen)

        write_routine(folder, EDITED.format(extra=", size=1", version="broken"))
        refused = output.wait_for("mainspring dev: refused: ", seen)
        assert output.lines[refused] == (
            "mainspring dev: refused: parameter 'size' of Edited.run() has no type annotation: "
            f"write `size: int = 1`; edited stays on version {second['routine_version'][:12]}"
        )
        assert mainspring_system.run("edited")["outputs"] == {"version": "two"}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


GATED = """
import time
from pathlib import Path

from mainspring import Routine, on_schedule


class Gated(Routine):
    def run(self, tick=on_schedule(every="1h")) -> dict:
        while not Path({gate!r}).exists():
            time.sleep(0.02)
        return {{"version": {version!r}}}
"""


async def test_unused_code_bundles_are_deleted_and_those_of_unfinished_runs_kept(
    mainspring_system: TestSystem, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    folder = write_routine(tmp_path / "gated", GATED.format(gate=str(gate), version="old"))
    client = await mainspring_system.connect()
    try:
        old = await client.create_routine(folder, "gated")
        run_id = await client.submit("gated")

        async def running() -> bool:
            run = await client.get_run(run_id)
            return run is not None and run["status"] == "running"

        await eventually(running, what="the run on the old version to start")
        write_routine(folder, GATED.format(gate=str(gate), version="new"))
        new = await client.create_routine(folder, "gated")
        gone = await client.create_routine(
            write_routine(tmp_path / "gone", EDITED.format(extra="", version=0)), "gone"
        )
        await (await client.store()).delete("gone")

        # The first sweep only marks what nothing uses; the second deletes it.
        assert gone.version not in await client.collect_bundles(grace=timedelta(0))
        deleted = await client.collect_bundles(grace=timedelta(0))
        assert gone.version in deleted
        stored = {bundle.digest for bundle in await (await client.store()).stored_bundles()}
        assert {old.version, new.version} <= stored
        assert gone.version not in stored

        # Code registered again while marked loses its mark, so the next sweep cannot delete it.
        store = await client.store()
        await client.collect_bundles(grace=timedelta(hours=1))
        marked = {b.digest: b.unreferenced_since for b in await store.stored_bundles()}
        assert marked[old.version] is None  # the unfinished run uses it
        again = write_routine(tmp_path / "again", EDITED.format(extra="", version="again"))
        first = await client.create_routine(again, "again")
        write_routine(again, EDITED.format(extra="", version="again, changed"))
        await client.create_routine(again, "again")
        await client.collect_bundles(grace=timedelta(hours=1))
        assert {b.digest: b for b in await store.stored_bundles()}[first.version].unreferenced_since
        data, _ = make_bundle(write_routine(again, EDITED.format(extra="", version="again")))
        await store.put_bundle(first.version, data)
        assert {b.digest: b for b in await store.stored_bundles()}[
            first.version
        ].unreferenced_since is None

        gate.touch()
        finished = await client.wait(run_id, timeout=30)
        assert finished["outputs"] == {"version": "old"}
        assert finished["routine_version"] == old.version
        await client.collect_bundles(grace=timedelta(0))
        assert old.version in await client.collect_bundles(grace=timedelta(0))
    finally:
        await client.close()
