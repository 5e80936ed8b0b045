"""What every `mainspring` command shares: the one-line error, flag parsing, a connected client."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from mainspring.apps.present import print_run
from mainspring.base.settings import Settings

EXIT_FAILED = 1


EXIT_USAGE = 2


class CliError(Exception):
    """A one-line error for the user; exit code 2."""


def parse_pairs(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """`k=v` flags into a dict (values stay strings; inputs are validated later)."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} {pair!r} is not key=value: write e.g. {flag} size=10")
        result[key.strip()] = value
    return result


def parse_json_values(pairs: dict[str, Any]) -> dict[str, Any]:
    """Attribute values may be JSON (numbers, lists); anything else stays a string."""
    parsed: dict[str, Any] = {}
    for key, value in pairs.items():
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed


def with_client(
    action: Callable[[Any, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    """Run an async command with a connected client."""

    def command(args: argparse.Namespace) -> int:
        async def go() -> int:
            from mainspring.client import Client

            client = await Client.connect(Settings())
            try:
                return await action(client, args)
            finally:
                await client.close()

        return asyncio.run(go())

    return command


def parse_payload(text: str | None) -> dict[str, Any] | None:
    """`--payload JSON`: the object a poll function would have returned."""
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise CliError(
            f'--payload {text!r} is not a JSON object: write e.g. \'{{"city": "Oslo"}}\''
        )
    return payload


def parse_time(text: str | None, flag: str) -> datetime | None:
    """An ISO time from a flag; without an offset it is local time."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{flag} {text!r} is not an ISO time: write e.g. 2026-11-01 or 2026-11-01T09:00+01:00"
        ) from None
    return value if value.tzinfo else value.astimezone()


def report_finished(run: dict[str, Any], as_json: bool) -> int:
    """Print a finished run (as JSON or as a record); exit 0 only if it completed."""
    if as_json:
        print(json.dumps(run, indent=2))
    else:
        print_run(run)
    return 0 if run["status"] == "completed" else EXIT_FAILED


async def print_or_wait(client: Any, run_id: str, args: argparse.Namespace) -> int:
    """A started run: its id, or with --wait the finished run (exit 0 only if it completed)."""
    if not args.wait:
        print(run_id)
        return 0
    return report_finished(await client.wait(run_id, timeout=args.timeout), args.json)
