"""The SDK's DAG calls: register a module's DAGs, start a DAG run, restart or replay one.

Used through `Client` (`create_dags`, `run_dag`, `restart`, `replay`); kept apart so the
client module stays about routines and runs in general.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mainspring.compose import Namespace
from mainspring.contract.messages import SubmitRun
from mainspring.runtime.dag_resume import ResumeSpec, dag_record_of, plan_replay, plan_restart
from mainspring.storage.dag_definitions import (
    DagRegistration,
    dag_definitions,
    namespace_registration,
)
from mainspring.storage.named_triggers import NamedTrigger
from mainspring.storage.registry import RegistryError, RoutineDefinition, carry_trigger_state

if TYPE_CHECKING:
    from mainspring.client import Client


@dataclass
class DagsRegistered:
    """What registering a namespace wrote: the DAGs' registry entries and its triggers."""

    dags: list[RoutineDefinition]
    triggers: list[NamedTrigger]


async def create_dags(client: Client, path: Path) -> DagsRegistered:
    """Bundle a module (or folder) and register every DAG its Namespace registers, and the
    triggers it declares."""
    registration = await asyncio.to_thread(dag_definitions, path, datetime.now(UTC))
    return await register(client, registration)


async def register_namespace(client: Client, namespace: Namespace) -> DagsRegistered:
    """Register a live namespace's DAGs and triggers, its module's folder as the bundle."""
    registration = await asyncio.to_thread(namespace_registration, namespace, datetime.now(UTC))
    return await register(client, registration)


async def register(client: Client, registration: DagRegistration) -> DagsRegistered:
    """Write the bundle, the DAG entries, then the triggers (a trigger needs its target).

    A trigger declared in code is created inactive; one already there takes the new
    definition and keeps its activation and last run, as lythonic's store does.
    """
    now = datetime.now(UTC)
    store = await client.store()
    definitions: list[RoutineDefinition] = []
    for definition in registration.definitions:
        existing = await store.find(definition.name)
        if existing is not None and existing.kind != "dag":
            raise RegistryError(
                f"{definition.name} is already registered as a routine: delete it "
                f"(`mainspring routine delete {definition.name}`) or give the DAG another nsref"
            )
        definitions.append(carry_trigger_state(existing, definition, None)[0])
    for trigger in registration.triggers:
        if await store.find(trigger.name) is not None:
            raise RegistryError(
                f"trigger {trigger.name} has the name of routine {trigger.name} (its own "
                "trigger): give the declared trigger another name"
            )
    await store.put_bundle(registration.definitions[0].version, registration.bundle)
    for definition in definitions:
        await store.put(definition)
    triggers = await client.trigger_store()
    declared = [await triggers.declare(trigger, now) for trigger in registration.triggers]
    return DagsRegistered(definitions, declared)


async def check_dag(client: Client, nsref: str) -> None:
    """RegistryError unless `nsref` is a registered DAG."""
    definition = await (await client.store()).find(nsref)
    if definition is None:
        raise RegistryError(
            f"DAG {nsref!r} is not registered: register its module with `mainspring dag create FILE`"
        )
    if definition.kind != "dag":
        raise RegistryError(
            f"{nsref} is a routine, not a DAG: start it with `mainspring run {nsref}`"
        )


async def submit_resumed(
    client: Client, run: dict[str, Any], spec: ResumeSpec, payload: dict[str, Any], by: str
) -> str:
    """Start the new run of a restart or replay, linked to the run it resumes."""
    request_id = str(uuid.uuid4())
    return await client.submit_request(
        SubmitRun(
            request_id=request_id,
            routine=run["routine"],
            labels=run.get("labels") or [],
            attributes=run.get("attributes") or {},
            started_by=by,
            source="manual",
            submitted_at=datetime.now(UTC),
            rerun_of=run["id"],
            trigger_kind="manual",
            event={
                "requested_by": by,
                "request_id": request_id,
                "payload": payload,
                "resume": spec.model_dump(mode="json"),
            },
        )
    )


async def recorded_dag_run(client: Client, run_id: str) -> dict[str, Any]:
    """A recorded run, or ResumeRefused-style ValueError naming how to find one."""
    run = await client.get_run(run_id)
    if run is None:
        raise ValueError(f"run {run_id} is not recorded: find its id with `mainspring runs list`")
    return run


async def restart(client: Client, run_id: str, by: str) -> str:
    """A new run of a failed DAG run's DAG that starts from its failed node."""
    run = await recorded_dag_run(client, run_id)
    record = dag_record_of(run)
    spec = plan_restart(record, run_id, run["status"])
    return await submit_resumed(client, run, spec, record.inputs, by)


async def replay(client: Client, run_id: str, nodes: list[str], by: str) -> str:
    """A new run of a DAG run's DAG that runs only `nodes` again (the rest skipped)."""
    run = await recorded_dag_run(client, run_id)
    record = dag_record_of(run)
    spec = plan_replay(record, run_id, nodes)
    return await submit_resumed(client, run, spec, record.inputs, by)
