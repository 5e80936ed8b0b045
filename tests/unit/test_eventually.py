"""`eventually` fails for the right reason: it says why the condition never held."""

from __future__ import annotations

import pytest

from tests.harness import eventually


async def test_a_check_that_keeps_raising_fails_with_its_own_error() -> None:
    async def check() -> bool:
        raise KeyError("run 42 not recorded")

    with pytest.raises(AssertionError, match="KeyError: 'run 42 not recorded'") as failure:
        await eventually(check, timeout=0.3, interval=0.05, what="the run")
    assert isinstance(failure.value.__cause__, KeyError)


async def test_a_falsy_check_fails_with_its_last_value() -> None:
    async def check() -> list[str]:
        return []

    with pytest.raises(AssertionError, match=r"waiting for the runs; last value: \[\]"):
        await eventually(check, timeout=0.3, interval=0.05, what="the runs")


async def test_a_check_that_recovers_returns_its_value() -> None:
    calls = []

    async def check() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ready"

    assert await eventually(check, timeout=5, interval=0.01) == "ready"
