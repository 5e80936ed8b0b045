"""Which event loop a service runs on."""

from __future__ import annotations

import pytest
import uvloop

from mainspring.runtime.service import EventLoopConfigError, event_loop_factory


def test_services_run_on_uvloop_unless_asked_for_asyncio() -> None:
    assert event_loop_factory({}) is uvloop.new_event_loop
    assert event_loop_factory({"MAINSPRING_EVENT_LOOP": "asyncio"}) is None
    assert event_loop_factory({"MAINSPRING_EVENT_LOOP": " UVLOOP "}) is uvloop.new_event_loop


def test_an_unknown_event_loop_is_refused_naming_the_choices() -> None:
    with pytest.raises(
        EventLoopConfigError, match=r"trio.*choose uvloop \(the default\) or asyncio"
    ):
        event_loop_factory({"MAINSPRING_EVENT_LOOP": "trio"})
