"""Re-registering a routine keeps its trigger on or off; entrypoint hints resolve like Mixtrain's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from mainspring.sdk.bundle import BundleError, resolve_entrypoint
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import DisabledBy, RoutineDefinition, carry_trigger_state

NOW = datetime(2026, 11, 28, tzinfo=UTC)
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


class TriggerState(TypedDict, total=False):
    """A stored definition's trigger switch; `old` dates it before NOW."""

    enabled: bool
    disabled_reason: str
    disabled_by: DisabledBy
    old: bool


def definition(version: str = "v1", **state: Unpack[TriggerState]) -> RoutineDefinition:
    old = state.pop("old", False)
    return RoutineDefinition(
        name="nightly",
        version=version,
        entrypoint="routine.py:Nightly",
        class_name="Nightly",
        trigger_param="tick",
        trigger=ScheduleTrigger(every="1h"),
        created_at=EARLIER if old else NOW,
        updated_at=NOW,
        **state,
    )


USER_OFF: TriggerState = {
    "enabled": False,
    "disabled_reason": "maintenance",
    "disabled_by": "user",
    "old": True,
}
CRASH_OFF: TriggerState = {
    "enabled": False,
    "disabled_reason": "crash loop: 5 triggered runs in a row failed to start",
    "disabled_by": "crash_loop",
    "old": True,
}


@pytest.mark.parametrize(
    ("existing", "new_version", "enable", "enabled", "note"),
    [
        (None, "v1", None, True, ""),
        ({"old": True}, "v2", None, True, ""),
        (USER_OFF, "v2", None, False, "stays disabled (maintenance): pass --enable"),
        (USER_OFF, "v1", True, True, "trigger enabled"),
        (CRASH_OFF, "v2", None, True, "re-armed"),
        (CRASH_OFF, "v1", None, False, "stays disabled (crash loop"),
        ({"old": True}, "v1", False, False, "trigger disabled"),
    ],
)
def test_trigger_state_carries_over(
    existing: TriggerState | None,
    new_version: str,
    enable: bool | None,
    enabled: bool,
    note: str,
) -> None:
    before = definition(**existing) if existing is not None else None
    after, said = carry_trigger_state(before, definition(new_version), enable)
    assert after.enabled is enabled
    assert note in said
    assert (after.disabled_by is None) is enabled
    if before is not None:
        assert after.created_at == EARLIER  # an update keeps the routine's creation time


ROUTINE = (
    "from mainspring import Routine, on_schedule\n\n"
    "class {name}(Routine):\n"
    "    def run(self, tick=on_schedule(every='1h')):\n"
    "        return {{}}\n"
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "routines").mkdir()
    (tmp_path / "routines" / "embed.py").write_text(ROUTINE.format(name="EmbedNewRows"))
    (tmp_path / "nightly.py").write_text(
        ROUTINE.format(name="NightlyEval") + "\nclass NotARoutine:\n    pass\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("hint", "resolved"),
    [
        ("NightlyEval", "nightly.py:NightlyEval"),
        ("EmbedNewRows", "routines/embed.py:EmbedNewRows"),
        ("routines/embed.py", "routines/embed.py:EmbedNewRows"),
        ("routines/embed.py:EmbedNewRows", "routines/embed.py:EmbedNewRows"),
    ],
)
def test_entrypoint_hints(folder: Path, hint: str, resolved: str) -> None:
    assert resolve_entrypoint(folder, hint) == resolved


@pytest.mark.parametrize(
    ("hint", "message"),
    [
        (None, "2 Routine classes"),
        ("NotARoutine", "no Routine class 'NotARoutine'"),
        ("missing.py", "entrypoint file missing.py is not in"),
    ],
)
def test_entrypoint_hints_that_do_not_resolve_say_why(
    folder: Path, hint: str | None, message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        resolve_entrypoint(folder, hint)
