"""Replay reads every stored message since its start, also when a fetch's wait runs out on a
busy machine (nats-py raises the builtin TimeoutError then, with no message)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from mainspring.client.trigger_replay import _messages_since


class SlowSubscription:
    """A pull subscription whose first fetch times out though two messages wait."""

    def __init__(self) -> None:
        self.pending = [self._message(b"one", 1), self._message(b"two", 0)]
        self.fetches = 0

    @staticmethod
    def _message(data: bytes, after: int) -> Any:
        return SimpleNamespace(data=data, metadata=SimpleNamespace(num_pending=after))

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self.fetches += 1
        if self.fetches == 1:
            raise TimeoutError  # the bare one, as nats-py raises it when its wait ran out
        taken, self.pending = self.pending[:1], self.pending[1:]
        if not taken:
            raise TimeoutError
        return taken

    async def consumer_info(self) -> Any:
        return SimpleNamespace(num_pending=len(self.pending))

    async def unsubscribe(self) -> None:
        return None


class Js:
    def __init__(self, subscription: SlowSubscription) -> None:
        self.subscription = subscription

    async def pull_subscribe(self, *_args: Any, **_kwargs: Any) -> SlowSubscription:
        return self.subscription


async def test_a_fetch_that_times_out_with_messages_pending_reads_on() -> None:
    subscription = SlowSubscription()
    since = datetime(2026, 1, 1, tzinfo=UTC)

    read = [m.data async for m in _messages_since(Js(subscription), "schedule.fired", since)]  # type: ignore[arg-type]

    assert read == [b"one", b"two"]


async def test_a_fetch_that_times_out_with_nothing_pending_ends_the_read() -> None:
    subscription = SlowSubscription()
    subscription.pending = []
    since = datetime(2026, 1, 1, tzinfo=UTC)

    read = [m async for m in _messages_since(Js(subscription), "schedule.fired", since)]  # type: ignore[arg-type]

    assert read == []
