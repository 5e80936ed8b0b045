"""The Routine base class and its contract: one trigger parameter, typed defaulted inputs."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, overload

from opentelemetry.trace import Span
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from mainspring.contract.messages import ISOLATIONS, PRIORITIES
from mainspring.sdk.triggers import AnyTrigger, TriggerSpec


class RoutineInvocationError(RuntimeError):
    """run() was called without a fired event."""


class ContractError(ValueError):
    """A routine breaks the contract; the message says what to change."""


class InputError(ValueError):
    """An input value does not fit the run() annotation."""


class RunContext(Protocol):
    """What the executing runner provides to a routine instance."""

    def progress(self, fraction: float, message: str) -> None: ...

    def save_artifact(self, name: str, data: Any) -> str: ...


class RunInfo(BaseModel):
    """Who this run is: available as `self.run_info` inside run()."""

    model_config = ConfigDict(frozen=True)
    id: str
    number: int
    routine: str
    source: str
    labels: list[str] = []
    attributes: dict[str, Any] = {}
    hop: int = 0
    parent_run_id: str | None = None


_SUPPORTED_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
}


@dataclass(frozen=True)
class InputSpec:
    """One validated run() input: its type name and default."""

    type: str
    default: Any
    optional: bool = False

    def python_type(self) -> Any:
        """The annotation this spec was made from."""
        base = _SUPPORTED_TYPES[self.type]
        return base | None if self.optional else base


# The method every trigger starts, and the one a run executes unless it names another.
RUN_METHOD = "run"
# The constructor of a stateful routine: its inputs are an instance's configuration.
CONSTRUCTOR = "configure"
# Names a routine cannot declare as methods: the lifecycle the runner calls itself.
_RESERVED_METHODS = frozenset({RUN_METHOD, "setup", "cleanup"})


@dataclass(frozen=True)
class MethodContract:
    """A declared method besides run(): its inputs and whether it may run in memory."""

    inputs: dict[str, InputSpec] = field(default_factory=dict)
    in_memory: bool = False
    constructor: bool = False


@dataclass(frozen=True)
class RoutineContract:
    """What inspecting a Routine class tells: its trigger, its inputs and its methods."""

    trigger_param: str
    trigger: AnyTrigger
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    methods: dict[str, MethodContract] = field(default_factory=dict)


_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass(frozen=True)
class _MethodMark:
    in_memory: bool


@overload
def method(function: _Method, /) -> _Method: ...


@overload
def method(*, in_memory: bool = False) -> Callable[[_Method], _Method]: ...


def method(
    function: _Method | None = None, /, *, in_memory: bool = False
) -> _Method | Callable[[_Method], _Method]:
    """Declare a routine method besides run(): `@method` or `@method(in_memory=True)`.

    Its typed, defaulted parameters are its inputs; `mainspring run INSTANCE --method NAME`
    starts it. A method named `configure` is the instance's constructor.
    """

    def mark(target: _Method) -> _Method:
        target._mainspring_method = _MethodMark(in_memory=in_memory)  # type: ignore[attr-defined]
        return target

    return mark(function) if function is not None else mark


class Routine:
    """Base class of user routines: override run(), optionally setup() and cleanup().

    Other methods a run may execute are declared with `@method`; `configure` (or the
    parameters of `__init__`) is the constructor, whose inputs are an instance's
    configuration, read in every run as `self.config`.

    Class attributes set per-routine options: timeout_s, memory ("2GiB"), retries,
    retry_backoff_s, max_hops, max_concurrent, allow_in_memory, isolation ("worker": a
    reused worker process, the default; "process": a fresh process per run), priority
    ("high", "normal" or "low": runners with a free slot take higher-priority runs first; a
    run may ask for another), and the circuit
    breaker: more than max_fires triggered runs within max_fires_window ("1m") pause the
    routine's triggers with the reason, until `mainspring routine enable` (None: no limit).
    """

    timeout_s: ClassVar[float | None] = None
    memory: ClassVar[str | None] = None
    retries: ClassVar[int] = 0
    retry_backoff_s: ClassVar[float] = 1.0
    max_hops: ClassVar[int | None] = None
    max_concurrent: ClassVar[int | None] = None
    allow_in_memory: ClassVar[bool] = False
    isolation: ClassVar[str] = "worker"
    priority: ClassVar[str] = "normal"
    max_fires: ClassVar[int | None] = 300
    max_fires_window: ClassVar[str] = "1m"

    _context: RunContext | None = None
    _run_info: RunInfo | None = None
    _state: dict[str, Any] | None = None
    _config: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_mainspring_guarded", False):
            setattr(cls, "run", _guard_run(run))  # noqa: B010 - run() is defined by subclasses only

    # `Awaitable[None] | None`: a subclass may define either as `async def`.
    def setup(self) -> Awaitable[None] | None:
        """Called once per process before the first run."""
        return None

    def cleanup(self) -> Awaitable[None] | None:
        """Called after each run, whatever its outcome."""
        return None

    @property
    def run_info(self) -> RunInfo:
        """The executing run's identity."""
        if self._run_info is None:
            raise RoutineInvocationError("run_info exists only inside a run started by Mainspring")
        return self._run_info

    @property
    def state(self) -> dict[str, Any]:
        """Small JSON state kept between runs of this routine instance (see mainspring.storage.state)."""
        if self._state is None:
            self._state = {}
        return self._state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = dict(value)

    @property
    def config(self) -> dict[str, Any]:
        """This instance's configuration, as its last constructor (`configure`) run set it."""
        return dict(self._config or {})

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1) with a message; shown by `mainspring runs watch`."""
        if self._context is not None:
            self._context.progress(max(0.0, min(1.0, float(fraction))), message)

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A trace span around part of a run: `with self.span("load"): ...`.

        It is a child of the run's span, so it shows in `mainspring runs trace` and in any
        tracing backend; outside a traced run it costs next to nothing and goes nowhere.
        """
        # Imported here: `import mainspring` stays free of the OpenTelemetry SDK.
        from mainspring.base import tracing

        with tracing.span(name, attributes) as opened:
            yield opened

    def save_artifact(self, name: str, data: Any) -> str:
        """Save a pyarrow table or a file path as an artifact of this run; returns its URI."""
        if self._context is None:
            raise RoutineInvocationError(
                "save_artifact works only inside a run started by Mainspring"
            )
        return self._context.save_artifact(name, data)


def _guard_run(run: Any) -> Any:
    signature = inspect.signature(run)

    @functools.wraps(run)
    def guarded(self: Routine, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise RoutineInvocationError(f"{type(self).__name__}.run(): {exc}") from None
        for name, param in signature.parameters.items():
            if isinstance(param.default, TriggerSpec) and isinstance(
                bound.arguments.get(name, param.default), TriggerSpec
            ):
                raise RoutineInvocationError(
                    f"{type(self).__name__}.run() needs a fired event for {name!r}: start it with "
                    f"`mainspring run NAME` or pass an event, not a trigger"
                )
        return run(self, *args, **kwargs)

    guarded._mainspring_guarded = True  # type: ignore[attr-defined]
    return guarded


def _input_spec(
    cls_name: str,
    name: str,
    param: inspect.Parameter,
    hints: dict[str, Any],
    method_name: str = RUN_METHOD,
) -> InputSpec:
    if param.default is inspect.Parameter.empty:
        raise ContractError(
            f"parameter {name!r} of {cls_name}.{method_name}() has no default: give it one, "
            f"e.g. `{name}: int = 0`"
        )
    annotation = hints.get(name, inspect.Parameter.empty)
    if annotation is inspect.Parameter.empty:
        raise ContractError(
            f"parameter {name!r} of {cls_name}.{method_name}() has no type annotation: write "
            f"`{name}: {type(param.default).__name__} = {param.default!r}`"
        )
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            annotation, optional = rest[0], True
    base = typing.get_origin(annotation) or annotation
    type_name = next((k for k, v in _SUPPORTED_TYPES.items() if v is base), None)
    if type_name is None:
        raise ContractError(
            f"parameter {name!r} of {cls_name}.{method_name}() has type {annotation!r}: inputs must be "
            "int, float, str, bool, list or dict (optionally `| None`)"
        )
    spec = InputSpec(type=type_name, default=param.default, optional=optional)
    try:
        coerce_input(spec, param.default)
    except InputError as exc:
        raise ContractError(f"default of {name!r} in {cls_name}.{method_name}(): {exc}") from None
    return spec


def inspect_contract(cls: type) -> RoutineContract:
    """Check a Routine class against the contract and describe its trigger and inputs."""
    name = cls.__name__
    if not (isinstance(cls, type) and issubclass(cls, Routine)):
        raise ContractError(f"{name} is not a Routine: write `class {name}(Routine):`")
    run = cls.__dict__.get("run") or getattr(cls, "run", None)
    if run is None or run is Routine.__dict__.get("run"):
        raise ContractError(
            f"{name} has no run() method: define `def run(self, event=on_schedule(every='1m'))`"
        )
    signature = inspect.signature(inspect.unwrap(run))
    try:
        hints = typing.get_type_hints(inspect.unwrap(run))
    except (NameError, TypeError, AttributeError):  # annotations that do not resolve
        hints = {}
    params = [p for p in list(signature.parameters.values())[1:]]
    trigger_params = [p for p in params if isinstance(p.default, TriggerSpec)]
    if len(trigger_params) != 1:
        if not trigger_params:
            raise ContractError(
                f"{name}.run() has no trigger: give exactly one parameter a trigger default, "
                "e.g. `event=on_schedule(every='1m')`"
            )
        names = ", ".join(p.name for p in trigger_params)
        raise ContractError(
            f"{name}.run() has {len(trigger_params)} trigger parameters ({names}): keep exactly one"
        )
    bad_kinds = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if bad_kinds:
        raise ContractError(
            f"{name}.run() takes *args/**kwargs ({', '.join(bad_kinds)}): name each input"
        )
    isolation = getattr(cls, "isolation", "worker")
    if isolation not in ISOLATIONS:
        raise ContractError(
            f"{name}.isolation is {isolation!r}: set it to 'worker' (a reused worker process) "
            "or 'process' (a fresh process per run)"
        )
    priority = getattr(cls, "priority", "normal")
    if priority not in PRIORITIES:
        raise ContractError(
            f"{name}.priority is {priority!r}: set it to 'high', 'normal' (the default) or 'low'"
        )
    trigger_param = trigger_params[0]
    inputs = {p.name: _input_spec(name, p.name, p, hints) for p in params if p is not trigger_param}
    return RoutineContract(
        trigger_param=trigger_param.name,
        trigger=trigger_param.default,
        inputs=inputs,
        methods=inspect_methods(cls),
    )


def inspect_methods(cls: type) -> dict[str, MethodContract]:
    """The methods a routine declares besides run() (with `@method`, or `configure`)."""
    found: dict[str, MethodContract] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            mark = getattr(value, "_mainspring_method", None)
            if not callable(value) or (mark is None and attr != CONSTRUCTOR):
                continue
            if attr in _RESERVED_METHODS or attr.startswith("_"):
                raise ContractError(
                    f"{cls.__name__}.{attr}() cannot be a method: run, setup, cleanup and "
                    "private names are taken; rename it"
                )
            found[attr] = _method_contract(cls.__name__, attr, value, mark)
    if CONSTRUCTOR not in found and constructor_parameters(cls):
        # `__init__` parameters are the configuration of a routine without `configure`.
        found[CONSTRUCTOR] = _method_contract(cls.__name__, "__init__", _own_init(cls), None, True)
    return found


def _own_init(cls: type) -> Callable[..., Any]:
    # Read from the class, not an instance: the routine's own signature is the contract.
    init: Callable[..., Any] = cls.__init__  # type: ignore[misc]
    return init


def constructor_parameters(cls: type) -> list[str]:
    """The named parameters of a routine's own `__init__` (none: it takes no configuration).

    An `__init__` taking `*args` or `**kwargs` only passes them on: it declares nothing.
    """
    init = _own_init(cls)
    if init is object.__init__:
        return []
    params = list(inspect.signature(init).parameters.values())[1:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return []
    return [p.name for p in params]


def _method_contract(
    cls_name: str,
    name: str,
    function: Callable[..., Any],
    mark: _MethodMark | None,
    constructor: bool = False,
) -> MethodContract:
    target = inspect.unwrap(function)
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except (NameError, TypeError, AttributeError):  # annotations that do not resolve
        hints = {}
    params = list(signature.parameters.values())[1:]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ContractError(f"{cls_name}.{name}() takes *{param.name}: name each input")
        if isinstance(param.default, TriggerSpec):
            raise ContractError(
                f"{cls_name}.{name}() has a trigger parameter {param.name!r}: only run() "
                "is started by triggers; give it a plain default"
            )
    inputs = {p.name: _input_spec(cls_name, p.name, p, hints, name) for p in params}
    return MethodContract(
        inputs=inputs,
        in_memory=mark.in_memory if mark is not None else False,
        constructor=constructor or name == CONSTRUCTOR,
    )


def method_specs(contract: RoutineContract, method_name: str) -> dict[str, InputSpec]:
    """The inputs of one method of a routine (run() included), or ContractError."""
    if method_name == RUN_METHOD:
        return contract.inputs
    if method_name not in contract.methods:
        known = ", ".join([RUN_METHOD, *sorted(contract.methods)])
        raise ContractError(f"this code has no method {method_name!r}: it has {known}")
    return contract.methods[method_name].inputs


def coerce_input(spec: InputSpec, value: Any) -> Any:
    """Validate (and convert CLI strings for) one input value against its spec."""
    if isinstance(value, str) and spec.type in ("list", "dict", "int", "float", "bool"):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    try:
        return TypeAdapter(spec.python_type()).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]["msg"]
        raise InputError(f"{value!r} is not a valid {spec.type}: {first}") from None


def validate_inputs(specs: dict[str, InputSpec], given: dict[str, Any]) -> dict[str, Any]:
    """All inputs of a run: given values validated, the rest from defaults."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs)) or "none"
        raise InputError(f"unknown input {unknown[0]!r}: this routine takes {known}")
    resolved: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given:
            try:
                resolved[name] = coerce_input(spec, given[name])
            except InputError as exc:
                raise InputError(f"input {name!r}: {exc}") from None
        else:
            resolved[name] = spec.default
    return resolved


def load_routine_class(folder: Path, entrypoint: str) -> type[Routine]:
    """Import `path.py:Class` from a routine folder (put on sys.path first)."""
    from mainspring.sdk.bundle import import_entrypoint

    return import_entrypoint(folder, entrypoint)
