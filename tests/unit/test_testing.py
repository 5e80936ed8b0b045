"""mainspring.testing: a routine fired in the test's process behaves as it would on a runner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mainspring import (
    CompletionEvent,
    ContractError,
    DatasetEvent,
    PollEvent,
    Routine,
    RoutineInvocationError,
    ScheduleEvent,
    on_dataset_append,
    on_poll,
    on_schedule,
    on_workflow_success,
)
from mainspring.client import definition_from_folder
from mainspring.sdk.bundle import import_entrypoint
from mainspring.sdk.routine import InputError
from mainspring.storage.state import MAX_STATE_BYTES
from mainspring.testing import Progress, fire
from tests.harness import write_routine


class CountRows(Routine):
    def run(
        self, rows: DatasetEvent = on_dataset_append("photos"), batch_size: int = 2
    ) -> dict[str, Any]:
        sizes = [batch.num_rows for batch in rows]
        self.progress(1.0, f"{rows.added_records} rows from {rows.dataset}")
        self.save_artifact("ids", pa.table({"id": [i * 10 for i in range(rows.added_records)]}))
        return {"sizes": sizes, "versions": [rows.from_version, rows.to_version]}


class AsyncCounter(Routine):
    async def setup(self) -> None:
        self.step = 1

    async def run(self, tick: ScheduleEvent = on_schedule(every="1h")) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.state["count"] = self.state.get("count", 0) + self.step
        return {"at": tick.scheduled_at.isoformat()}


class Downstream(Routine):
    def run(self, done: CompletionEvent = on_workflow_success("embed")) -> dict[str, Any]:
        return {
            "upstream": done.outputs["embedded"],
            "hop": self.run_info.hop,
            "parent": self.run_info.parent_run_id,
        }


def weather() -> dict[str, Any] | None:
    return {"city": "Oslo"}


class Polled(Routine):
    def run(
        self, event: PollEvent = on_poll(weather, every="1m"), city: str = "", days: int = 1
    ) -> dict[str, Any]:
        return {"city": city, "days": days, "payload": event.payload}


class Broken(Routine):
    def run(self, tick: ScheduleEvent = on_schedule(every="1h")) -> None:
        self.state["kept"] = False
        raise ValueError("no forecast today")


class Hoarder(Routine):
    def run(self, tick: ScheduleEvent = on_schedule(every="1h")) -> None:
        self.state["blob"] = "x" * MAX_STATE_BYTES


def test_a_dataset_event_is_read_in_the_routines_batches_with_artifacts_read_back() -> None:
    event = DatasetEvent.from_table(pa.table({"id": [1, 2, 3, 4, 5]}), from_version=3)
    result = fire(CountRows, event=event)
    assert result.status == "completed", result.error
    assert result.outputs == {"sizes": [2, 2, 1], "versions": [3, 4]}
    assert result.progress == [Progress(1.0, "5 rows from photos")]
    assert result.artifacts["ids"].column("id").to_pylist() == [0, 10, 20, 30, 40]


def test_inputs_and_configuration_are_validated_and_applied() -> None:
    event = DatasetEvent.from_table([pa.record_batch({"id": [1, 2, 3]})], 0, 2)
    assert fire(CountRows, event=event, config={"batch_size": "3"}).outputs["sizes"] == [3]
    assert fire(CountRows, event=event, config={"batch_size": 3}, inputs={"batch_size": 1}).outputs[
        "sizes"
    ] == [1, 1, 1]
    with pytest.raises(InputError, match="input 'batch_size'"):
        fire(CountRows, event=event, inputs={"batch_size": "many"})


def test_an_async_routine_runs_and_returns_its_new_state() -> None:
    result = fire(
        AsyncCounter, event=ScheduleEvent.at(datetime(2026, 3, 1, 9, 0)), state={"count": 41}
    )
    assert result.outputs == {"at": "2026-03-01T09:00:00+00:00"}
    assert result.state == {"count": 42}


async def test_fire_works_from_an_async_test() -> None:
    assert (await asyncio.to_thread(fire, AsyncCounter)).state == {"count": 1}
    assert fire(AsyncCounter).state == {"count": 1}


def test_a_completion_run_is_one_hop_past_its_upstream_run() -> None:
    upstream = CompletionEvent.of("embed", outputs={"embedded": 7}, run_id="up-1")
    result = fire(Downstream, event=upstream)
    assert result.outputs == {"upstream": 7, "hop": 1, "parent": "up-1"}


def test_a_poll_payload_fills_the_inputs_it_names_and_given_inputs_win() -> None:
    result = fire(
        Polled, event=PollEvent.with_payload({"city": "Oslo", "x": 1}), inputs={"days": 3}
    )
    assert result.outputs == {"city": "Oslo", "days": 3, "payload": {"city": "Oslo", "x": 1}}
    assert fire(Polled).outputs["payload"] == {}


def test_a_failing_run_reports_its_error_and_keeps_the_old_state() -> None:
    result = fire(Broken, state={"kept": True})
    assert result.status == "failed"
    assert result.error == "ValueError: no forecast today"
    assert result.traceback is not None
    assert result.state == {"kept": True}


def test_a_state_past_the_budget_fails_the_run_as_a_runner_would() -> None:
    result = fire(Hoarder)
    assert result.status == "failed"
    assert "keep self.state small" in (result.error or "")
    assert result.state == {}


def test_a_broken_contract_fails_with_the_registration_error(tmp_path: Path) -> None:
    folder = write_routine(
        tmp_path / "r",
        "from mainspring import Routine, on_schedule\n\n"
        "class NoDefault(Routine):\n"
        "    def run(self, tick=on_schedule(every='1m'), size=1):\n"
        "        return None\n",
    )
    with pytest.raises(ContractError) as registering:
        definition_from_folder(folder, "r", None, {}, datetime.now(UTC))
    cls = import_entrypoint(folder, "routine.py:NoDefault")
    with pytest.raises(ContractError) as firing:
        fire(cls)
    assert str(firing.value) == str(registering.value)
    assert "\n" not in str(firing.value)


@pytest.mark.parametrize(
    ("routine", "event", "message"),
    [
        (CountRows, None, "needs an event for 'rows': pass event=DatasetEvent.from_table"),
        (CountRows, ScheduleEvent.at(datetime(2026, 1, 1)), "gets a DatasetEvent for 'rows'"),
        (
            CountRows,
            DatasetEvent.from_table(pa.table({"id": [1]}), dataset="videos"),
            "fires on appends to 'photos', not 'videos'",
        ),
        (
            Downstream,
            CompletionEvent.of("embed", status="failed"),
            "never on a failed run of 'embed'",
        ),
        (Downstream, CompletionEvent.of("other"), "never on a completed run of 'other'"),
    ],
)
def test_an_event_the_trigger_never_delivers_is_refused(
    routine: type[Routine], event: Any, message: str
) -> None:
    with pytest.raises(RoutineInvocationError, match=message):
        fire(routine, event=event)


def test_event_builders_give_what_a_fired_trigger_gives() -> None:
    tick = ScheduleEvent.at(datetime(2026, 1, 1, 9, 0))
    assert tick.scheduled_at == tick.fired_at == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    done = CompletionEvent.of("embed", outputs={"n": 1}, status="failed", run_number=4)
    assert (done.routine, done.status, done.run_number, done.outputs) == (
        "embed",
        "failed",
        4,
        {"n": 1},
    )
    rows = DatasetEvent.from_table(pa.table({"id": list(range(5))}), batch_size=2)
    assert (rows.from_version, rows.to_version, rows.added_records) == (0, 1, 5)
    assert [b.num_rows for b in rows] == [2, 2, 1]
    assert [b.num_rows for b in rows.added_rows()] == [2, 2, 1]
    with pytest.raises(ValueError, match="must be below to_version"):
        DatasetEvent.from_table(pa.table({"id": [1]}), from_version=2, to_version=2)


class Greedy(Routine):
    memory = "lots"

    def run(self, tick: ScheduleEvent = on_schedule(every="1h")) -> None:
        return None


def test_an_option_registration_refuses_is_refused() -> None:
    with pytest.raises(ValueError, match="memory 'lots' is not a size"):
        fire(Greedy)
