"""The routine contract: one trigger parameter, typed defaulted inputs, guarded run()."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mainspring import Routine, RoutineInvocationError, on_dataset_append, on_schedule
from mainspring.sdk.routine import (
    ContractError,
    InputError,
    InputSpec,
    inspect_contract,
    validate_inputs,
)
from mainspring.sdk.triggers import ManualEvent, ScheduleTrigger


class Good(Routine):
    def run(
        self, tick: Any = on_schedule(every="1m"), size: int = 3, ratio: float | None = None
    ) -> dict[str, Any]:
        return {"size": size, "ratio": ratio, "tick": type(tick).__name__}


def test_contract_names_trigger_and_inputs() -> None:
    contract = inspect_contract(Good)

    assert contract.trigger_param == "tick"
    assert isinstance(contract.trigger, ScheduleTrigger)
    assert contract.trigger.every == "1m"
    assert contract.inputs == {
        "size": InputSpec("int", 3),
        "ratio": InputSpec("float", None, optional=True),
    }


def _routine(source: str) -> type[Routine]:
    namespace: dict[str, Any] = {
        "Routine": Routine,
        "on_schedule": on_schedule,
        "on_dataset_append": on_dataset_append,
    }
    exec(source, namespace)
    routine = namespace["R"]
    assert isinstance(routine, type)
    assert issubclass(routine, Routine)
    return routine


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("class R(Routine):\n    pass", "has no run() method"),
        ("class R(Routine):\n    def run(self, size: int = 1): ...", "has no trigger"),
        (
            "class R(Routine):\n    def run(self, a=on_schedule(every='1m'), b=on_dataset_append('d')): ...",
            "2 trigger parameters (a, b): keep exactly one",
        ),
        ("class R(Routine):\n    def run(self, t=on_schedule(every='1m'), n: int): ...", None),
        (
            "class R(Routine):\n    def run(self, t=on_schedule(every='1m'), n=1): ...",
            "no type annotation",
        ),
        (
            "class R(Routine):\n    def run(self, t=on_schedule(every='1m'), n: set = set()): ...",
            "inputs must be",
        ),
        (
            "class R(Routine):\n    def run(self, t=on_schedule(every='1m'), n: int = 'x'): ...",
            "default of 'n'",
        ),
        (
            "class R(Routine):\n    def run(self, t=on_schedule(every='1m'), *rest: int): ...",
            "*args/**kwargs",
        ),
    ],
)
def test_broken_contracts_are_refused_with_the_fix(source: str, message: str | None) -> None:
    if message is None:
        with pytest.raises(SyntaxError):
            _routine(source)
        return
    with pytest.raises(ContractError, match=re.escape(message)):
        inspect_contract(_routine(source))


def test_non_routine_class_is_refused() -> None:
    with pytest.raises(ContractError, match="is not a Routine"):
        inspect_contract(int)


def test_calling_run_without_an_event_raises() -> None:
    with pytest.raises(RoutineInvocationError, match="needs a fired event for 'tick'"):
        Good().run()
    with pytest.raises(RoutineInvocationError):
        Good().run(on_schedule(every="5m"))


def test_calling_run_with_an_event_works() -> None:
    assert Good().run(ManualEvent(), size=5) == {"size": 5, "ratio": None, "tick": "ManualEvent"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"size": 3, "ratio": None}),
        ({"size": "7"}, {"size": 7, "ratio": None}),
        ({"ratio": "0.5"}, {"size": 3, "ratio": 0.5}),
        ({"ratio": None}, {"size": 3, "ratio": None}),
    ],
)
def test_inputs_are_validated_and_converted(
    given: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert validate_inputs(inspect_contract(Good).inputs, given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"size": "seven"}, "input 'size': 'seven' is not a valid int"),
        ({"colour": "red"}, "unknown input 'colour': this routine takes ratio, size"),
        ({"ratio": "[1]"}, "input 'ratio'"),
    ],
)
def test_bad_inputs_name_the_input(given: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        validate_inputs(inspect_contract(Good).inputs, given)
