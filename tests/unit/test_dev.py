"""`mainspring dev`'s decisions: what counts as an edit, how routines are named, what a run prints."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mainspring.apps.dev import describe_run, folder_signature, routine_names, snake_case
from mainspring.contract.messages import RunCompleted
from mainspring.sdk.bundle import BundleError


def test_an_edit_changes_the_signature_and_caches_do_not(tmp_path: Path) -> None:
    source = tmp_path / "routine.py"
    source.write_text("x = 1\n")
    before = folder_signature(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "routine.cpython-311.pyc").write_bytes(b"compiled")
    assert folder_signature(tmp_path) == before
    stat = source.stat()
    source.write_text("x = 2\n")  # same size: the modification time tells
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert folder_signature(tmp_path) != before
    assert folder_signature(tmp_path / "moved away") == ()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("EmbedNewRows", "embed_new_rows"), ("Hello", "hello"), ("HTTPPoller", "http_poller")],
)
def test_class_names_become_routine_names(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_one_routine_is_named_by_name_or_folder_several_by_class(tmp_path: Path) -> None:
    folder = tmp_path / "weather"
    assert routine_names(folder, ["a.py:Fetch"], None) == {"weather": "a.py:Fetch"}
    assert routine_names(folder, ["a.py:Fetch"], "w") == {"w": "a.py:Fetch"}
    assert routine_names(folder, ["a.py:Fetch", "b.py:SendReport"], None) == {
        "fetch": "a.py:Fetch",
        "send_report": "b.py:SendReport",
    }
    with pytest.raises(BundleError, match="--name names one routine"):
        routine_names(folder, ["a.py:Fetch", "b.py:SendReport"], "w")
    with pytest.raises(BundleError, match="holds no Routine class"):
        routine_names(folder, [], None)


def test_a_finished_run_is_one_line_with_its_version() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    done = RunCompleted(
        run_id="r",
        routine="hello",
        run_number=3,
        status="completed",
        outputs={"greeting": "hi"},
        started_at=started,
        finished_at=started + timedelta(seconds=0.25),
    )
    assert describe_run(done, "0123456789abcdef") == (
        'hello #3 completed in 0.25s on version 0123456789ab: {"greeting": "hi"}'
    )
    failed = done.model_copy(update={"status": "failed", "error": "ValueError: no"})
    assert describe_run(failed, None) == "hello #3 failed in 0.25s: ValueError: no"
