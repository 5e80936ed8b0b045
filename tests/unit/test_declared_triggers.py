"""Triggers declared in code (lythonic's register_trigger and TriggerConfig): checked where
they are declared, and turned into named triggers whose poll function a runner can import."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mainspring.compose import Dag, Namespace, TriggerConfig
from mainspring.sdk.bundle import BundleError, import_file
from mainspring.storage.dag_definitions import (
    dag_definitions,
    declared_triggers,
    namespace_registration,
    poll_fn_reference,
)

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def fetch() -> int:
    return 1


def check_queue() -> dict[str, str] | None:
    return None


def namespace_with_dag() -> Namespace:
    ns = Namespace()
    ns.register(fetch, nsref="market:fetch")
    dag = Dag()
    dag.node(ns.get("market:fetch"))
    ns.register(dag, nsref="pipelines:market_summary")
    return ns


def test_register_trigger_declares_what_get_trigger_returns() -> None:
    ns = namespace_with_dag()
    config = ns.register_trigger(
        name="hourly_market",
        dag_nsref="pipelines:market_summary",
        trigger_type="poll",
        schedule="0 * * * *",
    )
    node, found = ns.get_trigger("hourly_market")
    assert (node.nsref, found) == ("pipelines:market_summary", config)
    assert ns.triggers() == {"hourly_market": ("pipelines:market_summary", config)}


def test_trigger_config_on_a_registration_declares_it_too() -> None:
    ns = Namespace()
    ns.register(fetch, nsref="market:fetch")
    dag = Dag()
    dag.node(ns.get("market:fetch"))
    orders = TriggerConfig(name="orders", type="push", payload={"priority": "normal"})
    ns.register(dag, nsref="pipelines:orders", triggers=[orders])
    assert ns.get_trigger("orders")[1] == orders


@pytest.mark.parametrize(
    ("declaration", "error"),
    [
        ({"dag_nsref": "pipelines:nope"}, "'pipelines:nope' is not registered"),
        ({"trigger_type": "cron"}, "type 'cron' is not 'poll' or 'push'"),
        ({"schedule": None}, "a poll trigger needs schedule='CRON'"),
        ({"schedule": "61 * * * *"}, "schedule='61 * * * *' is not a valid cron"),
        ({"schedule": "* * *"}, "has 3 fields"),
        ({"trigger_type": "push"}, "a push trigger fires only when called"),
        ({"poll_fn": lambda: None}, "define it with `def` at module top level"),
        ({"payload": ["a"]}, "payload must be a dict"),
    ],
)
def test_a_bad_declaration_is_refused_in_one_line(declaration: dict[str, Any], error: str) -> None:
    ns = namespace_with_dag()
    arguments: dict[str, Any] = {
        "name": "t",
        "dag_nsref": "pipelines:market_summary",
        "trigger_type": "poll",
        "schedule": "0 * * * *",
        **declaration,
    }
    with pytest.raises((ValueError, KeyError)) as raised:
        ns.register_trigger(**arguments)
    message = str(raised.value)
    assert error in message
    assert "\n" not in message


def test_a_nested_poll_function_and_a_second_declaration_are_refused() -> None:
    ns = namespace_with_dag()

    def nested() -> None:
        return None

    with pytest.raises(ValueError, match="nested function, which a runner cannot import"):
        ns.register_trigger("t", "pipelines:market_summary", schedule="* * * * *", poll_fn=nested)
    ns.register_trigger("t", "pipelines:market_summary", schedule="* * * * *")
    with pytest.raises(ValueError, match="trigger 't' is already declared"):
        ns.register_trigger("t", "pipelines:market_summary", schedule="* * * * *")


def test_a_poll_function_is_named_as_the_bundle_imports_it(tmp_path: Path) -> None:
    assert poll_fn_reference(check_queue, Path(__file__).parent, "q") == (
        "test_declared_triggers:check_queue"
    )
    assert poll_fn_reference(check_queue, Path(__file__).parents[1], "q") == (
        "unit.test_declared_triggers:check_queue"
    )
    with pytest.raises(BundleError, match=r"not defined in a \.py file under"):
        poll_fn_reference(check_queue, tmp_path, "q")


PIPELINE = """
from mainspring.compose import Dag, Namespace


def fetch() -> int:
    return 1


def check_queue() -> dict | None:
    return None


ns = Namespace()
ns.register(fetch, nsref="market:fetch")
dag = Dag()
dag.node(ns.get("market:fetch"))
ns.register(dag, nsref="pipelines:market_summary")
ns.register_trigger(
    name="queue_check",
    dag_nsref="pipelines:market_summary",
    poll_fn=check_queue,
    schedule="*/10 * * * * *",
    payload={"source": "queue"},
)
"""

# A script beside the pipeline that imports its namespace (the embedded tutorial's shape).
SCRIPT = """
from pipeline import ns

if __name__ == "__main__":
    print(ns)
"""


def test_dag_create_of_a_folder_declares_its_triggers_once(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    (tmp_path / "run_it.py").write_text(textwrap.dedent(SCRIPT) + "# Namespace\n")
    registration = dag_definitions(tmp_path, T0)
    assert [d.name for d in registration.definitions] == ["pipelines:market_summary"]
    assert registration.definitions[0].entrypoint == "pipeline.py:ns"
    (trigger,) = registration.triggers
    assert (trigger.name, trigger.target, trigger.type) == (
        "queue_check",
        "pipelines:market_summary",
        "poll",
    )
    assert (trigger.cron, trigger.poll_fn, trigger.payload) == (
        "*/10 * * * * *",
        "pipeline:check_queue",
        {"source": "queue"},
    )
    assert trigger.status == "disabled"


def test_a_live_namespace_is_bundled_from_its_module_file(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    module = import_file(tmp_path, "pipeline.py")
    registration = namespace_registration(module.ns, T0)
    assert registration.folder == tmp_path.resolve()
    assert registration.definitions[0].entrypoint == "pipeline.py:ns"
    assert [t.poll_fn for t in registration.triggers] == ["pipeline:check_queue"]
    assert declared_triggers(Namespace(), tmp_path, T0) == []


def test_a_namespace_not_held_by_a_module_variable_is_refused() -> None:
    def make() -> Namespace:
        return namespace_with_dag()

    with pytest.raises(BundleError, match="not a module-level variable"):
        namespace_registration(make(), T0)
