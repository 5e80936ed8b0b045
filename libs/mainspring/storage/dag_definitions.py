"""Registering a module's DAGs: each DAG of its Namespace becomes a registry entry.

A DAG's entry is a routine registry entry of kind "dag": named by the DAG's nsref, its code a
bundle like a routine's, its entrypoint `module.py:namespace`. So run numbers, run requests,
completions and completion triggers work for DAG runs as for routine runs. The triggers the
namespace declares (`ns.register_trigger`, `TriggerConfig`) become named triggers, their poll
functions named `module:function` inside the bundle so a runner can import them.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mainspring.compose import Dag, Namespace, top_level_function
from mainspring.sdk.bundle import (
    BundleError,
    bundle_files,
    import_file,
    make_bundle,
    module_name,
)
from mainspring.sdk.triggers import ManualTrigger
from mainspring.storage.named_triggers import NamedTrigger, TriggerError, new_trigger
from mainspring.storage.registry import RoutineDefinition


@dataclass
class DagRegistration:
    """What registering a namespace writes: a registry entry per DAG, the code bundle, and
    the triggers it declares (new definitions, inactive)."""

    definitions: list[RoutineDefinition]
    bundle: bytes
    folder: Path
    triggers: list[NamedTrigger] = field(default_factory=list)


def namespaces_in(module: Any, elsewhere: frozenset[str] = frozenset()) -> dict[str, Namespace]:
    """The Namespace objects at a module's top level, by variable name, leaving out those
    made by another module in `elsewhere` (imported from there; registered there)."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Namespace)
        and not (value.defined_in in elsewhere and value.defined_in != module.__name__)
    }


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


def find_namespaces(path: Path) -> tuple[Path, list[tuple[str, Namespace]]]:
    """The bundle folder and each namespace its modules make, as (`file.py:variable`, it)."""
    folder, files = _candidate_files(path)
    modules = frozenset(module_name(relative) for relative in files)
    found: list[tuple[str, Namespace]] = []
    for relative in files:
        module = import_file(folder, relative)
        for variable, namespace in namespaces_in(module, modules).items():
            found.append((f"{relative}:{variable}", namespace))
    return folder, found


def find_dags(path: Path) -> tuple[Path, dict[str, tuple[str, Dag]]]:
    """The bundle folder and every registered DAG found: nsref → (entrypoint, Dag)."""
    folder, namespaces = find_namespaces(path)
    return folder, dags_of(path, namespaces)


def dags_of(path: Path, namespaces: list[tuple[str, Namespace]]) -> dict[str, tuple[str, Dag]]:
    """Every DAG of these namespaces: nsref → (entrypoint, Dag); BundleError if none."""
    found: dict[str, tuple[str, Dag]] = {}
    for entry, namespace in namespaces:
        for nsref, dag in namespace.dags().items():
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
    return found


def dag_definitions(path: Path, now: datetime) -> DagRegistration:
    """A registry entry per DAG a module (or folder) registers, the code bundle, and the
    triggers its namespaces declare."""
    folder, namespaces = find_namespaces(path)
    found = dags_of(path, namespaces)
    triggers = [t for _, namespace in namespaces for t in declared_triggers(namespace, folder, now)]
    return _registration(folder, found, triggers, now)


def _registration(
    folder: Path, found: dict[str, tuple[str, Dag]], triggers: list[NamedTrigger], now: datetime
) -> DagRegistration:
    names = [t.name for t in triggers]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise BundleError(
            f"trigger {doubled[0]} is declared by two namespaces of {folder}: give one another name"
        )
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
    return DagRegistration(definitions, data, folder, triggers)


def namespace_registration(namespace: Namespace, now: datetime) -> DagRegistration:
    """What registering a live namespace writes (embedded mode): its module's folder is
    the bundle, its entrypoint the module's file and the variable holding it."""
    module = sys.modules.get(namespace.defined_in or "")
    names = [name for name, value in vars(module).items() if value is namespace] if module else []
    variable = names[0] if names else None
    if module is None or variable is None:
        raise BundleError(
            "the namespace is not a module-level variable: write `ns = Namespace()` at the top "
            "level of a .py file, so runners can import it"
        )
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        raise BundleError(
            f"the namespace's module {module.__name__} has no .py file (an interactive "
            "session?): define it in a .py file and run or import that file"
        )
    path = Path(file).resolve()
    folder = path.parent
    dags = namespace.dags()
    if not dags:
        raise BundleError(
            f"{path} registers no DAG in its Namespace: `ns.register(dag, nsref='pipelines:name')`"
        )
    entry = f"{path.name}:{variable}"
    found = {nsref: (entry, dag) for nsref, dag in dags.items()}
    return _registration(folder, found, declared_triggers(namespace, folder, now), now)


def poll_fn_reference(fn: Any, folder: Path, trigger: str) -> str:
    """`module:function` of a poll function, the module named as a runner imports it from
    the bundle of `folder` (a script's `__main__` becomes its file's module name)."""
    _, qualname = top_level_function(fn, f"trigger {trigger!r}: poll_fn")
    try:
        source = Path(inspect.getfile(fn)).resolve()
        relative = source.relative_to(folder.resolve())
    except (TypeError, ValueError):
        raise BundleError(
            f"trigger {trigger!r}: poll_fn {qualname} is not defined in a .py file under "
            f"{folder}, the code that is bundled: define it in a module of that folder"
        ) from None
    module = module_name(relative.as_posix()).removesuffix(".__init__")
    return f"{module}:{qualname}"


def declared_triggers(namespace: Namespace, folder: Path, now: datetime) -> list[NamedTrigger]:
    """The named triggers a namespace declares, inactive (activation is explicit)."""
    triggers: list[NamedTrigger] = []
    for name, (nsref, config) in sorted(namespace.triggers().items()):
        poll = poll_fn_reference(config.poll_fn, folder, name) if config.poll_fn else None
        try:
            triggers.append(
                new_trigger(
                    name,
                    nsref,
                    now,
                    cron=config.schedule,
                    push=config.type == "push",
                    poll_fn=poll,
                    payload=config.payload,
                )
            )
        except TriggerError as exc:
            raise BundleError(str(exc)) from None
    return triggers


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
