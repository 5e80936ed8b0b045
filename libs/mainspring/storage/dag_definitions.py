"""Registering a module's DAGs: each DAG of its Namespace becomes a registry entry.

A DAG's entry is a routine registry entry of kind "dag": named by the DAG's nsref, its code a
bundle like a routine's, its entrypoint `module.py:namespace`. So run numbers, run requests,
completions and completion triggers work for DAG runs as for routine runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from mainspring.compose import Dag, Namespace
from mainspring.sdk.bundle import BundleError, bundle_files, import_file, make_bundle
from mainspring.sdk.triggers import ManualTrigger
from mainspring.storage.registry import RoutineDefinition


def namespaces_in(module: Any) -> dict[str, Namespace]:
    """The Namespace objects a module defines at its top level, by variable name."""
    return {name: value for name, value in vars(module).items() if isinstance(value, Namespace)}


def _candidate_files(path: Path) -> tuple[Path, list[str]]:
    """The bundle folder and the files to look in for namespaces."""
    if path.is_file():
        if path.suffix != ".py":
            raise BundleError(f"{path} is not a .py file: pass a module or a folder of modules")
        return path.parent, [path.name]
    if not path.is_dir():
        raise BundleError(f"{path} does not exist: pass a .py file or a folder holding one")
    files = [
        p.relative_to(path).as_posix()
        for p in bundle_files(path)
        if p.suffix == ".py" and "Namespace" in p.read_text(errors="replace")
    ]
    return path, files


def find_dags(path: Path) -> tuple[Path, dict[str, tuple[str, Dag]]]:
    """The bundle folder and every registered DAG found: nsref → (entrypoint, Dag)."""
    folder, files = _candidate_files(path)
    found: dict[str, tuple[str, Dag]] = {}
    for relative in files:
        module = import_file(folder, relative)
        for variable, namespace in namespaces_in(module).items():
            for nsref, dag in namespace.dags().items():
                entry = f"{relative}:{variable}"
                if nsref in found and found[nsref][0] != entry:
                    raise BundleError(
                        f"DAG {nsref} is registered in both {found[nsref][0]} and {entry}: "
                        "give one of them another nsref"
                    )
                found[nsref] = (entry, dag)
    if not found:
        raise BundleError(
            f"{path} registers no DAG: define `ns = Namespace()` at module level and "
            "`ns.register(dag, nsref='pipelines:name')`"
        )
    return folder, found


def dag_definitions(path: Path, now: datetime) -> tuple[list[RoutineDefinition], bytes]:
    """A registry entry per DAG a module (or folder) registers, and the code bundle."""
    folder, found = find_dags(path)
    data, digest = make_bundle(folder)
    definitions = [
        RoutineDefinition(
            name=nsref,
            version=digest,
            entrypoint=entry,
            class_name=type(dag).__name__,
            trigger_param="payload",
            trigger=ManualTrigger(),
            kind="dag",
            created_at=now,
            updated_at=now,
        )
        for nsref, (entry, dag) in sorted(found.items())
    ]
    return definitions, data


def load_dag(folder: Path, entrypoint: str, nsref: str) -> Dag:
    """Import a bundle's namespace (`module.py:variable`) and return the DAG at `nsref`."""
    relative, _, variable = entrypoint.partition(":")
    module = import_file(folder, relative)
    namespace = getattr(module, variable, None)
    if not isinstance(namespace, Namespace):
        raise BundleError(f"{relative} has no Namespace {variable!r}: register the DAG again")
    dags = namespace.dags()
    if nsref not in dags:
        raise BundleError(
            f"{relative}:{variable} registers no DAG {nsref} (it has: "
            f"{', '.join(sorted(dags)) or 'none'}): register it again with `mainspring dag create`"
        )
    return dags[nsref]
