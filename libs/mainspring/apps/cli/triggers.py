"""`mainspring trigger create|activate|deactivate|fire|list|show|events|replay|delete`."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mainspring.apps.cli.common import CliError, parse_payload, with_client
from mainspring.apps.present import short_time, table
from mainspring.storage.named_triggers import ON_RESUME_CHOICES


async def trigger_create(client: Any, args: argparse.Namespace) -> int:
    trigger = await client.create_trigger(
        args.name,
        args.target,
        cron=args.cron,
        every=args.every,
        push=args.push,
        tz=args.tz,
        poll=args.poll,
        payload=parse_payload(args.payload),
        on_resume=args.on_resume,
    )
    print(
        f"trigger {trigger.name} created (inactive): "
        f"`mainspring trigger activate {trigger.name}` switches it on"
    )
    return 0


async def trigger_activate(client: Any, args: argparse.Namespace) -> int:
    await client.activate_trigger(args.name, args.on_resume)
    print(f"trigger {args.name} activated")
    return 0


async def trigger_deactivate(client: Any, args: argparse.Namespace) -> int:
    await client.deactivate_trigger(args.name, args.reason)
    print(f"trigger {args.name} deactivated")
    return 0


async def trigger_fire(client: Any, args: argparse.Namespace) -> int:
    run_id = await client.fire_trigger(args.name, parse_payload(args.payload))
    print(run_id)
    return 0


def schedule_text(view: dict[str, Any]) -> str:
    """When a trigger fires, in one phrase."""
    if view.get("cron"):
        when = f"cron {view['cron']}"
    elif view.get("every"):
        when = f"every {view['every']}"
    else:
        return "when fired" if view["type"] == "push" else view["type"]
    zone = f" {view['tz']}" if view.get("tz") not in (None, "UTC") else ""
    poll = f", poll {view['poll_fn']}" if view.get("poll_fn") else ""
    return when + zone + poll


async def trigger_list(client: Any, args: argparse.Namespace) -> int:
    views = await client.list_triggers()
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    rows = [
        {
            "name": v["name"],
            "target": v["target"],
            "type": v["type"] + (" (own)" if v["own"] else ""),
            "fires": schedule_text(v),
            "status": v["status"],
        }
        for v in views
    ]
    print(
        table(rows, ["name", "target", "type", "fires", "status"])
        if rows
        else "no triggers: create one with `mainspring trigger create NAME --target ROUTINE "
        "--cron EXPR`"
    )
    return 0


async def trigger_show(client: Any, args: argparse.Namespace) -> int:
    if args.next < 0:
        raise CliError(
            f"--next {args.next} is negative: give how many fire times to list, e.g. --next 5"
        )
    info = await client.trigger_info(args.name)
    if args.next:
        info["next_fires"] = [
            {
                "utc": fire.utc.isoformat(),
                "local": fire.local.isoformat(),
                "dst": fire.dst_note,
            }
            for fire in await client.next_trigger_fires(args.name, args.next)
        ]
    print(json.dumps(info, indent=2))
    return 0


async def trigger_events(client: Any, args: argparse.Namespace) -> int:
    await client.trigger_info(args.name)  # an unknown name is an error, not an empty list
    events = await client.trigger_events(args.name, args.limit)
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    rows = [
        {
            **event,
            "fired_at": short_time(event["fired_at"]),
            "scheduled_at": short_time(event["scheduled_at"]),
            "payload": json.dumps(event["payload"]) if event.get("payload") is not None else None,
        }
        for event in events
    ]
    print(
        table(rows, ["fired_at", "scheduled_at", "status", "run_id", "payload", "reason"])
        if rows
        else f"no events for trigger {args.name} yet"
    )
    return 0


def read_definition(path: str | None) -> dict[str, Any] | None:
    """`--definition FILE`: a JSON object with the keys of `trigger create`'s flags."""
    if path is None:
        return None
    try:
        loaded = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"--definition {path}: cannot read it ({exc.strerror})") from None
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        raise CliError(
            f"--definition {path} is not a JSON object: write e.g. "
            '{"cron": "*/5 * * * *", "payload": {"city": "Oslo"}}'
        )
    return loaded


def replay_lines(report: Any) -> list[str]:
    """A replay for people: what it covers, then one line per event."""
    subject, window, verdicts = report.subject, report.horizon, report.verdicts
    runs = [v for v in verdicts if v.would_run]
    held = (
        "the stream holds every message it stored"
        if window.stream_oldest is None
        else (
            f"the stream holds messages since {window.stream_oldest.isoformat(timespec='seconds')}"
        )
    )
    history = (
        f"the run history records this trigger since {window.history_oldest.isoformat(timespec='seconds')}"
        if window.history_oldest
        else "the run history records no firing of this trigger"
    )
    lines = [
        f"dry run of trigger {subject.name} (target {subject.target}): nothing was started",
        f"horizon: from {window.start.isoformat(timespec='seconds')} "
        f"(asked {window.since.isoformat(timespec='seconds')}; {held}; {history})",
        f"would have started {len(runs)} run(s) of {subject.target}; "
        f"{len(verdicts) - len(runs)} event(s) would not start one",
    ]
    for verdict in verdicts:
        mark = "run " if verdict.would_run else "skip"
        payload = f" payload {json.dumps(verdict.payload)}" if verdict.payload else ""
        then = f"  [then: {verdict.recorded}]" if verdict.recorded else ""
        lines.append(
            f"  {mark}  {verdict.at.isoformat(timespec='seconds')}  {verdict.why}{payload}{then}"
        )
    return lines


async def trigger_replay(client: Any, args: argparse.Namespace) -> int:
    from mainspring.client.completions import FollowError, parse_since

    try:
        since = parse_since(args.since, datetime.now(UTC))
    except FollowError as exc:
        raise CliError(str(exc).replace("since ", "--since ", 1)) from None
    report = await client.replay_trigger(args.name, since, read_definition(args.definition))
    if args.json:
        print(
            json.dumps(
                {
                    "trigger": report.subject.name,
                    "target": report.subject.target,
                    "horizon_start": report.horizon.start.isoformat(),
                    "stream_oldest": report.horizon.stream_oldest.isoformat()
                    if report.horizon.stream_oldest
                    else None,
                    "history_oldest": report.horizon.history_oldest.isoformat()
                    if report.horizon.history_oldest
                    else None,
                    "verdicts": [v.as_json() for v in report.verdicts],
                },
                indent=2,
            )
        )
        return 0
    print("\n".join(replay_lines(report)))
    return 0


async def trigger_delete(client: Any, args: argparse.Namespace) -> int:
    await client.delete_trigger(args.name)
    print(f"trigger {args.name} deleted")
    return 0


def add_trigger_commands(commands: Any) -> None:
    """`mainspring trigger ...`: named triggers kept as data."""
    trigger = commands.add_parser(
        "trigger", help="named triggers: fire a routine (or DAG) on a cron, an interval or a call"
    )
    actions = trigger.add_subparsers(dest="trigger_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="define a trigger (created inactive)")
    create.add_argument("name")
    create.add_argument("--target", required=True, help="the routine or DAG it fires")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5 fields, or 6 with seconds first")
    when.add_argument("--every", help="an interval: 10s, 30m, 1h30m, 2d, 1w")
    when.add_argument("--push", action="store_true", help="fires only when called (`fire`)")
    create.add_argument("--tz", default="UTC", help="the cron's time zone (default UTC)")
    create.add_argument(
        "--poll",
        metavar="MODULE:FUNCTION",
        help="on each tick call this function of the target's code: a dict fires, None skips",
    )
    create.add_argument("--payload", metavar="JSON", help="the default payload (the run's inputs)")
    create.add_argument(
        "--on-resume",
        choices=ON_RESUME_CHOICES,
        default="coalesce",
        help="ticks missed while deactivated: drop them, or fire once on activation (default)",
    )
    create.set_defaults(func=with_client(trigger_create))

    activate = actions.add_parser("activate", help="switch a trigger on (keeps its last run)")
    activate.add_argument("name")
    activate.add_argument(
        "--on-resume",
        choices=ON_RESUME_CHOICES,
        default=None,
        help="ticks missed while deactivated: drop, or coalesce into one firing",
    )
    activate.set_defaults(func=with_client(trigger_activate))

    deactivate = actions.add_parser("deactivate", help="switch a trigger off, keeping it")
    deactivate.add_argument("name")
    deactivate.add_argument("--reason", default=None)
    deactivate.set_defaults(func=with_client(trigger_deactivate))

    fire = actions.add_parser("fire", help="fire an active trigger now; prints the run id")
    fire.add_argument("name")
    fire.add_argument("--payload", metavar="JSON", help="instead of the trigger's default payload")
    fire.set_defaults(func=with_client(trigger_fire))

    listing = actions.add_parser("list", help="named triggers and routines' own triggers")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=with_client(trigger_list))

    show = actions.add_parser("show", help="a trigger, its status and last run")
    show.add_argument("name")
    show.add_argument(
        "--next",
        type=int,
        default=0,
        metavar="N",
        help="also list the next N fire times in UTC and the trigger's zone, marking DST moves",
    )
    show.set_defaults(func=with_client(trigger_show))

    events = actions.add_parser("events", help="a trigger's history, newest first")
    events.add_argument("name")
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=with_client(trigger_events))

    replay = actions.add_parser(
        "replay",
        help="dry run: which runs a trigger (or a changed definition) would have started since T",
    )
    replay.add_argument("name")
    replay.add_argument(
        "--since", required=True, help="an ISO time (2026-11-01T09:00) or a duration ago (2h)"
    )
    replay.add_argument(
        "--definition",
        metavar="FILE",
        help='JSON changes to evaluate instead, e.g. {"cron": "*/5 * * * *"}',
    )
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=with_client(trigger_replay))

    delete = actions.add_parser("delete", help="remove a named trigger")
    delete.add_argument("name")
    delete.set_defaults(func=with_client(trigger_delete))
