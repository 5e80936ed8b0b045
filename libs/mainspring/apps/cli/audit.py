"""`mainspring audit`: who enabled, disabled, deleted, cancelled or re-ran what, and when."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mainspring.apps.cli.common import with_client
from mainspring.apps.present import short_time, table


async def audit_list(client: Any, args: argparse.Namespace) -> int:
    entries: list[dict[str, Any]] = await client.audit(limit=args.limit, routine=args.routine)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        which = f" for {args.routine}" if args.routine else ""
        print(f"no audit entries{which} yet")
        return 0
    rows = [
        {
            **entry,
            "at": short_time(entry["at"]),
            "target": f"{entry['target_kind']} {entry['target']}",
        }
        for entry in entries
    ]
    print(table(rows, ["at", "who", "action", "target", "reason"]))
    return 0


def add_audit_command(commands: Any) -> None:
    """`mainspring audit [--limit N] [--json] [--routine R]`."""
    audit = commands.add_parser(
        "audit", help="who enabled, disabled, deleted, cancelled or re-ran what, newest first"
    )
    audit.add_argument("--limit", type=int, default=50, help="entries shown at most")
    audit.add_argument("--routine", default=None, help="only the entries about this routine")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=with_client(audit_list))
