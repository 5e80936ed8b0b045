"""Routine blueprints: each registration of a routine's code is a version, by bundle digest.

A blueprint is named by the routine name given at registration, never by its code: the
same code registered under two names is two routines, and editing code adds a version to
the routine it was registered as. Instances (registry entries) are built from a version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mainspring.base.kv import TooManyConflicts, compare_and_set_from, key_token, read
from mainspring.contract import subjects
from mainspring.storage.registry import RegistryError, RoutineDefinition

# Versions kept per blueprint: enough to pin any recent one, small enough for one KV value.
MAX_VERSIONS = 50


class BlueprintVersion(BaseModel):
    """One registered version of a routine's code and what inspecting it told."""

    model_config = ConfigDict(frozen=True)
    digest: str
    registered_at: AwareDatetime
    # The code-derived part of an instance: entrypoint, class, trigger, inputs, options,
    # methods (its name and instance fields are the registration's, replaced per instance).
    template: RoutineDefinition


class Blueprint(BaseModel):
    """A routine: its name and its versions, oldest first."""

    model_config = ConfigDict(frozen=True)
    name: str
    versions: list[BlueprintVersion] = Field(default_factory=list)

    def latest(self) -> BlueprintVersion:
        """The newest version (a blueprint is stored with at least one)."""
        return self.versions[-1]

    def version(self, prefix: str) -> BlueprintVersion:
        """The version whose digest starts with `prefix`, or an error listing them."""
        matches = [v for v in self.versions if v.digest.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(v.digest[:12] for v in reversed(self.versions))
        why = "matches several versions" if matches else "is not a version"
        raise RegistryError(
            f"{prefix!r} {why} of routine {self.name}: pick one of {known} "
            f"(see `mainspring routine show {self.name}`)"
        )


def with_version(current: Blueprint | None, name: str, version: BlueprintVersion) -> Blueprint:
    """The blueprint after registering `version`: appended unless it is already the latest."""
    versions = list(current.versions) if current is not None else []
    if versions and versions[-1].digest == version.digest:
        # The same code again (a `dev` save that changed nothing, a repeated create) keeps
        # its version and first registration time; the template is the newest, as the same
        # code may be registered with another entrypoint or other input defaults.
        versions[-1] = version.model_copy(update={"registered_at": versions[-1].registered_at})
    else:
        versions = [v for v in versions if v.digest != version.digest] + [version]
    return Blueprint(name=name, versions=versions[-MAX_VERSIONS:])


def instance_from_version(
    version: BlueprintVersion,
    *,
    blueprint: str,
    instance: str,
    follow_latest: bool,
    config: dict[str, Any],
    defaults: dict[str, Any],
    existing: RoutineDefinition | None,
    now: datetime,
) -> RoutineDefinition:
    """An instance of `blueprint` on `version`, keeping what an existing entry says about
    itself (trigger on or off, creation time)."""
    fields: dict[str, Any] = {
        "name": instance,
        "routine": blueprint,
        "follow_latest": follow_latest,
        "config": config,
        "defaults": defaults,
        "created_at": existing.created_at if existing is not None else now,
        "updated_at": now,
    }
    if existing is not None:
        fields.update(
            enabled=existing.enabled,
            disabled_reason=existing.disabled_reason,
            disabled_by=existing.disabled_by,
        )
    return version.template.model_copy(update=fields)


class BlueprintStore:
    """Reads and writes blueprints in their KV bucket (the client, at registration)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> BlueprintStore:
        """Bind to the declared blueprints bucket."""
        return cls(await js.key_value(subjects.BLUEPRINTS_BUCKET))

    async def find(self, name: str) -> Blueprint | None:
        """One blueprint, or None."""
        value, _ = await read(self._kv, key_token(name))
        return Blueprint.model_validate_json(value) if value else None

    async def get(self, name: str) -> Blueprint:
        """One blueprint, or RegistryError naming the fix."""
        found = await self.find(name)
        if found is None:
            raise RegistryError(
                f"routine {name!r} is not registered: create it with "
                f"`mainspring routine create DIR --name {name}`"
            )
        return found

    async def add_version(self, name: str, version: BlueprintVersion) -> Blueprint:
        """Record a registration of the routine's code (compare-and-set: two registering
        at once both land)."""

        def added(current: bytes | None) -> bytes:
            existing = Blueprint.model_validate_json(current) if current else None
            return with_version(existing, name, version).model_dump_json().encode()

        try:
            written, _ = await compare_and_set_from(
                self._kv, key_token(name), added, None, attempts=10
            )
        except TooManyConflicts:
            raise RegistryError(
                f"routine {name!r} was registered too often concurrently; try again"
            ) from None
        return Blueprint.model_validate_json(written)

    async def delete(self, name: str) -> None:
        """Forget a blueprint (its instances are deleted separately)."""
        await self._kv.delete(key_token(name))
