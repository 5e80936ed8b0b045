"""`mainspring deadletters ...`: messages the services gave up on, and why."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mainspring.apps.cli.common import CliError, with_client
from mainspring.apps.present import short_time, table


async def deadletters_list(client: Any, args: argparse.Namespace) -> int:
    from mainspring.runtime.deadletters import list_dead_letters

    letters = [letter.summary() for letter in await list_dead_letters(client.js, args.limit)]
    if args.json:
        print(json.dumps(letters, indent=2))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    for row in letters:
        row["parked_at"] = short_time(row["parked_at"])
    print(table(letters, ["sequence", "subject", "parked_at", "deliveries", "reason"]))
    return 0


async def deadletters_show(client: Any, args: argparse.Namespace) -> int:
    from mainspring.runtime.deadletters import DeadLetterError, get_dead_letter

    try:
        letter = await get_dead_letter(client.js, args.sequence)
    except DeadLetterError as exc:
        raise CliError(str(exc)) from None
    shown = {
        **letter.summary(),
        "headers": letter.headers,
        "body": letter.body.decode(errors="replace"),
    }
    print(json.dumps(shown, indent=2))
    return 0


async def deadletters_replay(client: Any, args: argparse.Namespace) -> int:
    from mainspring.runtime.deadletters import (
        DeadLetterError,
        list_dead_letters,
        replay_dead_letter,
    )

    if args.all == bool(args.sequence):
        raise CliError("give dead letter sequences (see `mainspring deadletters list`) or --all")
    sequences = args.sequence or [
        letter.sequence for letter in await list_dead_letters(client.js, limit=args.limit)
    ]
    for sequence in sequences:
        try:
            letter = await replay_dead_letter(client.js, sequence)
        except DeadLetterError as exc:
            raise CliError(str(exc)) from None
        print(f"replayed {sequence} on {letter.original_subject}")
    return 0


async def deadletters_purge(client: Any, args: argparse.Namespace) -> int:
    from mainspring.runtime.deadletters import DeadLetterError, purge_dead_letters

    if args.all == (args.sequence is not None):
        raise CliError("give one dead letter sequence (see `mainspring deadletters list`) or --all")
    try:
        removed = await purge_dead_letters(client.js, args.sequence)
    except DeadLetterError as exc:
        raise CliError(str(exc)) from None
    print(f"removed {removed} dead letter(s)")
    return 0


def add_deadletter_commands(commands: Any) -> None:
    """`mainspring deadletters list|show|replay|purge`."""
    dead = commands.add_parser(
        "deadletters", help="messages no service could handle, with the reason; replay or purge"
    )
    actions = dead.add_subparsers(dest="deadletters_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="dead letters, oldest first, with why")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=with_client(deadletters_list))
    show = actions.add_parser("show", help="one dead letter: reason, original headers and body")
    show.add_argument("sequence", type=int)
    show.set_defaults(func=with_client(deadletters_show))
    replay = actions.add_parser(
        "replay", help="publish dead letters again on their original subject, then remove them"
    )
    replay.add_argument("sequence", type=int, nargs="*")
    replay.add_argument("--all", action="store_true", help="every dead letter (up to --limit)")
    replay.add_argument("--limit", type=int, default=1000)
    replay.set_defaults(func=with_client(deadletters_replay))
    purge = actions.add_parser("purge", help="remove one dead letter, or --all")
    purge.add_argument("sequence", type=int, nargs="?")
    purge.add_argument("--all", action="store_true")
    purge.set_defaults(func=with_client(deadletters_purge))
