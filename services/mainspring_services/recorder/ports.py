"""What the recorder needs besides its database, as Protocols (fakes in the contract tests)."""

from __future__ import annotations

from typing import Protocol

from mainspring.contract.messages import RunCompleted


class OutcomeLedger(Protocol):
    """The run ledger's cancel marks and first-writer-wins outcomes (for the stale-run sweep)."""

    async def mark_cancelled(self, run_id: str, by: str) -> None: ...

    async def settle(self, completed: RunCompleted) -> RunCompleted: ...
