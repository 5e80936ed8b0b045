"""`routine show --next N`: the coming fire times, marked where DST moves or doubles them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring.apps.cli import build_parser
from mainspring.apps.cli.common import CliError
from mainspring.apps.cli.routines import next_fires_text
from mainspring.sdk.triggers import ScheduleTrigger, on_schedule
from mainspring.storage.registry import RoutineDefinition

DEFINED = datetime(2025, 1, 1, tzinfo=UTC)


def scheduled(trigger: ScheduleTrigger, enabled: bool = True) -> RoutineDefinition:
    return RoutineDefinition(
        name="nightly",
        version="v1",
        entrypoint="routine.py:Nightly",
        class_name="Nightly",
        trigger_param="tick",
        trigger=trigger,
        enabled=enabled,
        created_at=DEFINED,
        updated_at=DEFINED,
    )


def test_show_takes_next() -> None:
    args = build_parser().parse_args(["routine", "show", "nightly", "--next", "5"])
    assert args.next == 5
    assert build_parser().parse_args(["routine", "show", "nightly"]).next == 0


def test_next_marks_the_spring_forward_sunday() -> None:
    # Sundays in March at 02:30 Berlin time: five in a row always reach a last Sunday of
    # March, the night 02:30 does not exist, whatever today is.
    definition = scheduled(on_schedule(cron="30 2 * 3 0", tz="Europe/Berlin"))
    lines = next_fires_text(definition, 5)
    assert len(lines) == 5
    moved = [line for line in lines if "moved by DST: 02:30 does not exist" in line]
    assert moved
    assert all(line.startswith(f"{line[:10]}T03:00:00+02:00") for line in moved)
    for line in lines:
        datetime.fromisoformat(line.split("  [")[0])  # each line starts with the fire time


def test_next_is_empty_for_a_disabled_trigger() -> None:
    definition = scheduled(on_schedule(every="1h"), enabled=False)
    assert next_fires_text(definition, 3) == []


def test_negative_next_names_the_fix() -> None:
    with pytest.raises(CliError, match="--next -1 is negative"):
        next_fires_text(scheduled(on_schedule(every="1h")), -1)
