"""The SDK client's audit trail (mixed into `mainspring.client.Client`).

Every call that changes what runs or ran (enable, disable, delete, cancel, rerun, restart,
replay, configure, activate, deactivate) publishes an `AuditRecorded` once it took effect,
naming who did it; the recorder keeps the entries, and `audit()` asks it for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js import JetStreamContext

from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import AUDIT_RUN_IDS, AuditAction, AuditRecorded, AuditTargetKind
from mainspring.contract.queries import AuditQuery
from mainspring.runtime.bus import publish


def login_name() -> str:
    """The operating system's name for whoever runs this process."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return "unknown"


def runs_target(run_ids: Sequence[str]) -> str:
    """How a deletion of several runs names them in one line: the first few ids, then a count."""
    shown = list(run_ids[:5])
    rest = len(run_ids) - len(shown)
    return " ".join(shown) + (f" (+{rest} more)" if rest > 0 else "")


class AuditCalls:
    """Recording the actions this client takes, and reading the audit trail back."""

    js: JetStreamContext
    settings: Settings

    if TYPE_CHECKING:
        # Provided by Client, which this class is mixed into.
        async def _request(
            self, subject: str, payload: dict[str, Any], timeout: float = 5.0
        ) -> dict[str, Any]: ...

    def actor(self) -> str:
        """Who this client acts for: the configured user, else the login name."""
        return self.settings.user or login_name()

    async def record_action(
        self,
        action: AuditAction,
        target_kind: AuditTargetKind,
        target: str,
        *,
        routine: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Publish the audit entry of an action that took effect (the recorder keeps it)."""
        entry = AuditRecorded(
            entry_id=str(uuid.uuid4()),
            who=self.actor(),
            action=action,
            target_kind=target_kind,
            target=target,
            routine=routine,
            run_id=run_id,
            reason=reason,
            details=details or {},
            at=datetime.now(UTC),
        )
        await publish(self.js, entry, subjects.AUDIT_RECORDED)

    async def record_runs_deleted(
        self, reply: dict[str, Any], routine: str | None, filters: dict[str, Any]
    ) -> None:
        """The audit entry of a `runs delete` that deleted something (a dry run changes nothing)."""
        deleted: list[str] = reply.get("deleted") or []
        if reply.get("dry_run") or not deleted:
            return
        single = deleted[0] if len(deleted) == 1 and routine is None else None
        await self.record_action(
            "runs.delete",
            "run" if single else ("routine" if routine else "runs"),
            single or routine or runs_target(deleted),
            routine=routine,
            run_id=single,
            details={
                "deleted_count": reply.get("deleted_count", len(deleted)),
                "deleted": deleted[:AUDIT_RUN_IDS],
                **{key: value for key, value in filters.items() if value is not None},
            },
        )

    async def audit(self, limit: int = 50, routine: str | None = None) -> list[dict[str, Any]]:
        """The latest audit entries, newest first: `who`, `action`, `target_kind`, `target`,
        `routine`, `run_id`, `reason`, `details`, `at` (UTC ISO); one routine's if given."""
        query = AuditQuery(limit=limit, routine=routine)
        entries: list[dict[str, Any]] = (
            await self._request(subjects.API_AUDIT_LIST, query.model_dump())
        )["entries"]
        return entries
