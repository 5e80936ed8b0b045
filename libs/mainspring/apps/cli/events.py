"""`mainspring publish`: report an event from outside (a workflow's completion) on the bus."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mainspring.apps.cli.common import CliError, with_client
from mainspring.contract import subjects


async def publish_event(client: Any, args: argparse.Namespace) -> int:
    if subjects.is_run_completed(args.subject) or args.subject == subjects.RUN_COMPLETED:
        raise CliError(
            f"{args.subject} is reserved for routines' runs: report a workflow outside Mainspring "
            f"on {subjects.EXTERNAL_COMPLETED}.<workflow>.<status>"
        )
    body = args.json_body.encode()
    try:
        json.loads(body)
    except ValueError as exc:
        raise CliError(
            f'JSON body is not valid JSON ({exc}): quote it, e.g. \'{{"dataset": "photos"}}\''
        ) from None
    await client.publish(args.subject, body, args.msg_id)
    print(f"published on {args.subject}")
    return 0


def add_publish_command(commands: Any) -> None:
    """`publish`: an outside event onto the bus."""
    publish = commands.add_parser(
        "publish",
        help="publish an external event: dataset.appended or external.completed.<workflow>.<status>",
    )
    publish.add_argument("subject")
    publish.add_argument("json_body", metavar="JSON")
    publish.add_argument("--msg-id", default=None, help="Nats-Msg-Id for deduplication")
    publish.set_defaults(func=with_client(publish_event))
