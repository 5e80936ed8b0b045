"""Restarting a failed DAG run from its failure, or replaying chosen nodes of a DAG run.

Both start a new run of the same DAG with the earlier run's payload. Nodes that do not run
again are recorded as skipped and hand on the outputs the earlier run kept; a node whose
output is needed (it feeds a node that runs again, or it is a sink) but was not kept makes
the restart impossible, and the refusal says which node and why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mainspring.contract.messages import DagNodeRecord, DagRecord


class ResumeRefused(ValueError):
    """A restart or replay that cannot be done; the message says why and what to do."""


class KeptValue(BaseModel):
    """An earlier node's output as a new run reads it: inline JSON or a kept artifact."""

    model_config = ConfigDict(frozen=True)
    json_value: Any = None
    uri: str | None = None
    # The run whose artifact folder holds `uri`.
    run_id: str | None = None


class ResumeSpec(BaseModel):
    """What a restarted or replayed DAG run reuses; carried in its run's event."""

    model_config = ConfigDict(frozen=True)
    mode: Literal["restart", "replay"]
    of: str
    rerun: list[str]
    reuse: dict[str, KeptValue] = Field(default_factory=dict)
    # Reused nodes nothing needs whose output was not kept: skipped without a value.
    unkept: dict[str, str] = Field(default_factory=dict)


def _kept(run_id: str, node: DagNodeRecord) -> KeptValue | None:
    if node.output_kept == "json":
        return KeptValue(json_value=node.output)
    if node.output_kept == "artifact" and node.output_uri:
        # A skipped node's artifact may live in an older run's folder: keep pointing there.
        return KeptValue(uri=node.output_uri, run_id=_owner(run_id, node))
    return None


def _owner(run_id: str, node: DagNodeRecord) -> str:
    uri = node.output_uri or ""
    marker = "/runs/"
    if marker in uri:
        return uri.rsplit(marker, 1)[1].split("/", 1)[0]
    return run_id


def _spec(
    record: DagRecord, run_id: str, mode: Literal["restart", "replay"], rerun: set[str]
) -> ResumeSpec:
    downstream_of: dict[str, set[str]] = {n.label: set() for n in record.nodes}
    for a, b in record.edges:
        downstream_of.setdefault(a, set()).add(b)
    sinks = {label for label, after in downstream_of.items() if not after}
    reuse: dict[str, KeptValue] = {}
    unkept: dict[str, str] = {}
    for node in record.nodes:
        if node.label in rerun:
            continue
        needed_by = sorted(downstream_of[node.label] & rerun)
        needed = bool(needed_by) or node.label in sinks
        if node.status not in ("completed", "skipped"):
            if needed:
                who = f"node {needed_by[0]} needs it" if needed_by else "it is a sink"
                raise ResumeRefused(
                    f"run {run_id}: node {node.label} did not complete ({node.status}) and "
                    f"{who}: include {node.label} in --nodes"
                )
            continue
        kept = _kept(run_id, node)
        if kept is not None:
            reuse[node.label] = kept
        elif needed:
            who = f"node {needed_by[0]} needs it" if needed_by else "it is a sink of the DAG"
            why = node.output_note or "not kept"
            raise ResumeRefused(
                f"run {run_id}: the output of node {node.label} was not kept ({why}) and {who}: "
                f"run {node.label} again too (runs replay {run_id} --nodes ...) or start a "
                "new run"
            )
        else:
            unkept[node.label] = node.output_note or "not kept"
    return ResumeSpec(mode=mode, of=run_id, rerun=sorted(rerun), reuse=reuse, unkept=unkept)


def plan_restart(record: DagRecord, run_id: str, status: str) -> ResumeSpec:
    """Run the failed node and everything that did not run; reuse what completed."""
    if status != "failed":
        raise ResumeRefused(
            f"run {run_id} is {status}, not failed: restart resumes a failed DAG run; use "
            f"`mainspring runs replay {run_id} --nodes ...` to run chosen nodes again"
        )
    rerun = {n.label for n in record.nodes if n.status not in ("completed", "skipped")}
    return _spec(record, run_id, "restart", rerun)


def plan_replay(record: DagRecord, run_id: str, nodes: list[str]) -> ResumeSpec:
    """Run the chosen nodes again; every other node is skipped with its earlier output."""
    known = [n.label for n in record.nodes]
    unknown = [label for label in nodes if label not in known]
    if unknown or not nodes:
        raise ResumeRefused(
            f"run {run_id} has no node {unknown[0]!r}: choose among {', '.join(known)}"
            if unknown
            else f"name the nodes to run again: --nodes {','.join(known)}"
        )
    return _spec(record, run_id, "replay", set(nodes))


def dag_record_of(run: dict[str, Any]) -> DagRecord:
    """The node table of a recorded run, or ResumeRefused when it is not a DAG run."""
    data = run.get("dag")
    if not data:
        raise ResumeRefused(
            f"run {run.get('id')} of {run.get('routine')} has no node table: only DAG runs can "
            f"be restarted or replayed (use `mainspring runs rerun {run.get('id')}`)"
        )
    return DagRecord.model_validate(data)
