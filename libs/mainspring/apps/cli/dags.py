"""`mainspring dag create|run|list` and `runs restart|replay`: DAGs of plain functions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mainspring.apps.cli.common import CliError, parse_payload, print_or_wait, with_client
from mainspring.apps.present import table


async def dag_create(client: Any, args: argparse.Namespace) -> int:
    from mainspring.sdk.bundle import BundleError
    from mainspring.storage.registry import RegistryError

    try:
        registered = await client.create_dags(Path(args.path))
    except (BundleError, RegistryError) as exc:
        raise CliError(str(exc)) from None
    for definition in registered.dags:
        print(f"registered DAG {definition.name} (code {definition.version[:12]})")
    for trigger in registered.triggers:
        timing = f"cron {trigger.cron}" if trigger.cron else "push"
        poll = f", poll {trigger.poll_fn}" if trigger.poll_fn else ""
        print(
            f"declared trigger {trigger.name} of {trigger.target} ({timing}{poll}), "
            f"{trigger.status}"
            + (
                ""
                if trigger.status == "active"
                else f": `mainspring trigger activate {trigger.name}`"
            )
        )
    return 0


async def dag_run(client: Any, args: argparse.Namespace) -> int:
    from mainspring.storage.registry import RegistryError

    try:
        run_id = await client.run_dag(
            args.nsref, parse_payload(args.payload) or {}, source="manual"
        )
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    return await print_or_wait(client, run_id, args)


async def dag_list(client: Any, args: argparse.Namespace) -> int:
    dags = [d for d in await (await client.store()).list() if d.kind == "dag"]
    if args.json:
        print(json.dumps([json.loads(d.model_dump_json()) for d in dags], indent=2))
    elif dags:
        rows = [
            {"nsref": d.name, "version": d.version[:12], "entrypoint": d.entrypoint} for d in dags
        ]
        print(table(rows, ["nsref", "version", "entrypoint"]))
    else:
        print("no DAGs: register a module's with `mainspring dag create FILE_OR_DIR`")
    return 0


async def runs_restart(client: Any, args: argparse.Namespace) -> int:
    try:
        run_id = await client.restart(args.id)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return await print_or_wait(client, run_id, args)


async def runs_replay(client: Any, args: argparse.Namespace) -> int:
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    try:
        run_id = await client.replay(args.id, nodes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return await print_or_wait(client, run_id, args)


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait for the run and print it")
    parser.add_argument("--json", action="store_true", help="with --wait: print the run as JSON")
    parser.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after seconds"
    )


def add_dag_commands(commands: Any) -> None:
    """`mainspring dag create|run|list`."""
    dag = commands.add_parser("dag", help="register and run DAGs of plain functions")
    actions = dag.add_subparsers(dest="dag_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="register every DAG a module's Namespace registers (a .py file or folder)"
    )
    create.add_argument("path", metavar="FILE_OR_DIR")
    create.set_defaults(func=with_client(dag_create))
    run = actions.add_parser("run", help="start a run of a registered DAG")
    run.add_argument("nsref", help="the DAG's nsref, e.g. pipelines:market_summary")
    run.add_argument("--payload", help="JSON object; its keys reach source nodes by name")
    _wait_options(run)
    run.set_defaults(func=with_client(dag_run))
    listing = actions.add_parser("list", help="registered DAGs")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=with_client(dag_list))


def add_resume_actions(runs_actions: Any) -> None:
    """`mainspring runs restart|replay`: a DAG run again from its failure, or chosen nodes."""
    restart = runs_actions.add_parser(
        "restart", help="resume a failed DAG run from its failed node (a new run)"
    )
    restart.add_argument("id")
    _wait_options(restart)
    restart.set_defaults(func=with_client(runs_restart))
    replay = runs_actions.add_parser(
        "replay", help="run chosen nodes of a DAG run again, the others skipped (a new run)"
    )
    replay.add_argument("id")
    replay.add_argument("--nodes", required=True, help="comma-separated node labels, e.g. a,b")
    _wait_options(replay)
    replay.set_defaults(func=with_client(runs_replay))
