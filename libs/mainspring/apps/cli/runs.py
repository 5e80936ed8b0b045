"""`mainspring run` and `mainspring runs ...`: start runs, then list, show, follow and control them."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mainspring.apps.cli.common import (
    EXIT_FAILED,
    CliError,
    parse_json_values,
    parse_pairs,
    parse_payload,
    parse_time,
    print_or_wait,
    report_finished,
    with_client,
)
from mainspring.apps.cli.dags import add_resume_actions
from mainspring.apps.cli.instances import add_runs_diff_command
from mainspring.apps.present import duration, print_run, short_time, table, watch_line
from mainspring.base.settings import Settings
from mainspring.contract.messages import TERMINAL_STATUSES


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `run` flags that describe a run, whether it goes to a runner or runs in memory."""
    return {
        "labels": args.label or [],
        "attributes": parse_json_values(parse_pairs(args.attr, "--attr")),
        "name": args.run_name,
        "description": args.description,
        "statistics": args.statistics,
        "previews": args.previews,
        "store_artifacts": not args.no_store,
        # Inputs asked for one by one are Xperiflow's workflow invocation.
        "invocation": "workflow" if args.interactive else "direct",
        "method": args.method,
    }


async def run_routine(client: Any, args: argparse.Namespace) -> int:
    from mainspring.base.units import parse_memory

    try:
        memory = parse_memory(args.memory) if args.memory else None
    except ValueError as exc:
        raise CliError(f"--memory: {exc}") from None
    inputs: dict[str, Any] = parse_pairs(args.input, "--input")
    if args.interactive:
        inputs = await prompt_inputs(client, args.name, inputs, args.method)
    if args.in_memory:
        narrowing = [args.from_version, args.to_version, args.upstream, args.payload]
        if any(option is not None for option in narrowing):
            raise CliError(
                "--from-version, --to-version, --upstream and --payload need a runner: "
                "leave out --in-memory"
            )
        return await run_routine_in_memory(client, args, inputs)
    run_id = await client.submit(
        args.name,
        inputs,
        memory_limit=memory,
        source="manual",
        isolation=args.isolation,
        priority=args.priority,
        from_version=args.from_version,
        to_version=args.to_version,
        upstream=args.upstream,
        payload=parse_payload(args.payload),
        **run_options(args),
    )
    await dispatched_or_refused(client, run_id)
    if not args.wait:
        print(run_id)
        return 0
    if sys.stdout.isatty():
        # A person is watching: draw the live bar while waiting.
        try:
            run = await asyncio.wait_for(draw_progress(client, run_id, 0.25), args.timeout)
        except TimeoutError:
            raise TimeoutError(f"run {run_id} not finished after {args.timeout}s") from None
    else:
        run = await client.wait(run_id, timeout=args.timeout)
    return report_finished(run, args.json)


async def dispatched_or_refused(client: Any, run_id: str) -> None:
    """The dispatcher checks routine and inputs; its refusal is the command's one-line error."""
    from mainspring.client import RunRefused

    try:
        await client.dispatched(run_id)
    except RunRefused as exc:
        raise CliError(str(exc)) from None


async def prompt_inputs(
    client: Any, routine: str, given: dict[str, Any], method: str = "run"
) -> dict[str, Any]:
    """Ask for each input of the method not given on the command line, showing its type and
    default."""
    from mainspring.sdk.routine import InputError, coerce_input
    from mainspring.storage.registry import method_input_specs, unknown_method

    definition = await (await client.store()).get(routine)
    problem = unknown_method(definition, method)
    if problem is not None:
        raise CliError(problem)
    inputs = dict(given)
    for name, spec in method_input_specs(definition, method).items():
        if name in inputs:
            continue
        kind = f"{spec.type} or empty" if spec.optional else spec.type
        while True:
            answer = await asyncio.to_thread(
                input, f"{name} ({kind}, default {json.dumps(spec.default)}): "
            )
            if not answer.strip():
                break
            try:
                coerce_input(spec, answer)
            except InputError as exc:
                print(f"  {name}: {exc}; try again")
                continue
            inputs[name] = answer
            break
    return inputs


async def run_routine_in_memory(
    client: Any, args: argparse.Namespace, inputs: dict[str, Any]
) -> int:
    """`run --in-memory`: execute here, print the recorded run."""
    from mainspring.client.inmemory import InMemoryRefused

    try:
        run = await client.run_in_memory(
            args.name,
            inputs,
            **run_options(args),
        )
    except InMemoryRefused as exc:
        raise CliError(str(exc)) from None
    print_run(run)
    return 0 if run["status"] == "completed" else EXIT_FAILED


async def draw_progress(client: Any, run_id: str, interval: float) -> dict[str, Any]:
    """Show a run's progress until it ends (a redrawn bar on a terminal, lines otherwise)."""
    live = sys.stdout.isatty()
    final: dict[str, Any] = {}
    async for final in client.follow(run_id, poll_s=interval):
        line = watch_line(final)
        if live:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stdout.write("\r\x1b[2K" + line[:width])
            sys.stdout.flush()
        else:
            print(line, flush=True)
    if live:
        sys.stdout.write("\n")
    return final


async def runs_watch(client: Any, args: argparse.Namespace) -> int:
    run = await client.get_run(args.id)
    if run is None:
        raise CliError(f"run {args.id!r} not found: list runs with `mainspring runs list`")
    print(f"run {run['id']} of {run['routine']} #{run.get('run_number') or '-'}", flush=True)
    final = await draw_progress(client, run["id"], args.interval)
    took = f" in {duration(final)}" if duration(final) else ""
    print(f"run {final['id']} {final['status']}{took}", flush=True)
    if final.get("error"):
        print(f"error: {final['error']}", flush=True)
    return 0 if final["status"] == "completed" else EXIT_FAILED


def cmd_runs_follow(args: argparse.Namespace) -> int:
    """`runs follow`: the selection is checked before reaching for the bus."""
    from mainspring.client.completions import (
        FollowError,
        completion_filter,
        follower_name,
        parse_since,
    )

    try:
        completion_filter(args.routine, args.status)
        if args.durable:
            follower_name(args.durable)
        args.since_time = parse_since(args.since, datetime.now(UTC)) if args.since else None
    except FollowError as exc:
        raise CliError(str(exc)) from None
    return with_client(runs_follow)(args)


async def runs_follow(client: Any, args: argparse.Namespace) -> int:
    """One line (or JSON object) per finished run, as it happens, until interrupted."""
    from mainspring.client.completions import FollowError, completion_line

    try:
        follower = client.completions(args.routine, args.status, args.durable, args.since_time)
        async with follower:
            async for event in follower:
                line = event.model_dump_json() if args.json else completion_line(event)
                print(line, flush=True)
    except FollowError as exc:
        # A durable name already following another selection.
        raise CliError(str(exc)) from None
    return 0


async def runs_artifacts(client: Any, args: argparse.Namespace) -> int:
    from mainspring.base.units import format_bytes
    from mainspring.storage.artifacts import artifact_files, download_artifact

    run = await client.get_run(args.id)
    if run is None:
        raise CliError(f"run {args.id!r} not found: list runs with `mainspring runs list`")
    root = client.settings.resolved_artifact_root()
    artifacts = run.get("artifacts") or []
    if args.download:
        if args.download not in {a["name"] for a in artifacts}:
            names = ", ".join(a["name"] for a in artifacts) or "none"
            raise CliError(f"run {run['id']} has no artifact {args.download!r} (it has: {names})")
        try:
            target = download_artifact(root, run["id"], args.download, Path(args.to))
        except FileNotFoundError as exc:
            raise CliError(str(exc)) from None
        print(f"artifact {args.download} of run {run['id']} downloaded to {target}")
        return 0
    rows = []
    for item in artifacts:
        files = artifact_files(root, run["id"], item["name"]) if item.get("uri") else []
        rows.append(
            {
                **item,
                "size": format_bytes(item.get("size_bytes")),
                "files": ",".join(f for f, _ in files) or "(not stored)",
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(table(rows, ["name", "kind", "rows", "size", "files", "uri"]))
    else:
        print(f"run {run['id']} saved no artifacts")
    return 0


async def runs_list(client: Any, args: argparse.Namespace) -> int:
    from mainspring.contract.queries import RunQuery

    if args.limit < 0:
        raise CliError(f"--limit {args.limit} is negative: give 0 or more runs, e.g. --limit 100")
    query = RunQuery(
        routine=args.routine,
        status=args.status,
        label=args.label,
        source=args.source,
        attribute=parse_json_values(parse_pairs(args.attr, "--attr")) or None,
        since=datetime.fromisoformat(args.since) if args.since else None,
        until=datetime.fromisoformat(args.until) if args.until else None,
        chain=args.chain,
        name=args.run_name,
        description=args.description,
        limit=args.limit,
    )
    runs = [run async for run in client.iter_runs(query)]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    rows = [
        {
            **r,
            "created": short_time(r["created_at"]),
            "took": duration(r),
            "number": r["run_number"],
            "labels": ",".join(r.get("labels") or []) or None,
        }
        for r in runs
    ]
    columns = ["id", "routine", "number", "status", "source", "created", "took", "labels"]
    if any(r.get("queue_reason") for r in rows):
        columns.append("queue_reason")
    print(table(rows, columns) if rows else "no runs match")
    return 0


async def runs_show(client: Any, args: argparse.Namespace) -> int:
    run = await client.get_run(args.id)
    if run is None:
        raise CliError(f"run {args.id!r} not found: list runs with `mainspring runs list`")
    if args.json:
        print(json.dumps(run, indent=2))
    else:
        print_run(run)
    return 0


TRACE_ID_LENGTH = 32


async def runs_trace(client: Any, args: argparse.Namespace) -> int:
    from mainspring.base.tracing import read_span_files, span_tree_lines

    trace_id = args.id if len(args.id) == TRACE_ID_LENGTH else None
    if trace_id is None:
        run = await client.get_run(args.id)
        if run is None:
            raise CliError(f"run {args.id!r} not found: list runs with `mainspring runs list`")
        trace_id = run.get("trace_id")
        if not trace_id:
            raise CliError(f"run {args.id!r} has no trace id (it was recorded without one)")
    trace_dir = Settings().resolved_trace_dir()
    spans = read_span_files(trace_dir, trace_id)
    if not spans:
        raise CliError(
            f"no stored spans of trace {trace_id} in {trace_dir}: it was not sampled, or is "
            "older than the span files keep; services write them under `mainspring up` "
            "or with MAINSPRING_TRACE_DIR set"
        )
    if args.json:
        print(json.dumps(spans, indent=2))
        return 0
    print(f"trace {trace_id}: {len(spans)} spans")
    for line in span_tree_lines(spans):
        print(line)
    return 0


async def runs_rerun(client: Any, args: argparse.Namespace) -> int:
    try:
        run_id = await client.rerun(args.id, source="manual")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return await print_or_wait(client, run_id, args)


async def runs_logs(client: Any, args: argparse.Namespace) -> int:
    run = await client.get_run(args.id)
    if run is None:
        raise CliError(f"run {args.id!r} not found: list runs with `mainspring runs list`")
    if args.follow:
        async for text in client.follow_log(run["id"]):
            sys.stdout.write(text)
            sys.stdout.flush()
        return 0
    text = await client.run_log(run["id"])
    if text is None:
        if run["status"] not in TERMINAL_STATUSES:
            raise CliError(
                f"run {run['id']} is {run['status']}: its log is stored when it ends; "
                f"watch it live with `mainspring runs logs {run['id']} --follow`"
            )
        print(f"run {run['id']} kept no log (it wrote no output, or never started)")
        return 0
    sys.stdout.write(text)
    return 0


def check_delete_selection(args: argparse.Namespace) -> None:
    """`runs delete` names runs by id or by routine, checked before reaching for the bus."""
    if bool(args.ids) == bool(args.routine):
        raise CliError("name the runs to delete: run ids, or --routine N (with --status, --before)")
    if args.ids and (args.status or args.before):
        raise CliError("--status and --before narrow --routine: leave out the run ids")
    parse_time(args.before, "--before")


def cmd_runs_delete(args: argparse.Namespace) -> int:
    check_delete_selection(args)
    return with_client(runs_delete)(args)


async def runs_delete(client: Any, args: argparse.Namespace) -> int:
    reply = await client.delete_runs(
        args.ids,
        routine=args.routine,
        status=args.status,
        before=parse_time(args.before, "--before"),
        dry_run=args.dry_run,
    )
    for run_id in reply["missing"]:
        print(f"run {run_id} not found: nothing to delete")
    for run_id in reply["running"]:
        print(
            f"run {run_id} has not ended: not deleted (cancel it with "
            f"`mainspring runs cancel {run_id}`, or delete it once it ends)"
        )
    hidden = reply["running_count"] - len(reply["running"])
    if hidden:
        print(f"... and {hidden} more runs not ended, not deleted")
    verb = "would delete" if reply["dry_run"] else "deleted"
    if args.dry_run:
        for run_id in reply["deleted"]:
            print(f"{verb} {run_id}")
    count = reply["deleted_count"]
    print(f"{verb} {count} run{'' if count == 1 else 's'} with their progress, logs and artifacts")
    return 0 if not reply["missing"] else EXIT_FAILED


async def runs_cancel(client: Any, args: argparse.Namespace) -> int:
    run = await client.get_run(args.id)
    if run is None:
        raise CliError(f"run {args.id!r} not found: list runs with `mainspring runs list`")
    await client.cancel(run["id"])
    print(f"cancel requested for run {run['id']} ({run['status']})")
    return 0


def add_run_commands(commands: Any) -> None:
    """`run` and `runs list | show | trace | rerun | cancel | logs | delete | watch | follow | artifacts`."""
    run = commands.add_parser("run", help="start a run of a routine now")
    run.add_argument("name")
    run.add_argument(
        "--input", action="append", metavar="K=V", help="run() input (validated against its type)"
    )
    run.add_argument(
        "--method",
        default="run",
        help="the routine method to run (default: run); its inputs are given with --input",
    )
    run.add_argument("--label", action="append", help="label (repeatable)")
    run.add_argument(
        "--attr", action="append", metavar="K=V", help="attribute (JSON values allowed)"
    )
    run.add_argument("--run-name", default=None, help="a name for this run")
    run.add_argument("--description", default=None)
    run.add_argument("--memory", default=None, help="memory limit, e.g. 512MiB, 2GiB")
    run.add_argument(
        "--isolation",
        choices=["worker", "process"],
        default=None,
        help="worker: a reused worker process; process: a fresh process (default: the routine's)",
    )
    run.add_argument(
        "--priority",
        choices=["high", "normal", "low"],
        default=None,
        help="which waiting runs the runners take first (default: the routine's)",
    )
    run.add_argument("--statistics", action="store_true", help="compute artifact statistics")
    run.add_argument("--previews", action="store_true", help="store artifact previews (first rows)")
    run.add_argument("--no-store", action="store_true", help="keep no artifacts")
    run.add_argument("--wait", action="store_true", help="wait for the run to finish and print it")
    run.add_argument("--json", action="store_true", help="with --wait: print the run as JSON")
    run.add_argument(
        "--in-memory",
        action="store_true",
        help="run in this process and print the result (routines with allow_in_memory = True)",
    )
    run.add_argument(
        "--interactive", action="store_true", help="prompt for each input not given with --input"
    )
    run.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after seconds"
    )
    run.add_argument(
        "--from-version",
        type=int,
        default=None,
        help="dataset routines: rows after this version (default: the routine's cursor)",
    )
    run.add_argument(
        "--to-version",
        type=int,
        default=None,
        help="dataset routines: rows up to this version (default: the latest seen)",
    )
    run.add_argument(
        "--upstream",
        metavar="RUN_ID",
        default=None,
        help="completion routines: the upstream run whose event to use (default: the latest)",
    )
    run.add_argument(
        "--payload",
        metavar="JSON",
        default=None,
        help="poll routines: the payload the poll function would return (default: {})",
    )
    run.set_defaults(func=with_client(run_routine))

    runs = commands.add_parser("runs", help="list, show and control runs")
    runs_actions = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    rl = runs_actions.add_parser("list", help="runs, newest first")
    rl.add_argument("--routine")
    rl.add_argument(
        "--status", choices=["created", "queued", "running", "completed", "failed", "cancelled"]
    )
    rl.add_argument("--label")
    rl.add_argument("--attr", action="append", metavar="K=V")
    rl.add_argument("--source", choices=["trigger", "manual", "api"])
    rl.add_argument("--since", help="ISO time")
    rl.add_argument("--until", help="ISO time")
    rl.add_argument("--chain", metavar="RUN_ID", help="every run in the chain of this run")
    rl.add_argument(
        "--name", dest="run_name", metavar="TEXT", help="runs whose name contains TEXT (any case)"
    )
    rl.add_argument("--description", metavar="TEXT", help="runs whose description contains TEXT")
    rl.add_argument("--limit", type=int, default=50)
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=with_client(runs_list))
    rs = runs_actions.add_parser("show", help="one run in full")
    rs.add_argument("id")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=with_client(runs_show))
    rt = runs_actions.add_parser(
        "trace", help="the stored spans of a run's trace as a tree with durations"
    )
    rt.add_argument("id", help="a run id, or a trace id (32 hex digits)")
    rt.add_argument("--json", action="store_true", help="the spans as JSON")
    rt.set_defaults(func=with_client(runs_trace))
    rr = runs_actions.add_parser(
        "rerun", help="a new run with the same inputs, labels, attributes and event"
    )
    rr.add_argument("id")
    rr.add_argument("--wait", action="store_true", help="wait for the new run and print it")
    rr.add_argument("--json", action="store_true", help="with --wait: print the run as JSON")
    rr.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after seconds"
    )
    rr.set_defaults(func=with_client(runs_rerun))
    rc = runs_actions.add_parser("cancel", help="stop a queued or running run")
    rc.add_argument("id")
    rc.set_defaults(func=with_client(runs_cancel))
    rlog = runs_actions.add_parser("logs", help="a run's stdout and stderr; --follow while it runs")
    rlog.add_argument("id")
    rlog.add_argument(
        "--follow", "-f", action="store_true", help="print output as it is written, until the end"
    )
    rlog.set_defaults(func=with_client(runs_logs))
    rd = runs_actions.add_parser(
        "delete", help="delete finished runs with their progress, logs and artifacts"
    )
    rd.add_argument("ids", nargs="*", metavar="ID", help="run ids (or use --routine)")
    rd.add_argument("--routine", help="the finished runs of this routine")
    rd.add_argument("--status", choices=["completed", "failed", "cancelled"])
    rd.add_argument("--before", metavar="TIME", help="with --routine: runs created before (ISO)")
    rd.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    rd.set_defaults(func=cmd_runs_delete)
    rw = runs_actions.add_parser("watch", help="a live progress bar until the run ends")
    rw.add_argument("id")
    rw.add_argument("--interval", type=float, default=0.25, help="poll interval in seconds")
    rw.set_defaults(func=with_client(runs_watch))
    rf = runs_actions.add_parser(
        "follow", help="one line per finished run as it happens (for pipelines); Ctrl-C stops"
    )
    rf.add_argument("--routine", help="only this routine's runs (filtered by the server)")
    rf.add_argument("--status", choices=["completed", "failed", "cancelled"])
    rf.add_argument(
        "--durable", metavar="NAME", help="resume where the follower of this name stopped"
    )
    rf.add_argument(
        "--since", metavar="T", help="replay from an ISO time or a duration ago (90m, 2d)"
    )
    rf.add_argument("--json", action="store_true", help="one JSON object per line")
    rf.set_defaults(func=cmd_runs_follow)
    ra = runs_actions.add_parser("artifacts", help="a run's artifacts; --download fetches one")
    ra.add_argument("id")
    ra.add_argument("--download", metavar="NAME", help="copy this artifact's files locally")
    ra.add_argument("--to", default=".", help="with --download: target folder (default .)")
    ra.add_argument("--json", action="store_true")
    ra.set_defaults(func=with_client(runs_artifacts))
    add_resume_actions(runs_actions)
    add_runs_diff_command(runs_actions)
