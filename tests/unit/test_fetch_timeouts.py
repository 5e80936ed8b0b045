"""A batch fetch whose wait ran out raises nats-py's TimeoutError, which FastStream's pull loop
expects, never the bare builtin one nats-py 2.16 raises from its lingering pull."""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from mainspring.runtime.service import fetch_timeouts_as_nats_timeouts


class RunsOut(JetStreamContext.PullSubscription):
    """A pull subscription whose batch fetch runs out of time the way nats-py's can."""

    def __init__(self) -> None:
        self._sub = object()  # type: ignore[assignment]

    async def _fetch_n(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TimeoutError  # the builtin, as `_fetch_n` raises it when the deadline passed


async def test_a_batch_fetch_that_ran_out_raises_nats_timeout() -> None:
    fetch_timeouts_as_nats_timeouts()

    with pytest.raises(NatsTimeoutError):
        await RunsOut().fetch(batch=8, timeout=0.5)
