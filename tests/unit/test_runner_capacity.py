"""The runner capacity registry: its entry, the live copy, and the decisions made from it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from mainspring.apps.present import print_runners
from mainspring.apps.status import runner_rows, runner_status
from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, ResolvedRunOptions
from mainspring.runtime.bus import requirements
from mainspring.runtime.metrics import refusal_reason
from mainspring.storage.capacity import CapacityCatalog, RunnerCapacity, runner_key
from mainspring_services.dispatcher import core as dispatch_core
from mainspring_services.runner import core as runner_core
from tests.messages import a_request

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
MIB = 2**20


def entry(
    instance: str = "runner@h:1", total_mib: int = 1024, available_mib: int = 512
) -> RunnerCapacity:
    return RunnerCapacity(
        instance=instance,
        host=f"host-{instance}",
        version="1.2.3",
        started_at=NOW,
        refreshed_at=NOW,
        slots=4,
        busy=1,
        memory_total=total_mib * MIB,
        memory_available=available_mib * MIB,
        isolation=["worker", "process"],
    )


def request(memory_mib: int | None, **changes: object) -> RequestRun:
    return a_request(
        "r-1",
        routine="train",
        run_number=0,
        source="trigger",
        trigger_kind="completion",
        requested_at=NOW,
        options=ResolvedRunOptions(memory_limit=None if memory_mib is None else memory_mib * MIB),
        **changes,
    )


# --- the entry ---------------------------------------------------------------------------


def test_an_entry_round_trips_and_checks_itself() -> None:
    written = entry()

    assert RunnerCapacity.model_validate_json(written.model_dump_json()) == written
    with pytest.raises(ValidationError):
        RunnerCapacity.model_validate({**written.model_dump(), "slots": 0})
    with pytest.raises(ValidationError):
        RunnerCapacity.model_validate({**written.model_dump(), "isolation": ["container"]})


def test_a_runners_key_is_one_token_however_its_instance_is_named() -> None:
    assert runner_key("runner@host.example:42") == "runner.runner_40host_2eexample_3a42"
    assert runner_key("a/b") != runner_key("a_b")


# --- the live copy -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_copy_forgets_an_entry_not_rewritten_within_the_ttl_and_a_deleted_one() -> None:
    clock = Clock()
    catalog = CapacityCatalog(ttl_s=15.0, clock=clock)
    catalog.note("runner.a", entry("a"))
    catalog.note("runner.b", entry("b"))
    clock.now += 10
    catalog.note("runner.b", entry("b"))  # b refreshed; a not
    clock.now += 6

    assert [r.instance for r in catalog.live()] == ["b"]
    catalog.note("runner.b", None)
    assert catalog.live() == []


class Feed:
    def __init__(self, *changes: tuple[str, RunnerCapacity | None] | None) -> None:
        self.changes = changes

    async def watch(self) -> AsyncIterator[tuple[str, RunnerCapacity | None] | None]:
        for change in self.changes:
            yield change


async def test_the_copy_starts_with_the_current_entries_in() -> None:
    catalog = CapacityCatalog(ttl_s=15.0)
    await catalog.start(Feed(("runner.a", entry("a")), ("runner.b", entry("b")), None))
    try:
        assert [r.instance for r in catalog.live()] == ["a", "b"]
    finally:
        await catalog.stop()


def test_a_catalog_never_started_knows_no_runner() -> None:
    assert CapacityCatalog(ttl_s=15.0).live() == []


# --- refusing at submit ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory_mib", "runners_mib", "refused"),
    [
        (None, [512], False),  # no limit: nothing to check
        (4096, [], False),  # no runner live: it waits for one
        (1024, [512, 1024], False),  # exactly the largest runner's memory fits
        (1025, [512, 1024], True),
        (300, [256, 256], True),
    ],
)
def test_a_run_is_refused_only_when_every_live_runner_is_too_small(
    memory_mib: int | None, runners_mib: list[int], refused: bool
) -> None:
    runners = [entry(f"r{i}", total) for i, total in enumerate(runners_mib)]

    assert (dispatch_core.memory_refusal(request(memory_mib), runners) is not None) is refused


def test_the_refusal_names_the_routine_both_sizes_and_the_fix() -> None:
    runners = [entry("small", 512), entry("large", 2048)]

    assert dispatch_core.memory_refusal(request(3072), runners) == (
        "no runner has that much memory: train asks for 3072 MiB, the largest runner has "
        "2048 MiB; lower the routine's memory or start a runner with more"
    )


def test_a_refused_run_keeps_its_place_in_the_chain_and_the_others_go_ahead() -> None:
    big = request(4096, hop=2, parent_run_id="p-1", chain=["etl:p-1"])
    small = request(100).model_copy(update={"run_id": "r-2"})

    fitting, refused = dispatch_core.split_oversized([big, small], [entry("a", 1024)], NOW)

    assert [r.run_id for r in fitting] == ["r-2"]
    (completed,) = refused
    assert (completed.run_id, completed.status, completed.phase) == ("r-1", "failed", "start")
    assert (completed.hop, completed.parent_run_id, completed.chain) == (2, "p-1", ["etl:p-1"])
    assert completed.source == "trigger"
    assert refusal_reason(completed.error) == "memory"


# --- the runner's hold reason ------------------------------------------------------------------


def test_a_run_that_fits_here_now_is_not_held() -> None:
    assert runner_core.memory_hold_reason(100 * MIB, 200 * MIB, 1000 * MIB, "h", []) is None


def test_a_run_larger_than_this_machine_still_starts_here_as_before() -> None:
    others = [entry("big", 8192, 8000)]

    assert runner_core.memory_hold_reason(2000 * MIB, 200 * MIB, 1000 * MIB, "h", others) is None


def test_without_the_registry_the_hold_says_this_runners_view() -> None:
    reason = runner_core.memory_hold_reason(300 * MIB, 200 * MIB, 1000 * MIB, "h", [])

    assert reason == "waiting for memory: needs 300MiB, 200MiB available on this runner"


def test_when_another_runner_has_enough_now_the_hold_keeps_this_runners_view() -> None:
    others = [entry("roomy", 4096, 1000)]

    reason = runner_core.memory_hold_reason(300 * MIB, 200 * MIB, 1000 * MIB, "h", others)

    assert reason == "waiting for memory: needs 300MiB, 200MiB available on this runner"


@pytest.mark.parametrize(
    ("here_mib", "others_mib", "named"),
    [
        (250, [100, 50], "250 MiB on here-host"),
        (100, [250, 50], "250 MiB on host-o0"),
    ],
)
def test_when_no_runner_has_enough_now_the_hold_names_the_most_available(
    here_mib: int, others_mib: list[int], named: str
) -> None:
    others = [entry(f"o{i}", 4096, free) for i, free in enumerate(others_mib)]

    reason = runner_core.memory_hold_reason(
        300 * MIB, here_mib * MIB, 1000 * MIB, "here-host", others
    )

    assert reason == (
        "no runner has that much memory available now: needs 300 MiB, the most available is "
        + named
    )


# --- declared, and shown -----------------------------------------------------------------------


def test_the_runners_bucket_expires_entries_after_the_setting() -> None:
    settings = Settings(nats_url="nats://unused", runner_capacity_ttl_s=9)
    (bucket,) = [r for r in requirements(settings) if r.stream == f"KV_{subjects.RUNNERS_BUCKET}"]

    assert bucket.settings["max_age"] == 9
    assert bucket.settings["max_msgs_per_subject"] == 1


def test_status_rows_say_busy_slots_memory_and_how_long_ago_each_runner_refreshed() -> None:
    (row,) = runner_rows([entry("a", 2048, 1024)], NOW + timedelta(seconds=3.25))

    assert row["instance"] == "a"
    assert (row["busy"], row["slots"]) == (1, 4)
    assert (row["memory_available"], row["memory_total"]) == (1024 * MIB, 2048 * MIB)
    assert row["refreshed_s"] == 3.2


def test_status_reads_no_runners_where_no_bus_is_configured(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, nats_url=None)

    assert runner_status(settings, NOW, up_running=False) == {}


def test_status_says_in_one_line_when_the_bus_does_not_answer(tmp_path: Path) -> None:
    from mainspring.apps.up import free_port

    settings = Settings(home=tmp_path, nats_url=f"nats://127.0.0.1:{free_port()}")

    found = runner_status(settings, NOW, up_running=False, timeout_s=1)

    assert found["runners"] == []
    assert found["runners_problem"].startswith("runners unknown: ")
    assert "\n" not in found["runners_problem"]


def test_status_prints_one_line_per_runner_and_says_when_none_is_live(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rich.console import Console

    console = Console(highlight=False, width=200)
    print_runners(console, {"runners": runner_rows([entry("a", 2048, 1024)], NOW)})
    print_runners(console, {"runners": []})
    print_runners(console, {"runners": [], "runners_problem": "runners unknown: no bus"})
    out = capsys.readouterr().out

    assert "a" in out
    assert "host-a" in out
    assert "1/4" in out
    assert "1.0GiB of 2.0GiB" in out
    assert "none live" in out
    assert "runners unknown: no bus" in out


def test_setup_lowering_a_buckets_ttl_cuts_its_duplicate_window_to_fit() -> None:
    from nats.js.api import StreamConfig

    from mainspring.runtime.bus import corrected

    declared = StreamConfig(name="KV_runners", max_age=15.0, duplicate_window=15.0)

    assert corrected(declared, {"max_age": 6.0}).duplicate_window == 6.0
    assert corrected(declared, {"max_age": 30.0}).duplicate_window == 15.0
    unbounded = StreamConfig(name="KV_dispatch", max_age=0.0, duplicate_window=120.0)
    assert corrected(unbounded, {"max_bytes": 2**20}).duplicate_window == 120.0
