"""Routine code bundles: a folder zipped deterministically, named by its digest."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mainspring.sdk.routine import Routine

_SKIPPED_DIRS = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".mainspring"}
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleError(ValueError):
    """A routine folder cannot be bundled or imported; the message names the fix."""


def bundle_files(folder: Path) -> list[Path]:
    """The files that go into a bundle, in a stable order."""
    if not folder.is_dir():
        raise BundleError(
            f"routine folder {folder} does not exist: pass the folder holding your .py files"
        )
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part in _SKIPPED_DIRS for part in p.relative_to(folder).parts)
        and p.suffix not in (".pyc",)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def make_bundle(folder: Path) -> tuple[bytes, str]:
    """Zip a routine folder with fixed timestamps; returns (zip bytes, sha256 digest)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in bundle_files(folder):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), _FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def extract_bundle(data: bytes, target: Path) -> Path:
    """Unpack a bundle into target (once; the folder is named by digest so reuse is safe)."""
    marker = target / ".complete"
    if marker.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(partial)
    (partial / ".complete").touch()
    # Another process may have won the race and extracted the same digest already.
    with contextlib.suppress(OSError):
        partial.rename(target)
    return target


def module_name(entry_file: str) -> str:
    """`pkg/mod.py` → `pkg.mod`."""
    return entry_file.removesuffix(".py").replace("/", ".")


# Bundle folders this process imported code from.
_imported_folders: list[str] = []


def _forget_imported_bundles() -> None:
    """Drop the modules and sys.path entries of every bundle folder imported before.

    Bundles name their modules freely (`routine.py`, `helpers.py`): two folders imported in
    one process (a client registering two routines) would otherwise share one `routine`
    module, and a reload would keep classes the new code no longer defines.
    """
    for folder in _imported_folders:
        prefix = folder + "/"
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(prefix):
                del sys.modules[name]
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    _imported_folders.clear()


def _import_module(folder: Path, relative: str) -> Any:
    folder_str = str(folder.resolve())
    _forget_imported_bundles()
    _imported_folders.append(folder_str)
    sys.path.insert(0, folder_str)
    importlib.invalidate_caches()
    name = module_name(relative)
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        raise BundleError(
            f"cannot import {relative}: syntax error at line {exc.lineno}: {exc.msg}; fix the code"
        ) from None
    except Exception as exc:  # noqa: BLE001 - user code may raise anything on import
        raise BundleError(
            f"cannot import {relative}: {type(exc).__name__}: {exc}; fix the code or its imports"
        ) from None


def routine_classes(module: Any) -> list[type[Routine]]:
    """Routine subclasses defined in (not imported into) a module."""
    from mainspring.sdk.routine import Routine

    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Routine)
        and obj is not Routine
        and obj.__module__ == module.__name__
    ]


def _routine_entrypoints(folder: Path, only_file: str | None = None) -> list[str]:
    """`path.py:Class` of every Routine class defined in the folder (or in one file of it)."""
    found: list[str] = []
    for path in bundle_files(folder):
        relative = path.relative_to(folder).as_posix()
        if path.suffix != ".py" or (only_file is not None and relative != only_file):
            continue
        if "class " not in path.read_text(errors="replace"):
            continue
        module = _import_module(folder, relative)
        found += [f"{relative}:{cls.__name__}" for cls in routine_classes(module)]
    return found


def routine_entrypoints(folder: Path) -> list[str]:
    """`path.py:Class` of every Routine class defined in the folder."""
    return _routine_entrypoints(folder)


def detect_entrypoint(folder: Path) -> str:
    """The `path.py:Class` of the only Routine class in a folder."""
    found = _routine_entrypoints(folder)
    if len(found) != 1:
        what = (
            "no Routine class"
            if not found
            else f"{len(found)} Routine classes ({', '.join(found)})"
        )
        raise BundleError(f"{folder} holds {what}: pass --entrypoint path.py:Class or Class")
    return found[0]


def resolve_entrypoint(folder: Path, hint: str | None) -> str:
    """The full `path.py:Class` from a hint: none, `path.py:Class`, `path.py` or `Class`."""
    if not hint:
        return detect_entrypoint(folder)
    if ":" in hint:
        return hint
    if hint.endswith(".py"):
        if not (folder / hint).is_file():
            raise BundleError(f"entrypoint file {hint} is not in {folder}: check --entrypoint")
        found = _routine_entrypoints(folder, only_file=hint)
        if len(found) != 1:
            raise BundleError(
                f"{hint} holds {len(found)} Routine classes: pass --entrypoint {hint}:Class"
            )
        return found[0]
    found = [e for e in _routine_entrypoints(folder) if e.rpartition(":")[2] == hint]
    if not found:
        raise BundleError(
            f"no Routine class {hint!r} in {folder}: check --entrypoint (path.py:Class or Class)"
        )
    if len(found) > 1:
        raise BundleError(
            f"Routine class {hint!r} is defined in {len(found)} files ({', '.join(found)}): "
            "pass --entrypoint path.py:Class"
        )
    return found[0]


def import_entrypoint(folder: Path, entrypoint: str) -> type[Routine]:
    """Import the Routine class named by `path.py:Class` from folder."""
    from mainspring.sdk.routine import Routine

    relative, sep, class_name = entrypoint.partition(":")
    if not sep or not relative.endswith(".py") or not class_name:
        raise BundleError(
            f"entrypoint {entrypoint!r} is not path.py:Class: write e.g. routine.py:MyRoutine"
        )
    if not (folder / relative).is_file():
        raise BundleError(f"entrypoint file {relative} is not in {folder}: check --entrypoint")
    module = _import_module(folder, relative)
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Routine)):
        raise BundleError(f"{relative} has no Routine class {class_name!r}: check --entrypoint")
    return cls


def resolve_callable(folder: Path, reference: str) -> Any:
    """Import `module:qualname` (e.g. a poll function) from a routine folder."""
    module_path, _, qualname = reference.partition(":")
    module = _import_module(folder, module_path.replace(".", "/") + ".py")
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def import_file(folder: Path, relative: str) -> Any:
    """Import one `.py` file of a bundle folder as a module (BundleError naming the fix)."""
    return _import_module(folder, relative)
