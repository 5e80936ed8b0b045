"""Hello fired with a schedule tick built in the test."""

from datetime import datetime

from hello import Hello

from mainspring import ScheduleEvent
from mainspring.testing import fire


def test_greets_with_one_progress_step_at_a_time():
    tick = ScheduleEvent.at(datetime(2026, 1, 1, 9, 0))
    result = fire(Hello, event=tick, inputs={"name": "Ada", "steps": 2})
    assert result.outputs == {"greeting": "hello, Ada", "run_number": 1}
    assert result.messages == ["step 1 of 2", "step 2 of 2"]
