"""An artifact store that cannot be written, or is full, fails the run with a reason naming the
store and the fix; the runner lives on and serves the next run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract.messages import SubmitRun
from mainspring.storage.artifacts import artifact_dir
from mainspring.storage.runlogs import log_path
from tests.harness import Deployment, write_routine

pytestmark = pytest.mark.e2e

SAVES = """
import pyarrow as pa
from mainspring import Routine, on_schedule

class Saves(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        self.save_artifact("numbers", pa.table({"n": [1, 2, 3]}))
        return {"saved": True}
"""
PRINTS = """
from mainspring import Routine, on_schedule

class Prints(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        print("hello from a run")
        return {"printed": True}
"""
QUIET = """
from mainspring import Routine, on_schedule

class Quiet(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {"quiet": True}
"""
FIX = "make MAINSPRING_ARTIFACT_ROOT a folder or object-store URI this runner can write"


async def start_with_store(
    deployment: Deployment, client: Client, tmp_path: Path, store: Path
) -> None:
    for name in ("recorder", "dispatcher"):
        deployment.start(name)
    deployment.start("runner", env={"MAINSPRING_ARTIFACT_ROOT": str(store)})
    for name, source in (("saves", SAVES), ("prints", PRINTS), ("quiet", QUIET)):
        await client.create_routine(write_routine(tmp_path / name, source), name)
    await client.wait_ready()


def assert_names_store_and_fix(run: dict[str, object], store: Path, why: str) -> str:
    assert run["status"] == "failed", run
    first_line = str(run["error"]).splitlines()[0]
    assert f"to the artifact store at {store} (" in first_line, first_line
    assert why in first_line, first_line
    assert FIX in first_line, first_line
    return first_line


async def test_an_unwritable_artifact_store_fails_the_run_with_the_store_and_the_fix(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    # A path under a regular file: every write fails (NotADirectoryError), also as root.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    store = blocker / "artifacts"
    await start_with_store(deployment, client, tmp_path, store)

    saved = await client.wait(await client.submit("saves"), timeout=90)
    first_line = assert_names_store_and_fix(saved, store, "Not a directory")
    assert first_line.startswith("ArtifactStoreError: cannot write artifact 'numbers'")

    # Its output cannot be kept either: the run fails, saying where the output still is.
    printed = await client.wait(await client.submit("prints"), timeout=90)
    first_line = assert_names_store_and_fix(printed, store, "Not a directory")
    assert first_line.startswith("cannot write the run's output")
    assert f"the output is kept on runner {printed['runner']} at " in first_line
    assert printed["outputs"] == {"printed": True}

    # The runner serves the next run: one that writes nothing to the store completes.
    quiet = await client.wait(await client.submit("quiet"), timeout=90)
    assert quiet["status"] == "completed", quiet
    assert deployment.services["runner"].alive()


def full_disk_at(store: Path, run_id: str, target: str) -> None:
    """Make a run's artifact (or, for "log", its output) file in the store /dev/full: writing
    it fails with ENOSPC from the kernel, as on a full disk, with nothing mounted or faked."""
    if target == "log":
        _fs, path = log_path(str(store), run_id)
    else:
        _fs, folder = artifact_dir(str(store), run_id, target)
        path = f"{folder}/data.parquet"
    Path(path).parent.mkdir(parents=True)
    Path(path).symlink_to("/dev/full")


async def submit_into_full_disk(client: Client, store: Path, routine: str, target: str) -> str:
    """Submit a run whose artifact or output file is on a full disk."""
    run_id = str(uuid.uuid4())
    full_disk_at(store, run_id, target)
    request = SubmitRun(request_id=run_id, routine=routine, submitted_at=datetime.now(UTC))
    return await client.submit_request(request)


async def test_a_full_artifact_store_fails_the_run_with_the_store_and_the_fix(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    store = tmp_path / "artifacts"
    await start_with_store(deployment, client, tmp_path, store)

    saved = await client.wait(await submit_into_full_disk(client, store, "saves", "numbers"), 90)
    assert_names_store_and_fix(saved, store, "No space left on device")

    printed = await client.wait(await submit_into_full_disk(client, store, "prints", "log"), 90)
    assert_names_store_and_fix(printed, store, "No space left on device")

    again = await client.wait(await client.submit("prints"), timeout=90)
    assert again["status"] == "completed", again
    assert again["log_uri"], again
    assert deployment.services["runner"].alive()
