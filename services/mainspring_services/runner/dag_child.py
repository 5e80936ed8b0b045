"""A DAG run inside a worker: load the DAG from the bundle, run it, report every node.

The whole DAG runs in this one worker: async nodes on one event loop, sync nodes on a
bounded thread pool (shut down before the result, so the worker is left as it was). Each
node's state change goes to the runner as a `node` line on the control pipe; the runner keeps
the node table, so a worker that dies mid-run still leaves one, and puts it in the run's
record with the completion. No node state is a stored bus message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mainspring.compose import GraphError, plan_dag
from mainspring.contract.messages import DagNodeRecord, DagRecord, RequestRun
from mainspring.runtime.dag_executor import DEFAULT_THREADS, DagExecutor
from mainspring.runtime.dag_outputs import ArtifactOutputs
from mainspring.runtime.dag_resume import ResumeSpec
from mainspring.sdk.bundle import BundleError
from mainspring.storage.dag_definitions import load_dag

Send = Callable[[dict[str, Any]], None]


class DagLoader:
    """DAGs of one bundle, imported once per worker."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str, str], Any] = {}

    def load(self, bundle_dir: Path, entrypoint: str, nsref: str) -> Any:
        """The DAG at `nsref` of `module.py:namespace` (imported on first use only)."""
        key = (str(bundle_dir), entrypoint, nsref)
        if key not in self._loaded:
            self._loaded[key] = load_dag(bundle_dir, entrypoint, nsref)
        return self._loaded[key]


def reused_values(spec: ResumeSpec, artifact_root: str) -> dict[str, Any]:
    """The earlier outputs a restart or replay hands on, read back from where they were kept."""
    values: dict[str, Any] = {}
    for label, kept in spec.reuse.items():
        if kept.uri is not None:
            values[label] = ArtifactOutputs(artifact_root, kept.run_id or spec.of).load(kept.uri)
        else:
            values[label] = kept.json_value
    return values


def _failed_start(error: str) -> dict[str, Any]:
    return {"status": "failed", "error": error, "phase": "start"}


def execute_dag(
    request: RequestRun,
    bundle_dir: Path,
    send: Send,
    artifact_root: str,
    loader: DagLoader,
    threads: int = DEFAULT_THREADS,
) -> dict[str, Any]:
    """Run one DAG request to a result dict (never raises for the DAG's faults)."""
    try:
        dag = loader.load(bundle_dir, request.entrypoint, request.routine)
        plan = plan_dag(dag, request.routine)
    except (BundleError, GraphError) as exc:
        return _failed_start(str(exc))
    payload = dict(request.event.get("payload") or {})
    resume = (
        ResumeSpec.model_validate(request.event["resume"]) if "resume" in request.event else None
    )
    outputs = ArtifactOutputs(artifact_root, request.run_id)
    try:
        reuse = reused_values(resume, artifact_root) if resume else {}
    except Exception as exc:  # noqa: BLE001 - a kept output that cannot be read back
        return _failed_start(f"cannot read a kept node output of run {resume and resume.of}: {exc}")
    missing = [label for label in (resume.rerun if resume else []) if label not in dag.nodes]
    if missing:
        return _failed_start(
            f"DAG {request.routine} has no node {missing[0]!r} any more: its code changed since "
            "that run; start a new run instead"
        )
    send(
        {
            "type": "dag",
            "record": DagRecord(
                nsref=request.routine,
                status="running",
                inputs=payload,
                nodes=[DagNodeRecord(label=label) for label in plan.order],
                edges=plan.edges,
            ).model_dump(mode="json"),
        }
    )

    def on_node(node: DagNodeRecord) -> None:
        send({"type": "node", "node": node.model_dump(mode="json")})

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mainspring-dag") as pool:
        executor = DagExecutor(pool, outputs, on_node)
        run = asyncio.run(
            executor.run(
                dag,
                payload,
                nsref=request.routine,
                reuse=reuse,
                unkept=dict(resume.unkept) if resume else None,
                mode=resume.mode if resume else "run",
                resumed_from=resume.of if resume else None,
            )
        )
    record = run.record
    result: dict[str, Any] = {
        "status": record.status,
        "outputs": json.loads(json.dumps(record.outputs, default=str)),
        "dag": record.model_dump(mode="json"),
    }
    if record.status == "failed":
        node = record.node(record.failed_node or "")
        result["error"] = f"node {record.failed_node} failed: {node.error if node else ''}"
        result["traceback"] = node.traceback if node else None
    return result
