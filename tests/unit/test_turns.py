"""Handlers of one key take turns in arrival order; other keys do not wait for them."""

from __future__ import annotations

import asyncio

from mainspring.runtime.turns import KeyedTurns


async def test_one_keys_turns_run_one_after_another_in_arrival_order() -> None:
    turns = KeyedTurns()
    seen: list[str] = []

    async def handle(key: str, name: str, pause: float) -> None:
        async with turns.turn(key):
            seen.append(f"start {name}")
            await asyncio.sleep(pause)
            seen.append(f"end {name}")

    # The first takes longest: without turns the later ones would finish first.
    await asyncio.gather(handle("a", "a1", 0.03), handle("a", "a2", 0.01), handle("a", "a3", 0))

    assert seen == ["start a1", "end a1", "start a2", "end a2", "start a3", "end a3"]
    assert turns.waiting_keys() == 0


async def test_other_keys_run_alongside() -> None:
    turns = KeyedTurns()
    seen: list[str] = []

    async def handle(key: str, pause: float) -> None:
        async with turns.turn(key):
            await asyncio.sleep(pause)
            seen.append(key)

    await asyncio.gather(handle("slow", 0.05), handle("fast", 0))

    assert seen == ["fast", "slow"]


async def test_a_failing_turn_lets_the_next_one_run() -> None:
    turns = KeyedTurns()
    seen: list[str] = []

    async def fail() -> None:
        async with turns.turn("a"):
            await asyncio.sleep(0.01)
            raise RuntimeError("boom")

    async def after() -> None:
        async with turns.turn("a"):
            seen.append("after")

    results = await asyncio.gather(fail(), after(), return_exceptions=True)

    assert isinstance(results[0], RuntimeError)
    assert seen == ["after"]


async def test_a_turn_cancelled_while_waiting_keeps_the_order_behind_it() -> None:
    turns = KeyedTurns()
    seen: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        async with turns.turn("a"):
            await release.wait()
            seen.append("first")

    async def second() -> None:
        async with turns.turn("a"):
            seen.append("second")

    async def third() -> None:
        async with turns.turn("a"):
            seen.append("third")

    one = asyncio.create_task(first())
    two = asyncio.create_task(second())
    three = asyncio.create_task(third())
    await asyncio.sleep(0.01)
    two.cancel()
    await asyncio.sleep(0.01)
    assert seen == []  # the third still waits for the first
    release.set()
    await asyncio.gather(one, three)

    assert seen == ["first", "third"]
    assert turns.waiting_keys() == 0


async def test_a_turn_taken_again_inside_itself_does_not_wait_for_itself() -> None:
    turns = KeyedTurns()
    seen: list[str] = []

    async def inner() -> None:
        async with turns.turn("a"):
            seen.append("inner")

    async def outer() -> None:
        async with turns.turn("a"):
            await inner()  # as a test broker delivers a message published by its handler
            seen.append("outer")

    await asyncio.wait_for(outer(), timeout=1)

    assert seen == ["inner", "outer"]
