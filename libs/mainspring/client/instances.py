"""Routine instances: configured copies of a routine (blueprint), each a registry entry.

An instance has its own configuration, state, triggers and run numbering, and runs either
the version of its routine it was pinned to or the latest one. The client is the one writer
of instances (as of every registry entry): creating one, following a new version,
reconfiguring one. A reconfiguration is a run of the routine's constructor, so the run
history shows when and how an instance changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mainspring.sdk.routine import InputError, RoutineContract, validate_inputs
from mainspring.storage.blueprints import (
    Blueprint,
    BlueprintStore,
    BlueprintVersion,
    instance_from_version,
)
from mainspring.storage.registry import (
    InputSchema,
    MethodSchema,
    RegistryError,
    RoutineDefinition,
    carry_trigger_state,
)

if TYPE_CHECKING:
    from mainspring.client import Client


def method_schemas(contract: RoutineContract) -> dict[str, MethodSchema]:
    """A routine's declared methods as the registry stores them."""
    return {
        name: MethodSchema(
            inputs={
                k: InputSchema(type=s.type, default=s.default, optional=s.optional)
                for k, s in declared.inputs.items()
            },
            in_memory=declared.in_memory,
            constructor=declared.constructor,
        )
        for name, declared in contract.methods.items()
    }


def check_registration(existing: RoutineDefinition | None, routine: str) -> None:
    """Registering code as `routine` updates the instance of that name only if it is one of
    `routine`'s: an instance of another routine is never silently taken over."""
    if existing is not None and existing.blueprint != routine:
        raise RegistryError(
            f"{routine!r} is an instance of routine {existing.blueprint}: register this code "
            f"under another name, or delete the instance with `mainspring routine delete {routine}`"
        )


def configuration(
    definition: RoutineDefinition, given: dict[str, Any], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The full configuration from `given` over `base` (values the constructor no longer
    takes are dropped), validated against the constructor's inputs."""
    constructor = definition.constructor()
    if constructor is None:
        raise RegistryError(
            f"routine {definition.blueprint} has no constructor, so instance {definition.name} "
            "has no configuration: declare `def configure(self, k: int = 3)` on its class, "
            "or give run() input defaults with --set"
        )
    specs = definition.methods[constructor].input_specs()
    kept = {k: v for k, v in (base or {}).items() if k in specs}
    try:
        return validate_inputs(specs, {**kept, **given})
    except InputError as exc:
        raise InputError(f"configuration of {definition.name}: {exc}") from None


def carried_instance_fields(
    existing: RoutineDefinition | None, fresh: RoutineDefinition
) -> RoutineDefinition:
    """New code for an instance keeps its configuration (what the new constructor still takes)."""
    constructor = fresh.constructor()
    if existing is None or not existing.config or constructor is None:
        return fresh
    taken = fresh.methods[constructor].inputs
    return fresh.model_copy(
        update={"config": {k: v for k, v in existing.config.items() if k in taken}}
    )


async def blueprints(client: Client) -> BlueprintStore:
    """The blueprint store of this client's deployment."""
    return await BlueprintStore.open(client.js)


async def record_version(
    client: Client, registered: RoutineDefinition, now: datetime
) -> list[RoutineDefinition]:
    """Record `registered` (just written under its routine's own name) as the routine's
    newest version and move every other instance that follows the latest onto it.

    Returns the instances moved.
    """
    store = await client.store()
    version = BlueprintVersion(digest=registered.version, registered_at=now, template=registered)
    await (await blueprints(client)).add_version(registered.blueprint, version)
    moved: list[RoutineDefinition] = []
    for instance in await store.list():
        if (
            instance.blueprint != registered.blueprint
            or instance.name == registered.name
            or not instance.follow_latest
            or instance.version == registered.version
        ):
            continue
        rebuilt = carried_instance_fields(
            instance,
            instance_from_version(
                version,
                blueprint=registered.blueprint,
                instance=instance.name,
                follow_latest=True,
                config=instance.config,
                defaults=_known_defaults(instance.defaults, registered),
                existing=instance,
                now=now,
            ),
        )
        rebuilt, _ = carry_trigger_state(instance, rebuilt, None)
        rebuilt = await client.with_dataset_start(rebuilt)
        await store.put(rebuilt)
        moved.append(rebuilt)
    return moved


def _known_defaults(defaults: dict[str, Any], template: RoutineDefinition) -> dict[str, Any]:
    # An input the new code dropped cannot keep a default.
    return {k: v for k, v in defaults.items() if k in template.inputs}


async def create_instance(
    client: Client,
    name: str,
    routine: str,
    *,
    version: str | None = None,
    settings: dict[str, Any] | None = None,
    source: str = "api",
) -> tuple[RoutineDefinition, str | None]:
    """Create instance `name` of `routine`, pinned to `version` (a digest prefix) or
    following the latest; returns it and the id of its constructor run (None: the routine
    has no constructor, and `settings` are run() input defaults instead)."""
    store = await client.store()
    existing = await store.find(name)
    if existing is not None:
        raise RegistryError(
            f"instance {name!r} exists (of routine {existing.blueprint}): reconfigure it with "
            f"`mainspring instance configure {name} --set k=v`, or pick another name"
        )
    blueprint = await (await blueprints(client)).get(routine)
    chosen = blueprint.version(version) if version is not None else blueprint.latest()
    if chosen.digest not in {stored.digest for stored in await store.stored_bundles()}:
        # The bundle sweep deletes code no instance used for a while; its record stays.
        raise RegistryError(
            f"the code of version {chosen.digest[:12]} of routine {routine} was deleted, as no "
            "instance used it: register that code again with `mainspring routine create`"
        )
    now = datetime.now(UTC)
    template = chosen.template
    given = settings or {}
    config: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    if template.constructor() is not None:
        config = configuration(template.model_copy(update={"name": name}), given)
    else:
        try:
            validated = validate_inputs(template.input_specs(), given)
        except InputError as exc:
            raise InputError(f"--set for {name}: {exc}") from None
        defaults = {k: validated[k] for k in given}
    definition = instance_from_version(
        chosen,
        blueprint=routine,
        instance=name,
        follow_latest=version is None,
        config=config,
        defaults=defaults,
        existing=None,
        now=now,
    )
    definition = await client.with_dataset_start(definition)
    await store.put(definition)
    constructor = definition.constructor()
    if constructor is None:
        return definition, None
    run_id = await client.submit(name, config, method=constructor, source=source)
    return definition, run_id


async def apply_configuration(client: Client, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Write instance `name`'s new configuration (`given` over its current one) before its
    constructor run; returns the full configuration, the run's inputs."""
    store = await client.store()
    definition = await store.get(name)
    config = configuration(definition, given, definition.config)
    if config != definition.config:
        await store.put(
            definition.model_copy(update={"config": config, "updated_at": datetime.now(UTC)})
        )
    return config


async def method_inputs(
    client: Client, name: str, method: str, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The inputs to submit for a run of `method`: a constructor's configure the instance
    first (and are the full configuration); any other method's go as given."""
    definition = await (await client.store()).find(name)
    if definition is None or method != definition.constructor():
        return inputs  # the dispatcher refuses an unknown instance or method, naming it
    return await apply_configuration(client, name, inputs)


class InstanceSummary(BaseModel):
    """One instance as `routine show` lists it under its routine."""

    model_config = ConfigDict(frozen=True)
    name: str
    version: str
    follows_latest: bool
    enabled: bool
    config: dict[str, Any]


class BlueprintSummary(BaseModel):
    """A routine's versions (newest first) and its instances."""

    model_config = ConfigDict(frozen=True)
    routine: str
    versions: list[dict[str, Any]]
    instances: list[InstanceSummary]


def summarise(
    blueprint: Blueprint | None, routine: str, definitions: list[RoutineDefinition]
) -> BlueprintSummary:
    """What `routine show` tells about a routine besides one instance's definition."""
    versions = [
        {
            "version": v.digest[:12],
            "registered_at": v.registered_at.isoformat(),
            "methods": ["run", *sorted(v.template.methods)],
        }
        for v in reversed(blueprint.versions if blueprint is not None else [])
    ]
    instances = [
        InstanceSummary(
            name=d.name,
            version=d.version[:12],
            follows_latest=d.follow_latest,
            enabled=d.enabled,
            config=d.config,
        )
        for d in definitions
        if d.blueprint == routine
    ]
    return BlueprintSummary(routine=routine, versions=versions, instances=instances)
