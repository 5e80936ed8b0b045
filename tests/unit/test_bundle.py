"""Bundles are deterministic by content and import errors are one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mainspring.base.units import parse_memory
from mainspring.sdk.bundle import BundleError, detect_entrypoint, import_entrypoint, make_bundle

ROUTINE = "from mainspring import Routine, on_schedule\nclass {name}(Routine):\n    def run(self, t=on_schedule(every='1m')): ...\n"


def test_same_content_same_digest_whatever_the_mtime(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "a.py").write_text(ROUTINE.format(name="A"))
    _, first = make_bundle(folder)
    os.utime(folder / "a.py", (1, 1))
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    _, second = make_bundle(folder)
    (folder / "a.py").write_text(ROUTINE.format(name="B"))
    _, third = make_bundle(folder)

    assert first == second != third


def test_entrypoint_is_detected_when_one_class(tmp_path: Path) -> None:
    folder = tmp_path / "single_entry"
    folder.mkdir()
    (folder / "single_entry_mod.py").write_text(ROUTINE.format(name="Only"))

    assert detect_entrypoint(folder) == "single_entry_mod.py:Only"


def test_two_classes_ask_for_an_entrypoint(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "two_mod.py").write_text(
        ROUTINE.format(name="One") + ROUTINE.format(name="Two").split("\n", 1)[1]
    )

    with pytest.raises(BundleError, match=r"2 Routine classes .* pass --entrypoint"):
        detect_entrypoint(folder)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n", "syntax error at line 1"),
        (
            "import no_such_module_here\n",
            "ModuleNotFoundError: No module named 'no_such_module_here'",
        ),
    ],
)
def test_import_errors_are_one_line(tmp_path: Path, source: str, message: str) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    name = f"broken_{abs(hash(source))}"
    (folder / f"{name}.py").write_text(source)

    with pytest.raises(BundleError, match=message) as error:
        import_entrypoint(folder, f"{name}.py:R")
    assert "\n" not in str(error.value)


def test_entrypoint_must_name_a_file_and_class(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"is not path\.py:Class"):
        import_entrypoint(tmp_path, "Routine")
    with pytest.raises(BundleError, match="is not in"):
        import_entrypoint(tmp_path, "missing.py:R")


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * 1024**2), ("2GiB", 2 * 1024**3), ("1.5GB", 1_500_000_000), ("100", 100)],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_bad_memory_size_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"write e\.g\. 512MiB"):
        parse_memory("lots")


def test_two_folders_with_the_same_module_name_do_not_see_each_other(tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    for folder, cls in ((first, "First"), (second, "Second")):
        folder.mkdir()
        (folder / "routine.py").write_text(
            "from mainspring import Routine, on_schedule\n\n"
            f"class {cls}(Routine):\n"
            "    def run(self, tick=on_schedule(every='1h')):\n"
            "        return {}\n"
        )
    assert detect_entrypoint(first) == "routine.py:First"
    assert detect_entrypoint(second) == "routine.py:Second"
    assert import_entrypoint(first, "routine.py:First").__name__ == "First"


def test_a_class_removed_from_the_code_is_gone_on_the_next_import(tmp_path: Path) -> None:
    source = (
        "from mainspring import Routine, on_schedule\n\n"
        "class Kept(Routine):\n"
        "    def run(self, tick=on_schedule(every='1h')):\n"
        "        return {}\n"
    )
    (tmp_path / "routine.py").write_text(source + source.replace("Kept", "Removed"))
    with pytest.raises(BundleError, match="2 Routine classes"):
        detect_entrypoint(tmp_path)
    (tmp_path / "routine.py").write_text(source + "# edited\n")
    assert detect_entrypoint(tmp_path) == "routine.py:Kept"
