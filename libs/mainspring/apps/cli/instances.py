"""The `mainspring instance` commands and `mainspring runs diff`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mainspring.apps.cli.common import CliError, parse_pairs, with_client
from mainspring.apps.present import table


async def instance_create(client: Any, args: argparse.Namespace) -> int:
    definition, run_id = await client.create_instance(
        args.name,
        args.routine,
        version=args.version,
        settings=parse_pairs(args.set, "--set"),
        source="manual",
    )
    follows = "follows the latest version" if definition.follow_latest else "pinned"
    print(
        f"instance {definition.name} of routine {definition.blueprint} created: version "
        f"{definition.version[:12]} ({follows})"
    )
    if run_id is not None:
        await _report_constructor_run(client, run_id, args.wait)
    return 0


async def instance_configure(client: Any, args: argparse.Namespace) -> int:
    settings = parse_pairs(args.set, "--set")
    if not settings:
        raise CliError("give the new configuration with --set, e.g. --set clusters=5")
    if await (await client.store()).find(args.name) is None:
        raise CliError(
            f"instance {args.name!r} does not exist: create it with `mainspring instance create "
            f"{args.name} --routine ROUTINE` (see `mainspring instance list`)"
        )
    run_id = await client.configure_instance(args.name, settings, source="manual")
    await _report_constructor_run(client, run_id, args.wait)
    return 0


async def _report_constructor_run(client: Any, run_id: str, wait: bool) -> None:
    from mainspring.apps.cli.runs import dispatched_or_refused

    await dispatched_or_refused(client, run_id)
    if not wait:
        print(f"configured by run {run_id}")
        return
    run = await client.wait(run_id)
    print(f"configured by run {run_id}: {run['status']}")
    if run["status"] != "completed":
        raise CliError(f"constructor run {run_id} {run['status']}: {run.get('error') or ''}")


async def instance_list(client: Any, args: argparse.Namespace) -> int:
    definitions = await (await client.store()).list()
    chosen = [d for d in definitions if args.routine in (None, d.blueprint)]
    if args.json:
        print(json.dumps([json.loads(d.model_dump_json()) for d in chosen], indent=2))
        return 0
    rows = [
        {
            "routine": d.blueprint,
            "instance": d.name,
            "version": d.version[:12],
            "follows": "latest" if d.follow_latest else "pinned",
            "enabled": "yes" if d.enabled else "no",
            "config": json.dumps(d.config) if d.config else None,
        }
        for d in sorted(chosen, key=lambda d: (d.blueprint, d.name))
    ]
    if rows:
        print(table(rows, ["routine", "instance", "version", "follows", "enabled", "config"]))
    else:
        print("no instances: create one with `mainspring instance create NAME --routine R`")
    return 0


def add_instance_commands(commands: Any) -> None:
    """`mainspring instance create|configure|list`."""
    instance = commands.add_parser(
        "instance", help="configured copies of a routine: create, reconfigure, list"
    )
    actions = instance.add_subparsers(dest="instance_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="a new instance of a routine, with its own configuration and runs"
    )
    create.add_argument("name", help="instance name (what `mainspring run NAME` starts)")
    create.add_argument("--routine", required=True, help="the routine (blueprint) it configures")
    version = create.add_mutually_exclusive_group()
    version.add_argument(
        "--version", default=None, help="pin this version (a digest prefix; see routine show)"
    )
    version.add_argument(
        "--follow-latest",
        action="store_true",
        help="move to each new version of the routine as it is registered (the default)",
    )
    create.add_argument(
        "--set",
        action="append",
        metavar="K=V",
        help="configuration (the constructor's inputs), or run() input defaults without one",
    )
    create.add_argument("--wait", action="store_true", help="wait for the constructor run")
    create.set_defaults(func=with_client(instance_create))
    configure = actions.add_parser(
        "configure", help="change an instance's configuration: another constructor run"
    )
    configure.add_argument("name")
    configure.add_argument("--set", action="append", metavar="K=V", help="a value to change")
    configure.add_argument("--wait", action="store_true", help="wait for the constructor run")
    configure.set_defaults(func=with_client(instance_configure))
    listing = actions.add_parser("list", help="instances grouped by their routine")
    listing.add_argument("--routine", default=None, help="only this routine's instances")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=with_client(instance_list))


async def runs_diff(client: Any, args: argparse.Namespace) -> int:
    import asyncio

    from mainspring.apps.rundiff import artifact_statistics, compare_runs, render_diff

    runs = []
    for run_id in (args.a, args.b):
        run = await client.get_run(run_id)
        if run is None:
            raise CliError(f"run {run_id!r} not found: list runs with `mainspring runs list`")
        runs.append(run)
    root = client.settings.resolved_artifact_root()
    statistics = [await asyncio.to_thread(artifact_statistics, root, run) for run in runs]
    rows = compare_runs(runs[0], runs[1], statistics[0], statistics[1])
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2, default=str))
    else:
        print(render_diff(rows, runs[0]["id"], runs[1]["id"], args.only_differences))
    return 0


def add_runs_diff_command(runs_actions: Any) -> None:
    """`mainspring runs diff A B`."""
    diff = runs_actions.add_parser(
        "diff",
        help="two runs side by side: inputs, configuration, outputs, status, durations, "
        "resources, artifacts (differences marked *)",
    )
    diff.add_argument("a", help="run id")
    diff.add_argument("b", help="run id")
    diff.add_argument(
        "--only-differences", action="store_true", help="leave out what both runs share"
    )
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(func=with_client(runs_diff))
