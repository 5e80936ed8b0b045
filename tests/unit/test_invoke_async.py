"""`async def` routine methods are awaited: their real outputs and failures are recorded."""

from __future__ import annotations

import asyncio
from typing import Any

from mainspring import Routine, ScheduleEvent, on_schedule
from mainspring.runtime.invoke import invoke
from mainspring.sdk.routine import RunInfo


class Context:
    """A RunContext that keeps what the routine reported."""

    def __init__(self) -> None:
        self.progress_seen: list[tuple[float, str]] = []

    def progress(self, fraction: float, message: str) -> None:
        self.progress_seen.append((fraction, message))

    def save_artifact(self, name: str, data: Any) -> str:
        return f"memory://{name}"


class AsyncRoutine(Routine):
    async def setup(self) -> None:
        # Bound to the run's loop: run() and cleanup() must see the same one.
        self.loop = asyncio.get_running_loop()

    async def run(
        self, tick: ScheduleEvent = on_schedule(every="1h"), n: int = 3
    ) -> dict[str, Any]:
        assert asyncio.get_running_loop() is self.loop
        await asyncio.sleep(0.01)
        self.progress(0.5, "half")
        self.state["seen"] = n
        return {"doubled": n * 2}

    async def cleanup(self) -> None:
        assert asyncio.get_running_loop() is self.loop


class AsyncFailure(Routine):
    async def run(self, tick: ScheduleEvent = on_schedule(every="1h")) -> None:
        await asyncio.sleep(0)
        raise ValueError("the async routine broke")


class MixedRoutine(Routine):
    def setup(self) -> None:
        self.ready = True

    async def run(self, tick: ScheduleEvent = on_schedule(every="1h")) -> dict[str, Any]:
        return {"ready": self.ready}


RUN_INFO = RunInfo(id="r1", number=1, routine="r", source="manual", labels=[], attributes={})


def test_an_async_run_returns_its_real_outputs_and_state() -> None:
    context = Context()
    result = invoke(AsyncRoutine, {"tick": None, "n": 4}, context, RUN_INFO, {})
    assert result["status"] == "completed", result
    assert result["outputs"] == {"doubled": 8}
    assert result["state"] == {"seen": 4}
    assert context.progress_seen == [(0.5, "half")]


def test_an_async_failure_is_recorded_failed_with_its_traceback() -> None:
    result = invoke(AsyncFailure, {"tick": None}, Context(), RUN_INFO, {})
    assert result["status"] == "failed"
    assert result["error"] == "ValueError: the async routine broke"
    assert "raise ValueError" in result["traceback"]


def test_sync_setup_with_async_run() -> None:
    result = invoke(MixedRoutine, {"tick": None}, Context(), RUN_INFO, {})
    assert result == {"status": "completed", "outputs": {"ready": True}}
