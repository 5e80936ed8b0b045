"""The `mainspring` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mainspring.base.settings import ConfigError, Settings
from mainspring.contract import subjects
from mainspring.contract.messages import TERMINAL_STATUSES

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


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table."""
    cells = [[str(c).upper() for c in columns]] + [
        ["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def short_time(value: str | None) -> str | None:
    """ISO time as `YYYY-MM-DD HH:MM:SS`."""
    if not value:
        return None
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def duration(run: dict[str, Any]) -> str | None:
    """How long a run ran."""
    if run.get("started_at") and run.get("finished_at"):
        seconds = (
            datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
        ).total_seconds()
        return f"{seconds:.2f}s"
    return None


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


# --- up / service / demo -------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from mainspring.apps.up import AlreadyUp, System

    if args.detach:
        return up_detached(args)
    web_port = None if args.web_port == 0 else args.web_port
    system = System(Settings(), runners=args.runners, nats_port=args.nats_port, web_port=web_port)
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        system.start()
    except AlreadyUp as exc:
        raise CliError(str(exc)) from None
    page = f", web page http://127.0.0.1:{system.web_port}" if system.web_port else ""
    print(
        f"mainspring is up: NATS {system.nats_url}{page}, home {system.home}, "
        f"services {', '.join(c.name for c in system.children)}. Ctrl-C stops.",
        flush=True,
    )
    try:
        while not stopping and system.failure is None:
            system.supervise_once()
            time.sleep(0.5)
    finally:
        print("mainspring: stopping services...", flush=True)
        system.stop()
        print("mainspring: stopped", flush=True)
    if system.failure is not None:
        print(f"mainspring: error: {system.failure}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0


def up_detached(args: argparse.Namespace) -> int:
    """Start `up` in its own session with its output in the home's logs; return once it is up."""
    import os
    import subprocess

    from mainspring.apps.service_logs import last_lines, logs_folder
    from mainspring.apps.status import pid_alive, read_up_state, wait_until

    settings = Settings()
    state = read_up_state(settings)
    if state is not None and pid_alive(int(state.get("pid") or 0)):
        raise CliError(
            f"mainspring is already up in {settings.home.resolve()} (pid {state['pid']}): "
            "use it, or stop it with `mainspring down`"
        )
    log_path = logs_folder(settings.home) / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mainspring", "up", "--runners", str(args.runners)]
    command += ["--web-port", str(args.web_port)]
    if args.nats_port is not None:
        command += ["--nats-port", str(args.nats_port)]
    env = {**os.environ, "MAINSPRING_HOME": str(settings.home.resolve())}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def settled() -> bool:
        current = read_up_state(settings) or {}
        return process.poll() is not None or (
            current.get("pid") == process.pid and current.get("state") == "up"
        )

    wait_until(settled, args.start_timeout)
    current = read_up_state(settings) or {}
    if process.poll() is not None or current.get("pid") != process.pid:
        if process.poll() is None:
            process.kill()
        said = [line for line in last_lines(log_path, 20) if line.strip()]
        reason = said[-1].removeprefix("mainspring: error: ") if said else "no answer in time"
        raise RuntimeError(f"mainspring up did not start ({reason}); see {log_path}")
    page = f", web page {current['web_url']}" if current.get("web_url") else ""
    print(
        f"mainspring is up in the background (pid {process.pid}): NATS {current['nats_url']}"
        f"{page}, home {current['home']}, logs in {log_path.parent}. "
        "`mainspring status` shows it, `mainspring down` stops it.",
        flush=True,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mainspring.apps.status import collect_status, everything_ready

    status = collect_status(Settings())
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print_status(status)
    return 0 if everything_ready(status) else EXIT_FAILED


def print_status(status: dict[str, Any]) -> None:
    """The status of every part as a table, with where the system lives above it."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not status.get("parts"):
        console.print(f"mainspring is not up in {status['home']}: start it with `mainspring up`")
        return
    versions = ", ".join(f"{k} {v}" for k, v in (status.get("versions") or {}).items())
    uptime = status.get("uptime_s")
    console.print(
        f"mainspring {status['state']} (pid {status.get('pid')}"
        f"{f', up {format_seconds(uptime)}' if uptime is not None else ''})\n"
        f"home      {status.get('home')}\nNATS      {status.get('nats_url')}\n"
        f"database  {status.get('database')}\nweb       {status.get('web_url') or '-'}\n"
        f"versions  {versions}"
    )
    if status.get("failure"):
        console.print(f"failure   {status['failure']}")
    grid = Table(box=None, header_style="bold")
    for column in ("part", "state", "pid", "uptime", "restarts", "http", "detail"):
        grid.add_column(column.upper())
    for part in status["parts"]:
        detail = part.get("gave_up") or (
            f"last exit: {part['last_exit']}" if part.get("last_exit") else ""
        )
        grid.add_row(
            str(part["name"]),
            str(part["state"]),
            str(part.get("pid") or "-"),
            format_seconds(part.get("uptime_s")),
            str(part.get("restarts", 0)),
            # /healthz, /readyz and /metrics of the part, where it serves them.
            f":{part['http_port']}" if part.get("http_port") else "-",
            detail,
        )
    console.print(grid)


def format_seconds(seconds: float | None) -> str:
    """An uptime as `3h04m`, `4m07s` or `12s`."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def cmd_down(args: argparse.Namespace) -> int:
    from mainspring.apps.status import stop_system

    settings = Settings()
    forced = stop_system(settings, timeout_s=args.timeout)
    home = settings.home.resolve()
    if forced:
        print(
            f"mainspring in {home} did not stop within {args.timeout:g}s: killed it and its parts",
            flush=True,
        )
    else:
        print(f"mainspring in {home} stopped", flush=True)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from mainspring.apps.service_logs import LogFollower, NoSuchLog, find_log, last_lines, log_files

    home = Settings().home
    try:
        paths = [find_log(home, args.service)] if args.service else list(log_files(home).values())
    except NoSuchLog as exc:
        raise CliError(str(exc)) from None
    if not paths:
        raise CliError(f"no logs in {home.resolve() / 'logs'}: has `mainspring up` run here?")
    prefixed = len(paths) > 1
    width = max(len(p.stem) for p in paths)
    # Mark the ends before printing the tails, so a line written meanwhile is not lost.
    follower = LogFollower(paths)
    follower.skip_to_end()
    for path in paths:
        for line in last_lines(path, args.lines, end=follower.offsets[path]):
            print(f"{path.stem.ljust(width)} | {line}" if prefixed else line, flush=True)
    if not args.follow:
        return 0
    import watchfiles

    for _changes in watchfiles.watch(
        paths[0].parent, debounce=200, yield_on_timeout=True, rust_timeout=1000
    ):
        if not args.service:
            # A part started after `logs` began (a restarted runner replica) gets followed too.
            follower.paths = list(log_files(home).values())
        for path, line in follower.new_lines():
            print(f"{path.stem.ljust(width)} | {line}" if prefixed else line, flush=True)
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    import runpy

    sys.argv = [f"mainspring_services.{args.name}.main"]
    runpy.run_module(f"mainspring_services.{args.name}.main", run_name="__main__")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from mainspring.runtime.bus import set_up_now

    settings = Settings()
    changed = set_up_now(settings)
    for line in changed:
        print(line)
    print(
        f"the bus at {settings.resolved_nats_url()} is set up" + ("" if changed else " (unchanged)")
    )
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from mainspring.apps.web import check_exposure, serve

    settings = Settings()
    exposed = check_exposure(args.host, settings.web_token)
    if exposed:
        raise CliError(exposed)
    server = serve(settings, args.host, args.port)
    print(f"mainspring web page on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mainspring.apps.demo import run_demo

    return run_demo(keep_up=args.keep_up)


# --- routines ------------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    # Checked before connecting: a typo in DIR should not wait for the bus.
    if not Path(args.dir).is_dir():
        raise CliError(
            f"{args.dir} is not a folder: pass the folder holding your routine's .py files"
        )
    if args.poll <= 0:
        raise CliError(f"--poll {args.poll:g} must be above 0 seconds, e.g. --poll 0.5")
    return with_client(dev_loop)(args)


async def dev_loop(client: Any, args: argparse.Namespace) -> int:
    from mainspring.apps.dev import develop

    await develop(client, Path(args.dir), args.name, poll_s=args.poll)
    return 0


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


def describe_trigger(trigger: Any) -> str:
    """A trigger spec in one phrase."""
    data = trigger.model_dump(exclude_none=True)
    kind = data.pop("kind")
    for default in (
        ("tz", "UTC"),
        ("catchup", "latest"),
        ("overlap", "skip"),
        ("status", "any"),
        ("timeout_s", 60.0),
    ):
        if data.get(default[0]) == default[1]:
            data.pop(default[0])
    return f"{kind}(" + ", ".join(f"{k}={v!r}" for k, v in data.items()) + ")"


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
    from mainspring.contract import subjects
    from mainspring.storage.cursors import load_cursor

    cursor, _ = await load_cursor(await client.js.key_value(subjects.DISPATCH_BUCKET), routine)
    return cursor.model_dump() if cursor else None


def next_fire_text(definition: Any) -> str | None:
    """When a timed trigger fires next (None for other triggers or when disabled)."""
    from datetime import UTC

    from mainspring.base.schedules import next_timed_fire
    from mainspring.sdk.triggers import TimedSpec

    trigger = definition.trigger
    if not isinstance(trigger, TimedSpec) or not definition.enabled:
        return None
    # The same arithmetic the ticker uses, so `show` names the tick that will fire.
    now = datetime.now(UTC)
    return next_timed_fire(
        trigger.cron, trigger.every, trigger.tz, now, trigger.dst_repeat, trigger.offset
    ).isoformat()


def next_fires_text(definition: Any, count: int) -> list[str]:
    """The next `count` fire times in the trigger's tz, each marked when DST moves or doubles it."""
    from datetime import UTC
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
    from datetime import UTC

    await (await client.store()).set_enabled(args.name, True, None, datetime.now(UTC))
    print(f"routine {args.name} enabled")
    return 0


async def routine_disable(client: Any, args: argparse.Namespace) -> int:
    from datetime import UTC

    await (await client.store()).set_enabled(args.name, False, args.reason, datetime.now(UTC))
    print(f"routine {args.name} disabled")
    return 0


async def routine_delete(client: Any, args: argparse.Namespace) -> int:
    await (await client.store()).delete(args.name)
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


# --- runs ----------------------------------------------------------------------------------


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


def progress_bar(fraction: float | None, width: int = 30) -> str:
    """`[#########---------]  45%` for a fraction 0..1."""
    value = max(0.0, min(1.0, fraction or 0.0))
    filled = round(value * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {value * 100:3.0f}%"


def watch_line(run: dict[str, Any]) -> str:
    """One line describing a run as it goes."""
    if run["status"] in ("created", "queued"):
        detail = run.get("queue_reason") or ""
    else:
        detail = run.get("progress_message") or ""
    attempt = f" attempt {run['attempt']}" if (run.get("attempt") or 0) > 1 else ""
    return f"{run['status']:<9} {progress_bar(run.get('progress'))} {detail}{attempt}".rstrip()


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


def print_run(run: dict[str, Any]) -> None:
    """A run as `key: value` lines."""
    fields = [
        "id",
        "routine",
        "blueprint",
        "routine_version",
        "method",
        "configuration",
        "run_number",
        "status",
        "source",
        "trigger_kind",
        "rerun_of",
        "started_by",
        "name",
        "description",
        "labels",
        "attributes",
        "inputs",
        "outputs",
        "error",
        "hop",
        "trace_id",
        "created_at",
        "queued_at",
        "started_at",
        "finished_at",
        "memory_limit",
        "runner",
        "attempt",
        "invocation",
        "execution",
        "isolation",
        "queue_reason",
        "updated_at",
    ]
    for key in fields:
        value = run.get(key)
        if value in (None, [], {}) and key not in ("status",):
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"{key:>14}: {value}")
    options = run_options_text(run)
    if options:
        print(f"{'options':>14}: {options}")
    used = resources_text(run)
    if used:
        print(f"{'resources':>14}: {used}")
    for key, label in (("artifact_location", "artifacts at"), ("log_uri", "log")):
        if run.get(key):
            print(f"{label:>14}: {run[key]}")
    if run.get("progress") is not None:
        print(f"{'progress':>14}: {run['progress'] * 100:.0f}% {run.get('progress_message') or ''}")
    for item in run.get("artifacts") or []:
        print(
            f"{'artifact':>14}: {item['name']} ({item['kind']}, {item.get('rows') or '-'} rows) {item['uri']}"
        )
    for step in run.get("progress_history") or []:
        print(
            f"{'':>14}  {short_time(step['at'])} {step['fraction'] * 100:5.1f}% {step['message']}"
        )
    print_lineage(run)
    if run.get("traceback"):
        print(run["traceback"].rstrip())


def run_options_text(run: dict[str, Any]) -> str:
    """The run options as `statistics on, previews off, store artifacts on` (empty: unknown)."""
    names = (
        ("statistics", "statistics"),
        ("previews", "previews"),
        ("store_artifacts", "store artifacts"),
    )
    known = [(label, run.get(key)) for key, label in names if run.get(key) is not None]
    return ", ".join(f"{label} {'on' if value else 'off'}" for label, value in known)


def resources_text(run: dict[str, Any]) -> str:
    """What the run used: `peak memory 41.2 MiB, CPU 0.31s, wall 0.52s` (parts it measured)."""
    from mainspring.base.units import format_bytes

    parts = []
    if run.get("peak_memory_bytes") is not None:
        parts.append(f"peak memory {format_bytes(run['peak_memory_bytes'])}")
    if run.get("cpu_seconds") is not None:
        parts.append(f"CPU {run['cpu_seconds']:.2f}s")
    if run.get("wall_seconds") is not None:
        parts.append(f"wall {run['wall_seconds']:.2f}s")
    return ", ".join(parts)


def describe_run(brief: dict[str, Any]) -> str:
    """A run in one phrase: `routine #number status (trigger) id`."""
    return (
        f"{brief['routine']} #{brief.get('run_number') or '?'} {brief.get('status', '')} "
        f"({brief.get('trigger_kind') or '-'}) {brief['id']}"
    )


def print_lineage(run: dict[str, Any]) -> None:
    """The run's parent and children: where it came from and what it started."""
    lineage = run.get("lineage") or {}
    parent = lineage.get("parent")
    if parent:
        print(f"{'parent':>14}: {describe_run(parent)}")
    elif run.get("parent_run_id"):
        print(f"{'parent':>14}: {run['parent_run_id']} (not recorded here: an external workflow?)")
    children = lineage.get("children")
    if children is None:
        children = [{"id": c, "routine": "?"} for c in run.get("children") or []]
    for index, child in enumerate(children):
        print(
            f"{'children' if index == 0 else '':>14}{':' if index == 0 else ' '} {describe_run(child)}"
        )
    if run.get("parent_run_id") or children:
        print(f"{'':>14}  whole chain: mainspring runs list --chain {run['id']}")


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


def report_finished(run: dict[str, Any], as_json: bool) -> int:
    """Print a finished run (as JSON or as a record); exit 0 only if it completed."""
    if as_json:
        print(json.dumps(run, indent=2))
    else:
        print_run(run)
    return 0 if run["status"] == "completed" else EXIT_FAILED


async def runs_rerun(client: Any, args: argparse.Namespace) -> int:
    try:
        run_id = await client.rerun(args.id, source="manual")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not args.wait:
        print(run_id)
        return 0
    run = await client.wait(run_id, timeout=args.timeout)
    return report_finished(run, args.json)


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


# --- dead letters --------------------------------------------------------------------------


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


# --- datasets ------------------------------------------------------------------------------


def dataset_command(
    action: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Run a dataset command (it works on the store directly; no services needed)."""

    def command(args: argparse.Namespace) -> int:
        from mainspring.storage.datasets import DatasetError

        try:
            return action(args)
        except DatasetError as exc:
            raise CliError(str(exc)) from None

    return command


def dataset_create(args: argparse.Namespace) -> int:
    from mainspring.storage import datasets

    if (args.schema is None) == (args.from_file is None):
        raise CliError("give exactly one of --schema 'id:int64,text:string' and --from FILE")
    created = datasets.create(args.name, schema=args.schema, data=args.from_file)
    print(
        f"dataset {created.name} created at {created.uri}: version {created.version}, "
        f"{created.rows} rows, columns {', '.join(created.columns)}"
    )
    return 0


def dataset_append(args: argparse.Namespace) -> int:
    from mainspring.storage import datasets

    datasets.info(args.name)  # a missing dataset is the first thing to say
    rows = datasets.read_file(args.file)
    version = datasets.append(args.name, rows)
    print(f"appended {rows.num_rows} rows to {args.name}: version {version}")
    return 0


def dataset_update(args: argparse.Namespace) -> int:
    from mainspring.storage import datasets

    if args.column:
        if not args.from_file or args.set:
            raise CliError(
                "--column COL needs --from FILE (one column, one value per row) and no --set"
            )
        version = datasets.overwrite_column(
            args.name, args.column, datasets.read_file(args.from_file)
        )
        print(f"overwrote column {args.column} of {args.name}: version {version}")
        return 0
    if not args.set:
        raise CliError("give --set column=expression (repeatable) or --column COL --from FILE")
    version = datasets.update(args.name, parse_pairs(args.set, "--set"), args.where)
    print(f"updated {args.name}: version {version}")
    return 0


def dataset_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mainspring.storage import datasets

    found = datasets.list_datasets()
    if args.json:
        print(json.dumps([asdict(d) for d in found], indent=2))
    elif found:
        rows = [{**asdict(d), "columns": ", ".join(d.columns) or d.error} for d in found]
        print(table(rows, ["name", "version", "rows", "columns", "uri"]))
    else:
        print(
            "no datasets: create one with `mainspring dataset create NAME --schema 'id:int64,text:string'`"
        )
    return 0


def dataset_show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mainspring.storage import datasets

    versions = datasets.history(args.name)[: args.limit]
    try:
        about: dict[str, Any] = asdict(datasets.info(args.name))
    except datasets.DatasetError as exc:
        # The log is there but the table does not load (an unreadable version, say): its
        # versions still say which one and why.
        about = {"name": args.name, "error": str(exc)}
    if args.json:
        print(
            json.dumps({**about, "versions": [asdict(v) for v in versions]}, indent=2, default=str)
        )
        return 0
    if "error" in about:
        print(f"dataset {args.name}: {about['error']}\n")
    else:
        print(f"dataset {about['name']}: {about['uri']}")
        print(
            f"version {about['version']}, {about['rows']} rows, "
            f"columns {', '.join(about['columns'])}\n"
        )
    rows = [
        {
            **asdict(v),
            "at": v.at.strftime("%Y-%m-%d %H:%M:%S") if v.at else None,
            "files": f"+{v.added_files} -{v.removed_files}",
            "run_id": v.run_id,
        }
        for v in versions
    ]
    print(
        table(rows, ["version", "at", "operation", "kind", "added_rows", "files", "hop", "run_id"])
    )
    return 0


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from mainspring.apps.cli.instances import add_instance_commands, add_runs_diff_command

    parser = argparse.ArgumentParser(
        prog="mainspring",
        description="Event-driven routines on NATS JetStream.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up", help="start nats-server and all services on this machine (Ctrl-C stops)"
    )
    up.add_argument("--runners", type=int, default=1, help="runner replicas (default 1)")
    up.add_argument(
        "--nats-port",
        type=int,
        default=None,
        help="port of the embedded nats-server (default: a free one)",
    )
    up.add_argument(
        "--web-port", type=int, default=8765, help="port of the web page (0: no web page)"
    )
    up.add_argument(
        "--detach",
        action="store_true",
        help="run in the background, output in HOME/logs/up.log; `mainspring down` stops it",
    )
    up.add_argument(
        "--start-timeout",
        type=float,
        default=60.0,
        help="with --detach: seconds to wait for the system to come up (default 60)",
    )
    up.set_defaults(func=cmd_up)
    add_supervisor_commands(commands)

    setup = commands.add_parser(
        "setup",
        help="declare the stream and buckets on MAINSPRING_NATS_URL (`up` does it; as admin)",
    )
    setup.set_defaults(func=cmd_setup)

    service = commands.add_parser(
        "service", help="run one service alone against MAINSPRING_NATS_URL"
    )
    service.add_argument(
        "name", choices=["ticker", "dataset_watcher", "dispatcher", "runner", "recorder"]
    )
    service.set_defaults(func=cmd_service)

    web = commands.add_parser(
        "web", help="serve the web page: routines and runs, live, with run/cancel buttons"
    )
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8765)
    web.set_defaults(func=cmd_web)

    demo = commands.add_parser(
        "demo", help="bring the system up, run the example routines, show their runs"
    )
    demo.add_argument("--keep-up", action="store_true", help="stay up after the demo until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

    dev = commands.add_parser(
        "dev",
        help="register the routines in DIR and re-register on each edit, printing each run",
    )
    dev.add_argument("dir", help="folder holding the routine's .py files")
    dev.add_argument(
        "--name", default=None, help="routine name (default: the folder's name; one routine)"
    )
    dev.add_argument(
        "--poll", type=float, default=0.5, help="seconds between looks at the files (default 0.5)"
    )
    dev.set_defaults(func=cmd_dev)

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

    add_dataset_commands(commands)
    add_instance_commands(commands)
    add_runs_diff_command(runs_actions)

    publish = commands.add_parser(
        "publish",
        help="publish an external event: dataset.appended or external.completed.<workflow>.<status>",
    )
    publish.add_argument("subject")
    publish.add_argument("json_body", metavar="JSON")
    publish.add_argument("--msg-id", default=None, help="Nats-Msg-Id for deduplication")
    publish.set_defaults(func=with_client(publish_event))
    add_deadletter_commands(commands)
    return parser


def add_dataset_commands(commands: Any) -> None:
    """`mainspring dataset create|append|update|list|show`."""
    dataset = commands.add_parser("dataset", help="create, append to, update and inspect datasets")
    actions = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a dataset (a Delta Lake table)")
    create.add_argument("name")
    create.add_argument("--schema", help="columns as name:type, e.g. 'id:int64,text:string'")
    create.add_argument(
        "--from", dest="from_file", metavar="FILE", help="initial rows (.parquet, .csv, .jsonl)"
    )
    create.set_defaults(func=dataset_command(dataset_create))
    append = actions.add_parser("append", help="append the rows of a .parquet, .csv or .jsonl file")
    append.add_argument("name")
    append.add_argument("file")
    append.set_defaults(func=dataset_command(dataset_append))
    update = actions.add_parser(
        "update", help="update rows (SQL expressions) or overwrite a column; never fires routines"
    )
    update.add_argument("name")
    update.add_argument(
        "--set", action="append", metavar="COL=EXPR", help="e.g. --set 'text=upper(text)'"
    )
    update.add_argument("--where", default=None, help="SQL predicate, e.g. 'id > 10'")
    update.add_argument("--column", default=None, help="overwrite this column with --from FILE")
    update.add_argument(
        "--from", dest="from_file", metavar="FILE", help="one column, one value per row"
    )
    update.set_defaults(func=dataset_command(dataset_update))
    listing = actions.add_parser("list", help="datasets under the dataset root")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=dataset_command(dataset_list))
    show = actions.add_parser("show", help="a dataset's versions: operation, kind, rows added")
    show.add_argument("name")
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=dataset_command(dataset_show))


def add_supervisor_commands(commands: Any) -> None:
    """`mainspring status|down|logs`: look after a system started by `up`."""
    status = commands.add_parser(
        "status", help="every part of the system `up` runs: pid, uptime, restarts, readiness"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    down = commands.add_parser("down", help="stop the system `up` runs in this home")
    down.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a graceful stop before killing (default 30)",
    )
    down.set_defaults(func=cmd_down)
    logs = commands.add_parser("logs", help="the logs of the services `up` runs")
    logs.add_argument(
        "service", nargs="?", help="one part (e.g. dispatcher, runner, nats-server); default all"
    )
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "--lines", "-n", type=int, default=50, help="lines to show first (default 50)"
    )
    logs.set_defaults(func=cmd_logs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mainspring` command."""
    from nats.js.errors import NoStreamResponseError

    from mainspring.base.schedules import ScheduleError
    from mainspring.runtime.bus import BusError
    from mainspring.sdk.bundle import BundleError
    from mainspring.sdk.routine import ContractError, InputError
    from mainspring.storage.registry import RegistryError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (
        CliError,
        ContractError,
        InputError,
        BundleError,
        RegistryError,
        ScheduleError,
        ConfigError,
    ) as exc:
        print(f"mainspring: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoStreamResponseError:
        print(
            "mainspring: error: the bus has no stream for this subject: run `mainspring setup`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (BusError, TimeoutError, ConnectionError, RuntimeError) as exc:
        print(f"mainspring: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
