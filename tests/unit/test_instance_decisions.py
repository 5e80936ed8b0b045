"""Instances and methods in the pure parts: which method a request runs with what, refusals
naming the fix, blueprint versions, configurations, and the recorder's run row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mainspring.client.instances import check_registration, configuration
from mainspring.contract.messages import RunOptions, SubmitRun
from mainspring.sdk.routine import InputError
from mainspring.sdk.triggers import DatasetAppendTrigger
from mainspring.storage.blueprints import (
    Blueprint,
    BlueprintVersion,
    instance_from_version,
    with_version,
)
from mainspring.storage.registry import (
    InputSchema,
    MethodSchema,
    RegistryError,
    RoutineDefinition,
    RoutineOptions,
)
from mainspring_services.dispatcher import manual
from mainspring_services.recorder.core import changes_for_requested

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _instance(name: str = "segments", version: str = "v1", **fields: object) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version=version,
        entrypoint="routine.py:KMeans",
        class_name="KMeans",
        trigger_param="rows",
        # A dataset trigger: run() by hand needs a cursor, other methods need no event at all.
        trigger=DatasetAppendTrigger(dataset="customers"),
        inputs={"batch_size": InputSchema(type="int", default=100)},
        methods={
            "configure": MethodSchema(
                inputs={
                    "clusters": InputSchema(type="int", default=3),
                    "seed": InputSchema(type="int", default=0),
                },
                constructor=True,
            ),
            "fit": MethodSchema(inputs={"rounds": InputSchema(type="int", default=10)}),
            "predict": MethodSchema(
                inputs={"value": InputSchema(type="float", default=0.0)}, in_memory=True
            ),
        },
        routine="kmeans",
        config={"clusters": 4, "seed": 0},
        options=RoutineOptions(allow_in_memory=False),
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def _submit(method: str, execution: str = "background", **inputs: object) -> SubmitRun:
    return SubmitRun(
        request_id="r1",
        routine="segments",
        inputs=inputs,
        method=method,
        options=RunOptions(execution=execution),
    )


def test_a_method_run_carries_its_method_routine_and_configuration_and_no_event() -> None:
    [request] = manual.decide_manual(_instance(), _submit("fit", rounds="5"), NOW).requests

    assert (request.method, request.routine, request.blueprint) == ("fit", "segments", "kmeans")
    assert request.inputs == {"rounds": 5}
    assert request.configuration == {"clusters": 4, "seed": 0}
    assert (request.trigger_kind, request.event) == ("manual", {})


def test_run_by_hand_still_needs_its_trigger_event() -> None:
    decision = manual.decide_manual(_instance(), _submit("run"), NOW)

    [refused] = decision.refused
    assert "--from-version" in (refused.error or "")


@pytest.mark.parametrize(
    ("submitted", "fix"),
    [
        (
            _submit("train"),
            "routine kmeans has no method 'train': instance segments can run run, configure, "
            "fit, predict",
        ),
        (_submit("fit", rounds="many"), "input 'rounds'"),
        (_submit("fit", clusters=3), "unknown input 'clusters'"),
    ],
)
def test_a_bad_method_run_is_refused_naming_the_fix(submitted: SubmitRun, fix: str) -> None:
    decision = manual.decide_manual(_instance(), submitted, NOW)

    assert not decision.requests
    [refused] = decision.refused
    assert fix in (refused.error or "")


def test_each_method_decides_for_itself_whether_it_may_run_in_memory() -> None:
    allowed = manual.decide_in_memory(_instance(), _submit("predict", "in_memory"), NOW)
    refused = manual.decide_in_memory(_instance(), _submit("fit", "in_memory"), NOW)
    run_refused = manual.decide_in_memory(_instance(), _submit("run", "in_memory"), NOW)

    assert [r.method for r in allowed.requests] == ["predict"]
    assert "method fit of routine kmeans does not allow in-memory runs" in (
        refused.refused[0].error or ""
    )
    assert "@method(in_memory=True)" in (refused.refused[0].error or "")
    assert "allow_in_memory = True" in (run_refused.refused[0].error or "")


def test_the_recorder_keeps_routine_instance_method_and_configuration() -> None:
    [request] = manual.decide_manual(_instance(), _submit("fit"), NOW).requests

    changes = changes_for_requested(request)

    assert (changes["blueprint"], changes["instance"], changes["method"]) == (
        "kmeans",
        "segments",
        "fit",
    )
    assert changes["routine_version"] == "v1"
    assert changes["configuration"] == {"clusters": 4, "seed": 0}


def test_an_entry_written_before_instances_is_its_own_routine() -> None:
    old = _instance().model_copy(update={"routine": "", "name": "embed"})
    assert old.blueprint == "embed"


def test_a_configuration_is_given_values_over_the_current_ones_validated() -> None:
    instance = _instance()

    assert configuration(instance, {"clusters": "6"}, instance.config) == {"clusters": 6, "seed": 0}
    # A value the constructor no longer takes is dropped, not an error.
    assert configuration(instance, {}, {"clusters": 2, "gone": 1}) == {"clusters": 2, "seed": 0}
    with pytest.raises(InputError, match="configuration of segments: input 'clusters'"):
        configuration(instance, {"clusters": "many"})
    with pytest.raises(InputError, match="unknown input 'k'"):
        configuration(instance, {"k": 1})
    plain = instance.model_copy(update={"methods": {}})
    with pytest.raises(RegistryError, match="has no constructor"):
        configuration(plain, {"clusters": 1})


def test_registering_code_never_takes_over_another_routines_instance() -> None:
    check_registration(None, "kmeans")
    check_registration(_instance(name="kmeans"), "kmeans")
    with pytest.raises(RegistryError, match="'segments' is an instance of routine kmeans"):
        check_registration(_instance(), "segments")


def _version(digest: str, minutes: int = 0) -> BlueprintVersion:
    return BlueprintVersion(
        digest=digest,
        registered_at=NOW + timedelta(minutes=minutes),
        template=_instance(name="kmeans", version=digest),
    )


def test_each_new_code_is_a_version_and_the_same_code_again_is_not() -> None:
    first = with_version(None, "kmeans", _version("aaa111"))
    again = with_version(first, "kmeans", _version("aaa111", minutes=5))
    second = with_version(again, "kmeans", _version("bbb222", minutes=9))
    back = with_version(second, "kmeans", _version("aaa111", minutes=12))

    assert [v.digest for v in again.versions] == ["aaa111"]
    assert again.versions[0].registered_at == NOW
    assert [v.digest for v in second.versions] == ["aaa111", "bbb222"]
    # Code registered again after other code is the latest once more, listed once.
    assert [v.digest for v in back.versions] == ["bbb222", "aaa111"]
    assert back.latest().digest == "aaa111"


def test_a_version_is_picked_by_digest_prefix_or_the_error_lists_them() -> None:
    blueprint = Blueprint(name="kmeans", versions=[_version("aaa111"), _version("aab222")])

    assert blueprint.version("aaa").digest == "aaa111"
    with pytest.raises(RegistryError, match="'aa' matches several versions of routine kmeans"):
        blueprint.version("aa")
    with pytest.raises(RegistryError, match=r"'zz' is not a version .* pick one of aab222, aaa111"):
        blueprint.version("zz")


def test_an_instance_built_from_a_version_keeps_its_own_fields() -> None:
    existing = _instance(name="segments").model_copy(
        update={"enabled": False, "disabled_by": "user", "created_at": NOW - timedelta(days=1)}
    )

    built = instance_from_version(
        _version("bbb222"),
        blueprint="kmeans",
        instance="segments",
        follow_latest=True,
        config={"clusters": 4},
        defaults={"batch_size": 50},
        existing=existing,
        now=NOW,
    )

    assert (built.name, built.blueprint, built.version) == ("segments", "kmeans", "bbb222")
    assert (built.enabled, built.disabled_by) == (False, "user")
    assert built.created_at == NOW - timedelta(days=1)
    assert (built.config, built.defaults) == ({"clusters": 4}, {"batch_size": 50})
