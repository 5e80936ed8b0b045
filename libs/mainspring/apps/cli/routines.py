"""`mainspring routine ...`: register, list, show, enable, disable and delete routines."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mainspring.apps.cli.common import CliError, parse_pairs, with_client
from mainspring.apps.present import describe_trigger, next_fire_text, short_time, table
from mainspring.contract import subjects


async def routine_create(client: Any, args: argparse.Namespace) -> int:
    import warnings

    with warnings.catch_warnings(record=True) as doubts:
        warnings.simplefilter("always")
        definition = await client.create_routine(
            Path(args.dir),
            args.name,
            args.entrypoint,
            parse_pairs(args.set, "--set"),
            enable=True if args.enable else None,
        )
    for doubt in doubts:
        # One line each, not Python's file:line report: the author acts on the message.
        print(f"warning: {doubt.message}", file=sys.stderr)
    print(
        f"routine {definition.name} registered: {definition.entrypoint}, version "
        f"{definition.version[:12]}, trigger {describe_trigger(definition.trigger)}"
    )
    if client.last_registration_note:
        print(f"routine {definition.name}: {client.last_registration_note}")
    return 0


async def routine_list(client: Any, args: argparse.Namespace) -> int:
    # Instances grouped under their routine (blueprint).
    routines = sorted(await (await client.store()).list(), key=lambda d: (d.blueprint, d.name))
    rows = [
        {
            "routine": d.blueprint,
            "name": d.name,
            "trigger": describe_trigger(d.trigger),
            "enabled": "yes" if d.enabled else "no",
            "version": d.version[:12],
            "entrypoint": d.entrypoint,
        }
        for d in routines
    ]
    if args.json:
        print(json.dumps([json.loads(d.model_dump_json()) for d in routines], indent=2))
    elif rows:
        print(table(rows, ["routine", "name", "trigger", "enabled", "version", "entrypoint"]))
    else:
        print("no routines: register one with `mainspring routine create DIR --name NAME`")
    return 0


async def routine_show(client: Any, args: argparse.Namespace) -> int:
    from mainspring.contract.queries import RunQuery

    definition = await (await client.store()).find(args.name)
    if definition is None:
        # A routine whose instance of the same name was deleted still has versions and
        # maybe other instances; anything else is the registry's error naming the fix.
        summary = await routine_versions_and_instances(client, args.name)
        if not summary["versions"]:
            await (await client.store()).get(args.name)
        print(json.dumps({"routine": args.name, **summary}, indent=2))
        return 0
    data = json.loads(definition.model_dump_json())
    latest = await client.list_runs(RunQuery(routine=args.name, limit=1))
    data["last_run_id"] = latest[0]["id"] if latest else None
    data["last_run_at"] = latest[0]["created_at"] if latest else None
    data["next_fire_at"] = next_fire_text(definition)
    if args.next:
        data["next_fires"] = next_fires_text(definition, args.next)
    if definition.trigger.kind == "dataset":
        data["dataset_cursor"] = await dataset_cursor(client, args.name)
    data.update(await routine_versions_and_instances(client, definition.blueprint))
    print(json.dumps(data, indent=2))
    if not definition.enabled:
        print(
            f"trigger disabled: {definition.disabled_reason or 'by user'}",
            file=sys.stderr,
        )
    return 0


async def routine_versions_and_instances(client: Any, routine: str) -> dict[str, Any]:
    """The routine's versions (newest first) and its instances, for `routine show`."""
    from mainspring.client.instances import blueprints, summarise

    blueprint = await (await blueprints(client)).find(routine)
    summary = summarise(blueprint, routine, await (await client.store()).list())
    return {"versions": summary.versions, "instances": summary.model_dump()["instances"]}


async def dataset_cursor(client: Any, routine: str) -> dict[str, Any] | None:
    """Where a dataset routine last fired and what is pending since."""
    from mainspring.storage.cursors import load_cursor

    cursor, _ = await load_cursor(await client.js.key_value(subjects.DISPATCH_BUCKET), routine)
    return cursor.model_dump() if cursor else None


def next_fires_text(definition: Any, count: int) -> list[str]:
    """The next `count` fire times in the trigger's tz, each marked when DST moves or doubles it."""
    from zoneinfo import ZoneInfo

    from mainspring.base.schedules import upcoming_fires
    from mainspring.sdk.triggers import TimedSpec

    if count < 0:
        raise CliError(
            f"--next {count} is negative: give how many fire times to list, e.g. --next 5"
        )
    trigger = definition.trigger
    if not isinstance(trigger, TimedSpec) or not definition.enabled:
        return []
    fires = upcoming_fires(
        trigger.cron,
        trigger.every,
        trigger.tz,
        datetime.now(UTC),
        count,
        trigger.dst_repeat,
        trigger.offset,
    )
    zone = ZoneInfo(trigger.tz)
    return [
        f"{fire.astimezone(zone).isoformat()}" + (f"  [{note}]" if note else "")
        for fire, note in fires
    ]


async def routine_enable(client: Any, args: argparse.Namespace) -> int:
    following = await client.set_routine_enabled(args.name, True, None)
    print(f"routine {args.name} enabled" + (f" with {following} trigger(s)" if following else ""))
    return 0


async def routine_disable(client: Any, args: argparse.Namespace) -> int:
    following = await client.set_routine_enabled(args.name, False, args.reason)
    print(f"routine {args.name} disabled" + (f" with {following} trigger(s)" if following else ""))
    return 0


async def routine_delete(client: Any, args: argparse.Namespace) -> int:
    await client.delete_routine(args.name)
    print(f"routine {args.name} deleted")
    return 0


async def routine_events(client: Any, args: argparse.Namespace) -> int:
    await (await client.store()).get(args.name)
    events = await client.trigger_events(args.name, args.limit)
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    for event in events:
        event["fired_at"] = short_time(event["fired_at"])
        event["scheduled_at"] = short_time(event["scheduled_at"])
    print(
        table(events, ["fired_at", "scheduled_at", "kind", "status", "run_id", "reason"])
        if events
        else f"no trigger events for {args.name} yet"
    )
    return 0


def add_routine_commands(commands: Any) -> None:
    """`routine create | list | show | enable | disable | delete | events`."""
    routine = commands.add_parser("routine", help="register and manage routines")
    routines = routine.add_subparsers(dest="routine_command", metavar="ACTION", required=True)
    create = routines.add_parser("create", help="validate, bundle and register a routine folder")
    create.add_argument("dir", help="folder holding the routine's .py files")
    create.add_argument("--name", required=True, help="routine name")
    create.add_argument(
        "--entrypoint",
        help="path.py:Class, path.py or Class (default: the folder's only Routine class)",
    )
    create.add_argument("--set", action="append", metavar="K=V", help="default for a run() input")
    create.add_argument(
        "--enable",
        action="store_true",
        help="turn the trigger on even if the routine was disabled (an update keeps its state)",
    )
    create.set_defaults(func=with_client(routine_create))
    listing = routines.add_parser("list", help="registered routines")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=with_client(routine_list))
    for action, handler, text in (
        ("show", routine_show, "a routine's definition, last run and next fire time"),
        ("enable", routine_enable, "activate a routine's trigger (re-arms a crash-looped one)"),
        ("delete", routine_delete, "remove a routine"),
    ):
        sub = routines.add_parser(action, help=text)
        sub.add_argument("name")
        if action == "show":
            sub.add_argument(
                "--next",
                type=int,
                default=0,
                metavar="N",
                help="also list the next N fire times, marking those DST moves or doubles",
            )
        sub.set_defaults(func=with_client(handler))
    disable = routines.add_parser(
        "disable", help="deactivate a routine's trigger, keeping its definition"
    )
    disable.add_argument("name")
    disable.add_argument("--reason", default=None)
    disable.set_defaults(func=with_client(routine_disable))
    events = routines.add_parser(
        "events", help="a routine's trigger history: fired, skipped, failed, blocked"
    )
    events.add_argument("name")
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=with_client(routine_events))
