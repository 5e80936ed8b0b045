"""Pipelines of plain functions: a Namespace of callables and DAGs wired with `>>`.

Compatible with lythonic's `lythonic.compose.namespace` (Namespace, Dag, `>>`): a node's
parameter receives an upstream node's whole return value when the upstream's return
annotation equals the parameter's annotation; a `list[X]` parameter collects every upstream
returning `X` (fan-in). Payload keys reach source nodes only, by parameter name, and the
outputs of a DAG run are its sink nodes' values. Unlike lythonic, a DAG is checked when it is
registered (cycles, parameters nothing fills, edges into another DAG), so a bad graph fails
at import, where the author is, not in a run hours later.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Binding",
    "Dag",
    "DagNode",
    "DagProvenance",
    "GraphError",
    "Namespace",
    "NamespaceNode",
    "Param",
    "Plan",
    "TriggerConfig",
    "TriggerType",
    "plan_dag",
]

# `market:fetch`, `a.b:leaf`, or a bare `leaf`.
_NSREF = re.compile(r"^(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:)?[A-Za-z_]\w*$")
_LABEL = re.compile(r"^[A-Za-z_][\w-]*$")


class GraphError(ValueError):
    """A DAG that cannot run as wired; the message names the node and the fix."""


TriggerType = Literal["poll", "push"]


@dataclass(frozen=True)
class DagProvenance:
    """Where embedded mode keeps run history (runs and their node tables): a SQLite file,
    or (path None) `runs.db` in the system's home. Give `provenance=None` to keep none."""

    path: Path | str | None = None


@dataclass(frozen=True)
class TriggerConfig:
    """A trigger declared in code (lythonic's TriggerConfig): registering the namespace
    creates it as a named trigger, inactive until activated.

    `poll` fires on `schedule` (cron: 5 fields, or 6 with seconds first); with `poll_fn`,
    each tick first calls it on a runner: a dict fires with that payload, None skips.
    `push` fires only when called. `payload` is the default payload of a firing.
    """

    name: str
    type: TriggerType = "poll"
    schedule: str | None = None
    poll_fn: Callable[[], Any] | None = None
    payload: dict[str, Any] | None = None

    def check(self) -> TriggerConfig:
        """Raise ValueError (one line, naming the fix) unless this trigger can fire."""
        from mainspring.base.schedules import ScheduleError, check_cron

        where = f"trigger {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a trigger needs a name: TriggerConfig(name='hourly_market', ...)")
        if self.type not in ("poll", "push"):
            raise ValueError(f"{where}: type {self.type!r} is not 'poll' or 'push'")
        if self.type == "push" and (self.schedule is not None or self.poll_fn is not None):
            raise ValueError(
                f"{where}: a push trigger fires only when called: leave out schedule and "
                "poll_fn, or make it type='poll'"
            )
        if self.type == "poll":
            if self.schedule is None:
                raise ValueError(
                    f"{where}: a poll trigger needs schedule='CRON', e.g. '0 * * * *' "
                    "(or '*/10 * * * * *' with seconds first)"
                )
            try:
                check_cron(self.schedule)
            except ScheduleError as exc:
                raise ValueError(f"{where}: {str(exc).replace('cron=', 'schedule=')}") from None
        if self.poll_fn is not None:
            top_level_function(self.poll_fn, f"{where}: poll_fn")
        if self.payload is not None and not isinstance(self.payload, dict):
            raise ValueError(f'{where}: payload must be a dict, e.g. {{"city": "Oslo"}}')
        return self


def top_level_function(fn: Any, what: str) -> tuple[str, str]:
    """(module name, qualified name) of a function a runner can import by name.

    A lambda or a function nested in another has no name its module can be asked for, so a
    runner in another process could never find it: refused here, where the author is.
    """
    qualname = getattr(fn, "__qualname__", None)
    module_name = getattr(fn, "__module__", None)
    if not callable(fn) or not isinstance(qualname, str) or not isinstance(module_name, str):
        raise ValueError(f"{what}: {fn!r} is not a function: pass a function defined at top level")
    # The module's own namespace, as the function sees it (also once the module has left
    # sys.modules): a function found there under its qualified name can be imported by name.
    module_globals: dict[str, Any] = getattr(fn, "__globals__", None) or vars(
        sys.modules.get(module_name, types.SimpleNamespace())
    )
    first, *rest = qualname.split(".")
    found: Any = module_globals.get(first)
    for part in rest:
        found = getattr(found, part, None)
    if "<lambda>" in qualname or "<locals>" in qualname or found is not fn:
        raise ValueError(
            f"{what}: {qualname} is a lambda or a nested function, which a runner cannot "
            "import: define it with `def` at module top level"
        )
    return module_name, qualname


@dataclass(frozen=True)
class Param:
    """One parameter of a node: its name, annotation (None: none) and default."""

    name: str
    annotation: Any
    required: bool
    default: Any = None


def _type_name(annotation: Any) -> str:
    if annotation is None:
        return "no annotation"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _signature(target: Callable[..., Any]) -> tuple[list[Param], Any]:
    """Parameters and return annotation of a function or class (a class returns itself)."""
    function: Any = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:  # noqa: BLE001 - an unresolvable annotation: say which callable
        raise GraphError(
            f"cannot read the annotations of {_callable_name(target)}: {exc}; "
            "import the types it names at module level"
        ) from None
    signature = inspect.signature(target)
    params = [
        Param(
            name=p.name,
            annotation=hints.get(p.name),
            required=p.default is inspect.Parameter.empty,
            default=None if p.default is inspect.Parameter.empty else p.default,
        )
        for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    returns = target if inspect.isclass(target) else hints.get("return")
    return params, returns


def _callable_name(target: Any) -> str:
    return str(getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target)))


class NamespaceNode:
    """A callable or DAG registered under an nsref; calling it calls the callable."""

    def __init__(self, nsref: str, target: Callable[..., Any] | Dag) -> None:
        self.nsref = nsref
        self.target = target

    @property
    def leaf(self) -> str:
        """The part of the nsref after its namespace (`market:fetch` → `fetch`)."""
        return self.nsref.rpartition(":")[2]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.target, Dag):
            raise TypeError(
                f"{self.nsref} is a DAG: run it with `mainspring dag run {self.nsref}` "
                "or mainspring.runtime.dag_executor.run_dag"
            )
        return self.target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"NamespaceNode({self.nsref!r})"


class Namespace:
    """Callables and DAGs by nsref (`market:fetch`), as lythonic's Namespace keeps them."""

    def __init__(self) -> None:
        self._nodes: dict[str, NamespaceNode] = {}
        # Trigger name -> (the nsref it fires, its declaration).
        self._triggers: dict[str, tuple[str, TriggerConfig]] = {}
        # The module that made it: a module importing another's namespace must not register
        # that namespace's DAGs a second time, and embedded mode bundles this module's file.
        self.defined_in: str | None = sys._getframe(1).f_globals.get("__name__")

    def register(
        self,
        target: Callable[..., Any] | Dag,
        nsref: str,
        triggers: list[TriggerConfig] | None = None,
    ) -> NamespaceNode:
        """Register a function, class or DAG under `nsref`; a DAG is checked here.

        `triggers` declares triggers firing it (lythonic's TriggerConfig on a node).
        """
        if not _NSREF.match(nsref):
            raise ValueError(
                f"nsref {nsref!r} is not 'namespace:name': write e.g. 'market:fetch' "
                "(letters, digits, _ ; dots between namespace parts)"
            )
        if nsref in self._nodes:
            raise ValueError(f"nsref {nsref!r} is already registered: choose another nsref")
        if isinstance(target, Dag):
            plan_dag(target, nsref)
            target.nsref = nsref
        elif not callable(target):
            raise ValueError(
                f"{nsref}: {target!r} is not callable: register a function, a class or a Dag"
            )
        for config in triggers or []:
            self._check_trigger(config, nsref)
        node = NamespaceNode(nsref, target)
        self._nodes[nsref] = node
        for config in triggers or []:
            self._triggers[config.name] = (nsref, config)
        return node

    def register_trigger(
        self,
        name: str,
        dag_nsref: str,
        trigger_type: TriggerType = "poll",
        schedule: str | None = None,
        poll_fn: Callable[[], Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> TriggerConfig:
        """Declare a trigger of a registered DAG (lythonic's `register_trigger`)."""
        if dag_nsref not in self._nodes:
            known = ", ".join(sorted(self.dags())) or "none"
            raise KeyError(
                f"trigger {name!r}: {dag_nsref!r} is not registered (DAGs: {known}): "
                f"register the DAG first with ns.register(dag, nsref={dag_nsref!r})"
            )
        config = TriggerConfig(name, trigger_type, schedule, poll_fn, payload)
        self._check_trigger(config, dag_nsref)
        self._triggers[name] = (dag_nsref, config)
        return config

    def _check_trigger(self, config: TriggerConfig, nsref: str) -> None:
        if not isinstance(config, TriggerConfig):
            raise TypeError(f"{nsref}: triggers takes TriggerConfig(...) items, not {config!r}")
        config.check()
        if config.name in self._triggers:
            raise ValueError(
                f"trigger {config.name!r} is already declared (firing "
                f"{self._triggers[config.name][0]}): choose another trigger name"
            )

    def get_trigger(self, name: str) -> tuple[NamespaceNode, TriggerConfig]:
        """The node a declared trigger fires and its declaration (KeyError when missing)."""
        try:
            nsref, config = self._triggers[name]
        except KeyError:
            known = ", ".join(sorted(self._triggers)) or "none"
            raise KeyError(f"trigger {name!r} is not declared (declared: {known})") from None
        return self._nodes[nsref], config

    def triggers(self) -> dict[str, tuple[str, TriggerConfig]]:
        """Every declared trigger by name: (the nsref it fires, its declaration)."""
        return dict(self._triggers)

    def get(self, nsref: str) -> NamespaceNode:
        """The node registered under `nsref` (KeyError naming the known ones when missing)."""
        try:
            return self._nodes[nsref]
        except KeyError:
            known = ", ".join(sorted(self._nodes)) or "none"
            raise KeyError(f"nsref {nsref!r} is not registered (registered: {known})") from None

    def dags(self) -> dict[str, Dag]:
        """Every registered DAG by nsref."""
        return {
            nsref: node.target
            for nsref, node in self._nodes.items()
            if isinstance(node.target, Dag)
        }

    def __iter__(self) -> Iterator[NamespaceNode]:
        return iter(self._nodes.values())

    def __contains__(self, nsref: object) -> bool:
        return nsref in self._nodes


NodeKind = Literal["call", "dag", "map"]


class DagNode:
    """One node of a DAG: a callable, a sub-DAG, or a sub-DAG mapped over a collection."""

    def __init__(
        self,
        dag: Dag,
        label: str,
        target: Callable[..., Any] | Dag,
        kind: NodeKind,
        nsref: str | None,
    ) -> None:
        self.dag = dag
        self.label = label
        self.target = target
        self.kind = kind
        self.nsref = nsref

    def __rshift__(self, other: DagNode) -> DagNode:
        """`a >> b`: b runs after a and may take its output; returns b so chains read on."""
        if not isinstance(other, DagNode):
            raise TypeError(
                f"{self.label} >> {other!r}: the right side must be a node: wrap it with dag.node(...)"
            )
        self.dag._connect(self, other)
        return other

    def __repr__(self) -> str:
        return f"DagNode({self.label!r})"


class Dag:
    """A graph of nodes joined with `>>`; register it in a Namespace to check and name it."""

    def __init__(self) -> None:
        self.nodes: dict[str, DagNode] = {}
        self.edges: list[tuple[DagNode, DagNode]] = []
        self.nsref: str | None = None

    def node(
        self, target: Callable[..., Any] | NamespaceNode | Dag, label: str | None = None
    ) -> DagNode:
        """Add a callable, a registered node or a sub-DAG as a node (labels are unique)."""
        nsref = target.nsref if isinstance(target, NamespaceNode) else None
        inner = target.target if isinstance(target, NamespaceNode) else target
        if isinstance(inner, Dag):
            default = (
                nsref.rpartition(":")[2] if nsref else (inner.nsref or "dag").rpartition(":")[2]
            )
            return self._add(label or default, inner, "dag", nsref or inner.nsref)
        if not callable(inner):
            raise TypeError(
                f"dag.node({inner!r}): pass a function, a class, a Dag or ns.get(nsref)"
            )
        default = nsref.rpartition(":")[2] if nsref else str(getattr(inner, "__name__", "node"))
        return self._add(label or default, inner, "call", nsref)

    def map(self, sub: Dag | NamespaceNode, label: str | None = None) -> DagNode:
        """A node running `sub` once per item of a list (or value of a dict) from upstream."""
        nsref = sub.nsref
        inner = sub.target if isinstance(sub, NamespaceNode) else sub
        if not isinstance(inner, Dag):
            raise TypeError(f"dag.map({sub!r}): map takes a Dag (or ns.get of a registered Dag)")
        default = "map_" + (nsref or "dag").rpartition(":")[2]
        return self._add(label or default, inner, "map", nsref)

    def _add(
        self, label: str, target: Callable[..., Any] | Dag, kind: NodeKind, nsref: str | None
    ) -> DagNode:
        if not _LABEL.match(label):
            raise ValueError(
                f"node label {label!r} is not a name: use letters, digits, _ and - (label=...)"
            )
        if label in self.nodes:
            raise ValueError(
                f"node label {label!r} is already in this DAG: pass label='...' to tell them apart"
            )
        if target is self:
            raise GraphError(f"node {label!r}: a DAG cannot contain itself")
        node = DagNode(self, label, target, kind, nsref)
        self.nodes[label] = node
        return node

    def _connect(self, upstream: DagNode, downstream: DagNode) -> None:
        if any(a is upstream and b is downstream for a, b in self.edges):
            return
        self.edges.append((upstream, downstream))

    def validate(self) -> Plan:
        """Check the graph and return how each node's parameters are bound (GraphError if not)."""
        return plan_dag(self, self.nsref or "dag")


# --- checking and binding ------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """Where one parameter's value comes from."""

    param: str
    # "upstream": one node's output; "fan_in": a list of several outputs, in edge order;
    # "payload": the run's payload key of the same name (source nodes only);
    # "default": the parameter's default.
    source: Literal["upstream", "fan_in", "payload", "default"]
    nodes: tuple[str, ...] = ()
    required: bool = True
    default: Any = None


@dataclass
class Plan:
    """A checked DAG: order, bindings and output types of its nodes."""

    nsref: str
    order: list[str]
    upstream: dict[str, list[str]]
    bindings: dict[str, list[Binding]]
    returns: dict[str, Any]
    sources: list[str]
    sinks: list[str]
    # For map nodes: the sub-DAG's item parameter, and whether the collection is a dict.
    map_item: dict[str, str] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def payload_params(self) -> dict[str, Param]:
        """Parameters the payload can fill (source nodes), by name."""
        found: dict[str, Param] = {}
        for label in self.sources:
            for binding in self.bindings[label]:
                if binding.source == "payload":
                    found[binding.param] = Param(
                        binding.param, None, binding.required, binding.default
                    )
        return found


def _topological(dag: Dag, nsref: str) -> list[str]:
    """Nodes in an order where every upstream comes first; GraphError naming a cycle."""
    downstream: dict[str, list[str]] = {label: [] for label in dag.nodes}
    indegree = dict.fromkeys(dag.nodes, 0)
    for a, b in dag.edges:
        downstream[a.label].append(b.label)
        indegree[b.label] += 1
    ready = [label for label in dag.nodes if indegree[label] == 0]
    order: list[str] = []
    while ready:
        label = ready.pop(0)
        order.append(label)
        for after in downstream[label]:
            indegree[after] -= 1
            if indegree[after] == 0:
                ready.append(after)
    if len(order) < len(dag.nodes):
        stuck = [label for label in dag.nodes if indegree[label] > 0]
        cycle = _a_cycle(stuck, downstream)
        raise GraphError(
            f"DAG {nsref} has a cycle {' >> '.join(cycle)}: remove one of these edges "
            "(a DAG runs each node once)"
        )
    return order


def _a_cycle(stuck: list[str], downstream: dict[str, list[str]]) -> list[str]:
    """One cycle among the nodes left with upstreams, as a path back to its start."""
    path: list[str] = [stuck[0]]
    seen = {stuck[0]: 0}
    while True:
        following = [n for n in downstream[path[-1]] if n in stuck]
        step = following[0]
        if step in seen:
            return [*path[seen[step] :], step]
        seen[step] = len(path)
        path.append(step)


def _node_signature(node: DagNode) -> tuple[list[Param], Any]:
    """A node's parameters and return annotation; a sub-DAG exposes its sources' parameters."""
    if node.kind == "call":
        assert not isinstance(node.target, Dag)
        return _signature(node.target)
    assert isinstance(node.target, Dag)
    inner = plan_dag(node.target, node.nsref or node.label)
    params: dict[str, Param] = {}
    for label in inner.sources:
        for param in _signature_of_planned(node.target, label):
            earlier = params.get(param.name)
            if earlier is not None and earlier.annotation != param.annotation:
                raise GraphError(
                    f"node {node.label}: its sub-DAG's sources take {param.name!r} as both "
                    f"{_type_name(earlier.annotation)} and {_type_name(param.annotation)}: "
                    "rename one parameter"
                )
            params[param.name] = param
    returns = inner.returns[inner.sinks[0]] if len(inner.sinks) == 1 else dict[str, Any]
    return list(params.values()), returns


def _signature_of_planned(dag: Dag, label: str) -> list[Param]:
    params, _ = _node_signature(dag.nodes[label])
    return params


def _map_signature(node: DagNode) -> tuple[str, Any, Any]:
    """A map node's sub-DAG: its item parameter, the item type and the per-item result type."""
    assert isinstance(node.target, Dag)
    inner = plan_dag(node.target, node.nsref or node.label)
    item_params = [
        p
        for label in inner.sources
        for p in _signature_of_planned(node.target, label)
        if p.required
    ]
    if len(item_params) != 1 or len(inner.sinks) != 1:
        raise GraphError(
            f"map node {node.label}: its sub-DAG must have one required source parameter (the "
            f"item) and one sink; it has {len(item_params)} and {len(inner.sinks)}: "
            "give the per-item DAG one input and one output"
        )
    item = item_params[0]
    return item.name, item.annotation, inner.returns[inner.sinks[0]]


def _collection_item(annotation: Any) -> tuple[str, Any, Any] | None:
    """`list[X]` → ("list", X, None); `dict[K, X]` → ("dict", X, K); else None."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and len(args) == 1:
        return "list", args[0], None
    if origin is dict and len(args) == 2:
        return "dict", args[1], args[0]
    return None


def plan_dag(dag: Dag, nsref: str) -> Plan:
    """Check a DAG and bind every parameter, or raise GraphError naming the node and the fix."""
    for a, b in dag.edges:
        for end in (a, b):
            if end.dag is not dag or dag.nodes.get(end.label) is not end:
                raise GraphError(
                    f"edge {a.label} >> {b.label} in DAG {nsref} reaches node {end.label} of "
                    "another DAG: add it to this DAG with dag.node(...) and connect that node"
                )
    if not dag.nodes:
        raise GraphError(f"DAG {nsref} has no nodes: add some with dag.node(fn)")
    order = _topological(dag, nsref)
    upstream: dict[str, list[str]] = {label: [] for label in dag.nodes}
    for a, b in dag.edges:
        upstream[b.label].append(a.label)
    has_downstream = {a.label for a, _ in dag.edges}
    returns: dict[str, Any] = {}
    bindings: dict[str, list[Binding]] = {}
    map_item: dict[str, str] = {}
    for label in order:
        node = dag.nodes[label]
        if node.kind == "map":
            item_param, item_type, result_type = _map_signature(node)
            binding, returns[label] = _bind_map(
                node, upstream[label], returns, item_type, result_type
            )
            bindings[label] = [binding]
            map_item[label] = item_param
            continue
        params, returns[label] = _node_signature(node)
        bindings[label] = [_bind(node, p, upstream[label], returns) for p in params]
    return Plan(
        nsref=nsref,
        order=order,
        upstream=upstream,
        bindings=bindings,
        returns=returns,
        sources=[label for label in order if not upstream[label]],
        sinks=[label for label in order if label not in has_downstream],
        map_item=map_item,
        edges=[(a.label, b.label) for a, b in dag.edges],
    )


def _bind(node: DagNode, param: Param, ups: list[str], returns: dict[str, Any]) -> Binding:
    """Where one parameter's value comes from, by type annotation (name only for the payload)."""
    if not ups:
        return Binding(param.name, "payload", required=param.required, default=param.default)
    if param.annotation is None:
        if not param.required:
            return Binding(param.name, "default", required=False, default=param.default)
        raise GraphError(
            f"node {node.label}: parameter {param.name!r} has no annotation, and values reach a "
            "node with upstreams by type: annotate it with the type an upstream returns"
        )
    exact = [u for u in ups if returns[u] == param.annotation]
    collection = _collection_item(param.annotation)
    fan_in = (
        [u for u in ups if returns[u] == collection[1]]
        if collection is not None and collection[0] == "list"
        else []
    )
    if len(exact) > 1:
        raise GraphError(
            f"node {node.label}: parameter {param.name}: {_type_name(param.annotation)} could "
            f"come from {', '.join(exact)}: give the upstreams distinct return types, or take "
            f"list[{_type_name(param.annotation)}] to collect them all"
        )
    if exact and fan_in:
        raise GraphError(
            f"node {node.label}: parameter {param.name}: {_type_name(param.annotation)} would "
            f"come from {exact[0]} and collect {', '.join(fan_in)}: change one return type"
        )
    if exact:
        return Binding(param.name, "upstream", (exact[0],))
    if fan_in:
        return Binding(param.name, "fan_in", tuple(fan_in))
    if not param.required:
        return Binding(param.name, "default", required=False, default=param.default)
    offered = ", ".join(f"{u} -> {_type_name(returns[u])}" for u in ups)
    raise GraphError(
        f"node {node.label}: no upstream fills parameter {param.name}: "
        f"{_type_name(param.annotation)} (upstreams: {offered}): connect a node returning "
        f"{_type_name(param.annotation)}, or give the parameter a default"
    )


def _bind_map(
    node: DagNode, ups: list[str], returns: dict[str, Any], item_type: Any, result_type: Any
) -> tuple[Binding, Any]:
    """A map node takes one upstream's list[item] or dict[key, item]; it returns the same
    shape of per-item results."""
    matching: list[tuple[str, Any]] = []
    for u in ups:
        shape = _collection_item(returns[u])
        if shape is not None and shape[1] == item_type:
            result = (
                types.GenericAlias(list, (result_type,))
                if shape[0] == "list"
                else types.GenericAlias(dict, (shape[2], result_type))
            )
            matching.append((u, result))
    if len(matching) != 1:
        found = "none" if not matching else ", ".join(u for u, _ in matching)
        raise GraphError(
            f"map node {node.label}: needs exactly one upstream returning "
            f"list[{_type_name(item_type)}] or dict[..., {_type_name(item_type)}], found {found}: "
            "connect one such node"
        )
    upstream, result = matching[0]
    return Binding("items", "upstream", (upstream,)), result
