"""A store that cannot be written is named, with why and the fix, in one line."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mainspring.storage.artifacts import ArtifactStoreError, save_artifact
from mainspring.storage.runlogs import store_log


def test_an_artifact_under_a_regular_file_names_the_store_and_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = str(blocker / "store")

    with pytest.raises(ArtifactStoreError) as caught:
        save_artifact(store, "run-1", "numbers", pa.table({"n": [1]}))

    assert str(caught.value) == (
        f"cannot write artifact 'numbers' to the artifact store at {store} "
        "(NotADirectoryError: Not a directory): make MAINSPRING_ARTIFACT_ROOT a folder or "
        "object-store URI this runner can write, with free space"
    )


def test_a_log_on_a_full_disk_names_the_store_and_the_fix(tmp_path: Path) -> None:
    local = tmp_path / "run.log"
    local.write_text("output")
    store = tmp_path / "store"
    (store / "runs" / "run-1" / "logs").mkdir(parents=True)
    # Writing /dev/full fails with ENOSPC, as a full disk does.
    (store / "runs" / "run-1" / "logs" / "output.log").symlink_to("/dev/full")

    with pytest.raises(ArtifactStoreError, match=r"\(OSError: No space left on device\): make"):
        store_log(str(store), "run-1", local)
