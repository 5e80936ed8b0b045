"""Executing a checked DAG: async nodes on the event loop, sync nodes on a bounded thread
pool, independent nodes at the same time, every node's state reported as it changes.

A failed node ends the run as a result (status failed, the node named, its traceback), never
as an exception: nodes already running finish, nothing new starts, and the rest stay pending.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mainspring.compose import Binding, Dag, Plan, plan_dag
from mainspring.contract.messages import DagNodeRecord, DagRecord
from mainspring.runtime.dag_outputs import (
    INLINE_JSON_BYTES,
    InlineOutputs,
    OutputStore,
    preview,
    small_json,
)

# Sync nodes of one DAG run at most this many at a time (each holds a thread while it runs).
DEFAULT_THREADS = 4
# Inputs shown in the node table, all nodes together (the record is one bus message).
INPUTS_BUDGET_BYTES = 64 * 1024
INPUT_JSON_BYTES = 2048

OnNode = Callable[[DagNodeRecord], None]


class NodeFailed(Exception):
    """A node raised; carries the node's label and the traceback text."""

    def __init__(self, label: str, error: str, trace: str) -> None:
        super().__init__(error)
        self.label = label
        self.error = error
        self.trace = trace


class PayloadError(ValueError):
    """A payload lacks what a source node needs; the message names key and node."""


@dataclass
class DagRun:
    """The outcome of one DAG run: its record and the sink values themselves."""

    record: DagRecord
    values: dict[str, Any] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


def source_arguments(plan: Plan, label: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A source node's keyword arguments from the payload, by parameter name."""
    arguments: dict[str, Any] = {}
    for binding in plan.bindings[label]:
        if binding.param in payload:
            arguments[binding.param] = payload[binding.param]
        elif binding.required:
            raise PayloadError(
                f"payload has no {binding.param!r}, which source node {label} needs: "
                f"pass it, e.g. --payload '{{\"{binding.param}\": ...}}'"
            )
    return arguments


def _argument(binding: Binding, values: dict[str, Any]) -> Any:
    if binding.source == "upstream":
        return values[binding.nodes[0]]
    if binding.source == "fan_in":
        return [values[n] for n in binding.nodes]
    return binding.default


class DagExecutor:
    """Runs one DAG (and its sub-DAGs and maps) on the current event loop."""

    def __init__(
        self,
        threads: ThreadPoolExecutor,
        outputs: OutputStore | None = None,
        on_node: OnNode | None = None,
    ) -> None:
        self.threads = threads
        self.outputs = outputs or InlineOutputs()
        self.on_node = on_node

    async def run(
        self,
        dag: Dag,
        payload: dict[str, Any],
        *,
        nsref: str | None = None,
        reuse: dict[str, Any] | None = None,
        unkept: dict[str, str] | None = None,
        mode: Literal["run", "restart", "replay"] = "run",
        resumed_from: str | None = None,
        report: bool = True,
    ) -> DagRun:
        """Run every node once. Nodes in `reuse` are skipped with that output; nodes in
        `unkept` are skipped without one (nothing downstream of them runs again)."""
        name = nsref or dag.nsref or "dag"
        state = _RunState(self, dag, plan_dag(dag, name), payload, self.on_node if report else None)
        state.skip(reuse or {}, unkept or {})
        state.check_payload()
        await state.run_all()
        record = DagRecord(
            nsref=name,
            status="running",
            inputs=dict(payload),
            edges=state.plan.edges,
            mode=mode,
            resumed_from=resumed_from,
        )
        return state.result(record)

    async def _call(
        self, kind: str, target: Any, arguments: dict[str, Any], plan: Plan, label: str
    ) -> Any:
        if kind == "call":
            if inspect.iscoroutinefunction(target):
                return await target(**arguments)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self.threads, functools.partial(target, **arguments)
            )
            return await result if inspect.isawaitable(result) else result
        assert isinstance(target, Dag)
        if kind == "dag":
            return await self._sub_dag(target, arguments, label)
        items = arguments["items"]
        item_param = plan.map_item[label]
        if isinstance(items, dict):
            keys = list(items)
            results = await asyncio.gather(
                *(self._sub_dag(target, {item_param: items[k]}, f"{label}[{k!r}]") for k in keys)
            )
            return dict(zip(keys, results, strict=True))
        return list(
            await asyncio.gather(
                *(
                    self._sub_dag(target, {item_param: item}, f"{label}[{i}]")
                    for i, item in enumerate(items)
                )
            )
        )

    async def _sub_dag(self, dag: Dag, payload: dict[str, Any], where: str) -> Any:
        """A sub-DAG's value: its single sink's output, else a dict of its sinks' outputs."""
        inner = await self.run(dag, payload, report=False)
        if inner.record.status == "failed":
            node = inner.record.node(inner.record.failed_node or "")
            raise NodeFailed(
                where,
                f"sub-DAG {inner.record.nsref} failed at node {inner.record.failed_node}: "
                f"{node.error if node else 'unknown error'}",
                (node.traceback or "") if node else "",
            )
        if len(inner.values) == 1:
            return next(iter(inner.values.values()))
        return inner.values


def _sink_json(value: Any) -> Any:
    """A sink's value as the run's output: small JSON as is, else a short repr (the whole
    value is in the node table's kept output)."""
    ok, data = small_json(value, INLINE_JSON_BYTES)
    return data if ok else preview(value)


def run_dag(
    dag: Dag,
    payload: dict[str, Any] | None = None,
    *,
    threads: int = DEFAULT_THREADS,
    outputs: OutputStore | None = None,
    on_node: OnNode | None = None,
) -> DagRun:
    """Run a DAG in this process, to its record and sink values (for tests and scripts)."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mainspring-dag") as pool:
        executor = DagExecutor(pool, outputs, on_node)
        return asyncio.run(executor.run(dag, payload or {}))


class _RunState:
    """One DAG run in progress: node records, values, failures."""

    def __init__(
        self,
        executor: DagExecutor,
        dag: Dag,
        plan: Plan,
        payload: dict[str, Any],
        on_node: OnNode | None,
    ) -> None:
        self.executor = executor
        self.dag = dag
        self.plan = plan
        self.payload = payload
        self.on_node = on_node
        self.records = {
            label: DagNodeRecord(label=label, nsref=dag.nodes[label].nsref) for label in plan.order
        }
        self.values: dict[str, Any] = {}
        self.skipped: set[str] = set()
        self.failures: list[NodeFailed] = []
        self.inputs_budget = INPUTS_BUDGET_BYTES

    def recorded_input(self, value: Any) -> Any:
        """An input as the node table shows it: small JSON within the run's budget for
        inputs (they repeat upstream outputs, kept already), else a short repr."""
        ok, data = small_json(value, INPUT_JSON_BYTES)
        size = len(json.dumps(data)) if ok else 0
        if not ok or size > self.inputs_budget:
            return preview(value)
        self.inputs_budget -= size
        return data

    def update(self, label: str, **changes: Any) -> None:
        """Change one node's record and report it."""
        self.records[label] = self.records[label].model_copy(update=changes)
        if self.on_node is not None:
            self.on_node(self.records[label])

    def fail(self, label: str, error: str, trace: str, **changes: Any) -> None:
        """Record a node's failure; the first one names the run's failed node."""
        self.update(label, status="failed", error=error, traceback=trace or None, **changes)
        self.failures.append(NodeFailed(label, error, trace))

    def skip(self, reuse: dict[str, Any], unkept: dict[str, str]) -> None:
        """Mark nodes that do not run again, with the outputs handed on (or why none)."""
        for label, value in reuse.items():
            if label in self.records:
                self.values[label] = value
                self.skipped.add(label)
                kept = self.executor.outputs.keep(label, value)
                self.update(label, status="skipped", **kept.fields())
        for label, note in unkept.items():
            if label in self.records:
                self.skipped.add(label)
                self.update(label, status="skipped", output_kept="none", output_note=note)

    def check_payload(self) -> None:
        """A missing payload key fails the run before any node starts, naming key and node."""
        for label in self.plan.sources:
            if label in self.skipped:
                continue
            try:
                source_arguments(self.plan, label, self.payload)
            except PayloadError as exc:
                self.fail(label, str(exc), "")
                return

    def arguments(self, label: str) -> dict[str, Any]:
        """A node's keyword arguments: the payload for a source, else upstream outputs."""
        if not self.plan.upstream[label]:
            return source_arguments(self.plan, label, self.payload)
        return {
            b.param: _argument(b, self.values)
            for b in self.plan.bindings[label]
            if b.source != "default"
        }

    async def run_node(self, label: str) -> None:
        """Run one node and record how it ended."""
        node = self.dag.nodes[label]
        arguments = self.arguments(label)
        shown = {k: self.recorded_input(v) for k, v in arguments.items()}
        self.update(label, status="running", started_at=_now(), inputs=shown)
        try:
            value = await self.executor._call(node.kind, node.target, arguments, self.plan, label)
        except NodeFailed as failed:
            self.fail(label, failed.error, failed.trace, finished_at=_now())
            return
        except Exception as exc:  # noqa: BLE001 - a node's fault is the run's result
            error = f"{type(exc).__name__}: {exc}"
            self.fail(label, error, traceback.format_exc(), finished_at=_now())
            return
        self.values[label] = value
        kept = self.executor.outputs.keep(label, value)
        self.update(label, status="completed", finished_at=_now(), **kept.fields())

    async def run_all(self) -> None:
        """Start each node once its upstreams are done; after a failure start nothing new."""
        running: dict[str, asyncio.Future[None]] = {}
        while not self.failures:
            done = set(self.values) | self.skipped
            for label in self.plan.order:
                upstream_done = all(u in done for u in self.plan.upstream[label])
                if label not in done and label not in running and upstream_done:
                    running[label] = asyncio.ensure_future(self.run_node(label))
            active = [task for task in running.values() if not task.done()]
            if not active:
                break
            await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
        # Nodes already running when one failed finish and keep their records.
        pending = [task for task in running.values() if not task.done()]
        if pending:
            await asyncio.wait(pending)

    def result(self, record: DagRecord) -> DagRun:
        """The run's record (status, failed node, node table, sink outputs) and sink values."""
        failed = self.failures[0] if self.failures else None
        sinks = (
            {}
            if failed
            else {label: self.values[label] for label in self.plan.sinks if label in self.values}
        )
        final = record.model_copy(
            update={
                "status": "failed" if failed else "completed",
                "failed_node": failed.label if failed else None,
                "nodes": [self.records[label] for label in self.plan.order],
                "outputs": {label: _sink_json(value) for label, value in sinks.items()},
            }
        )
        return DagRun(final, sinks)
