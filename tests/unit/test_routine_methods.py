"""Declared methods: their inputs come from typed defaulted parameters, like run()'s, and
each says whether it may run in memory; `configure` is the instance's constructor."""

from __future__ import annotations

import re

import pytest

from mainspring import Routine, method, on_schedule
from mainspring.sdk.routine import ContractError, inspect_contract, method_specs
from mainspring.testing import call


class Clustering(Routine):
    def configure(self, clusters: int = 3) -> dict[str, int]:
        self.state = {"configured_with": clusters}
        return {"clusters": clusters}

    @method
    def fit(self, values: list[float] | None = None, seed: int = 0) -> dict[str, object]:
        return {"clusters": self.config.get("clusters"), "n": len(values or []), "seed": seed}

    @method(in_memory=True)
    def predict(self, value: float = 0.0) -> dict[str, float]:
        return {"value": value}

    def helper(self) -> None:
        """Not declared: not a method a run can name."""

    def run(self, tick=on_schedule(every="1h")) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return {}


def test_declared_methods_are_found_with_their_inputs_and_permissions() -> None:
    contract = inspect_contract(Clustering)

    assert sorted(contract.methods) == ["configure", "fit", "predict"]
    assert contract.methods["configure"].constructor is True
    assert contract.methods["fit"].constructor is False
    assert {
        k: (s.type, s.default, s.optional) for k, s in contract.methods["fit"].inputs.items()
    } == {
        "values": ("list", None, True),
        "seed": ("int", 0, False),
    }
    assert contract.methods["fit"].in_memory is False
    assert contract.methods["predict"].in_memory is True
    assert method_specs(contract, "run") == contract.inputs
    assert method_specs(contract, "predict")["value"].type == "float"


def test_a_method_no_run_can_name_is_a_contract_error_listing_the_known_ones() -> None:
    with pytest.raises(
        ContractError, match="no method 'helper': it has run, configure, fit, predict"
    ):
        method_specs(inspect_contract(Clustering), "helper")


def _routine_with(body: str) -> type[Routine]:
    namespace: dict[str, object] = {
        "Routine": Routine,
        "method": method,
        "on_schedule": on_schedule,
    }
    source = (
        "class Bad(Routine):\n"
        f"{body}"
        "    def run(self, tick=on_schedule(every='1h')):\n"
        "        return {}\n"
    )
    exec(source, namespace)
    cls = namespace["Bad"]
    assert isinstance(cls, type)
    return cls


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "    @method\n    def fit(self, k=3):\n        return {}\n",
            "parameter 'k' of Bad.fit() has no type",
        ),
        (
            "    @method\n    def fit(self, k: int):\n        return {}\n",
            "parameter 'k' of Bad.fit() has no default",
        ),
        ("    @method\n    def fit(self, **k: int):\n        return {}\n", "Bad.fit() takes *k"),
        (
            "    @method\n    def fit(self, t=on_schedule(every='1h')):\n        return {}\n",
            "only run() is started by triggers",
        ),
        (
            "    @method\n    def setup(self):\n        return None\n",
            "Bad.setup() cannot be a method",
        ),
        (
            "    def configure(self, k: object = None):\n        return {}\n",
            "Bad.configure() has type",
        ),
    ],
)
def test_a_method_breaking_the_contract_is_refused_saying_what_to_change(
    body: str, message: str
) -> None:
    with pytest.raises(ContractError, match=re.escape(message)):
        inspect_contract(_routine_with(body))


def test_a_method_sees_the_configuration_and_a_constructor_sets_state() -> None:
    fitted = call(Clustering, "fit", inputs={"values": [1, 2]}, configuration={"clusters": 4})
    configured = call(Clustering, "configure", inputs={"clusters": "5"})

    assert fitted.outputs == {"clusters": 4, "n": 2, "seed": 0}
    assert configured.outputs == {"clusters": 5}
    assert configured.state == {"configured_with": 5}


def test_call_refuses_run_which_needs_an_event() -> None:
    with pytest.raises(RuntimeError, match="test it with fire"):
        call(Clustering, "run")


class Thresholds(Routine):
    def __init__(self, limit: int = 10, unit: str = "rows") -> None:
        self.limit = limit
        self.unit = unit

    @method(in_memory=True)
    def check(self, value: int = 0) -> dict[str, object]:
        return {"over": value > self.limit, "unit": self.unit}

    def run(self, tick=on_schedule(every="1h")) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return {}


def test_init_parameters_are_the_constructor_when_there_is_no_configure() -> None:
    contract = inspect_contract(Thresholds)

    assert contract.methods["configure"].constructor is True
    assert sorted(contract.methods["configure"].inputs) == ["limit", "unit"]
    built = call(Thresholds, "configure", inputs={"limit": 3}, configuration={"limit": 3})
    checked = call(Thresholds, "check", inputs={"value": 5}, configuration={"limit": 3})
    assert built.outputs == {"limit": 3}
    assert checked.outputs == {"over": True, "unit": "rows"}


def test_an_init_passing_arguments_on_declares_no_configuration() -> None:
    class PassesOn(Routine):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

        def run(self, tick=on_schedule(every="1h")) -> dict[str, str]:  # type: ignore[no-untyped-def]
            return {}

    assert inspect_contract(PassesOn).methods == {}
