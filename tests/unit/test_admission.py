"""The dispatcher's admission decisions for max_concurrent: admit, hold, release."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, ResolvedRunOptions
from mainspring.contract.permissions import subject_matches
from mainspring.runtime.bus import stream_config
from mainspring_services.dispatcher import admission
from mainspring_services.dispatcher.admission import AdmissionState
from tests.messages import a_request

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def request(run_id: str, limit: int | None = 1) -> RequestRun:
    return a_request(
        run_id, routine="serial", requested_at=NOW, options=ResolvedRunOptions(max_concurrent=limit)
    )


def test_only_routines_with_max_concurrent_go_through_admission() -> None:
    assert admission.admits(request("a", limit=2))
    assert not admission.admits(request("a", limit=None))


@pytest.mark.parametrize(
    ("state", "first", "step"),
    [
        (AdmissionState(), True, "admit"),
        (AdmissionState(active={"x": 0}), True, "hold"),
        (AdmissionState(active={"x": 0}, limit=2), True, "hold"),
        # A free slot, but an older run waits: it goes first.
        (AdmissionState(cursor=3, tail=5), True, "hold"),
        # A redelivery may have stored a held copy on its first delivery.
        (AdmissionState(), False, "hold"),
        (AdmissionState(active={"a": 0}), False, "republish"),
        (AdmissionState(active={"a": 7}), True, "republish"),
    ],
)
def test_a_request_is_admitted_held_or_republished(
    state: AdmissionState, first: bool, step: str
) -> None:
    decided, changed = admission.on_request(state, request("a"), first)

    assert decided == step
    if step == "admit":
        assert changed.active == {"a": 0}
    else:
        assert changed == state


def test_two_slots_admit_two_runs() -> None:
    state = AdmissionState(active={"x": 0}, limit=2)

    step, changed = admission.on_request(state, request("a", limit=2), True)

    assert step == "admit"
    assert changed.active == {"x": 0, "a": 0}


def test_a_held_request_waits_noted_while_the_slots_are_taken() -> None:
    state = AdmissionState(active={"x": 0}, cursor=3, tail=4)

    step, changed = admission.after_hold(state, request("a"), 9, None)

    assert step == "wait"
    assert changed == state.model_copy(update={"tail": 9})


def test_a_held_request_that_finds_a_slot_freed_meanwhile_admits_itself_when_oldest() -> None:
    state = AdmissionState(cursor=3, tail=3)

    step, changed = admission.after_hold(state, request("a"), 9, 9)

    assert step == "admit"
    assert changed.active == {"a": 9}
    assert (changed.cursor, changed.tail) == (9, 9)


def test_a_held_request_behind_an_older_one_waits_even_with_a_free_slot() -> None:
    step, changed = admission.after_hold(AdmissionState(cursor=3, tail=3), request("a"), 9, 6)

    assert step == "wait"
    assert changed.tail == 9


def test_a_held_request_released_meanwhile_does_nothing_or_is_republished() -> None:
    released = AdmissionState(active={"b": 11}, cursor=11, tail=11)
    running = AdmissionState(active={"a": 9}, cursor=9, tail=11)

    assert admission.after_hold(released, request("a"), 9, None)[0] == "released"
    assert admission.after_hold(running, request("a"), 9, None)[0] == "republish"


@pytest.mark.parametrize(
    ("state", "wanted"),
    [
        (AdmissionState(active={"x": 0}), 0),
        (AdmissionState(active={"x": 0}, cursor=2, tail=5), 1),
        (AdmissionState(active={"x": 0, "y": 3}, cursor=3, tail=5, limit=3), 2),
        # The limit was lowered meanwhile: the slot freed is not one to fill.
        (AdmissionState(active={"x": 0, "y": 3, "z": 4}, cursor=4, tail=5, limit=2), 0),
        (AdmissionState(active={"y": 0}, cursor=2, tail=5), None),
    ],
)
def test_a_completion_releases_as_many_held_runs_as_it_frees_slots(
    state: AdmissionState, wanted: int | None
) -> None:
    assert admission.slots_to_release(state, "x") == wanted


def test_after_release_the_finished_run_leaves_and_the_released_ones_hold_its_slot() -> None:
    state = AdmissionState(active={"x": 0}, cursor=2, tail=8)

    changed = admission.after_release(state, "x", [("a", 5)], 5)

    assert changed == AdmissionState(active={"a": 5}, cursor=5, tail=8)


def test_a_queue_read_past_what_was_noted_moves_the_tail_too() -> None:
    changed = admission.after_release(AdmissionState(active={"x": 0}), "x", [("a", 4)], 4)

    assert (changed.cursor, changed.tail) == (4, 4)


def test_the_reason_says_the_limit_and_how_many_run() -> None:
    assert admission.queue_reason(1, 1) == "waiting for a free slot: max_concurrent=1, 1 running"


def test_held_requests_are_stored_in_the_stream_setup_declares() -> None:
    held = subjects.run_held_subject("a/b")
    assert held == "run.held.a_2fb"
    stored = stream_config().subjects or []
    assert any(subject_matches(p, held) for p in stored), "run.held.<routine> is stored"


def test_a_cancelled_held_run_is_passed_over_until_the_queue_is_read_past_it() -> None:
    state = AdmissionState(active={"x": 0}, cursor=2, tail=8)

    step, dropped = admission.drop_held(state, "a", 5)

    assert step == "drop"
    assert dropped.dropped == {"a": 5}
    assert admission.after_release(dropped, "x", [("b", 6)], 6).dropped == {}
    assert admission.after_release(dropped, "x", [("c", 3)], 3).dropped == {"a": 5}


def test_a_released_run_is_not_dropped_its_runner_ends_it() -> None:
    active = AdmissionState(active={"a": 5}, cursor=5, tail=8)
    passed = AdmissionState(cursor=6, tail=8)

    assert admission.drop_held(active, "a", 5) == ("runner", active)
    assert admission.drop_held(passed, "a", 5) == ("passed", passed)
