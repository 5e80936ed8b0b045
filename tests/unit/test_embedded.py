"""Embedded mode's checks before it starts anything: where the home may be, what a
provenance means, and no second system inside a runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mainspring
from mainspring.apps.embedded import (
    EMBEDDED_MARKER,
    EmbeddedError,
    check_home_outside_bundle,
    embedded,
    settings_for,
)
from mainspring.compose import DagProvenance, Namespace


def test_mainspring_embedded_is_the_entry_point_and_the_sdk_import_stays_light() -> None:
    assert mainspring.embedded is embedded
    code = "import sys, mainspring; print('mainspring.apps.up' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_home_inside_the_bundled_folder_is_refused_unless_never_bundled(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text("x = 1\n")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "nats.conf").write_text("")
    with pytest.raises(EmbeddedError, match=r"is inside .* put the home elsewhere"):
        check_home_outside_bundle(tmp_path / "home", tmp_path)
    with pytest.raises(EmbeddedError, match="is inside"):
        check_home_outside_bundle(tmp_path, tmp_path)
    (tmp_path / ".mainspring").mkdir()
    (tmp_path / ".mainspring" / "nats.conf").write_text("")
    check_home_outside_bundle(tmp_path / ".mainspring", tmp_path)
    check_home_outside_bundle(tmp_path.parent / "elsewhere", tmp_path)


def test_provenance_chooses_the_run_history_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    in_home = settings_for(home, DagProvenance())
    assert in_home.database_url == f"sqlite:///{home.resolve() / 'runs.db'}"
    assert in_home.nats_url is None
    own = settings_for(home, DagProvenance(tmp_path / "provenance.db"))
    assert own.database_url == f"sqlite:///{(tmp_path / 'provenance.db').resolve()}"
    # None keeps trigger events only; they still live in the home's database.
    assert settings_for(home, None).database_url == in_home.database_url


async def test_a_module_starting_a_system_when_a_runner_imports_it_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(EMBEDDED_MARKER, "1234")
    with pytest.raises(EmbeddedError, match='under `if __name__ == "__main__":`'):
        async with embedded(Namespace(), tmp_path / "home"):
            pass
    assert not (tmp_path / "home").exists()


async def test_the_manager_says_it_is_not_running_outside_its_block(tmp_path: Path) -> None:
    manager = embedded(Namespace(), tmp_path / "home")
    with pytest.raises(EmbeddedError, match=r"inside `async with mainspring.embedded\(...\)`"):
        await manager.activate("hourly_market")
    with pytest.raises(EmbeddedError, match="not running"):
        manager.start()
