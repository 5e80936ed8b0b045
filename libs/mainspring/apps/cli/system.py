"""`mainspring up | down | status | logs | service | setup | web | demo | dev`: the system on this machine."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mainspring.apps.cli.common import EXIT_FAILED, CliError, with_client
from mainspring.apps.present import print_status
from mainspring.base import credentials
from mainspring.base.credentials import redacted
from mainspring.base.settings import Settings


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
    from datetime import UTC, datetime

    from mainspring.apps.status import collect_status, everything_ready, runner_status

    settings = Settings()
    status = collect_status(settings)
    status |= runner_status(settings, datetime.now(UTC), up_running=bool(status.get("up")))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print_status(status)
    return 0 if everything_ready(status) else EXIT_FAILED


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
    admin = credentials.path_of(settings.home, "admin")
    if not settings.nats_url and not settings.nats_credentials and admin.exists():
        # Declaring is the admin's step: on a machine running `mainspring up`, its admin.
        settings = settings.model_copy(update={"nats_credentials": str(admin)})
    changed = set_up_now(settings)
    for line in changed:
        print(line)
    print(
        f"the bus at {redacted(settings.resolved_nats_url())} is set up"
        + ("" if changed else " (unchanged)")
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


def add_system_commands(commands: Any) -> None:
    """`up`, `status`, `down`, `logs`, `setup`, `service`, `web`, `demo`, `dev`."""
    up = commands.add_parser(
        "up",
        help="start nats-server (users and passwords on, generated into HOME/credentials; TLS "
        "with MAINSPRING_NATS_TLS_CERT/KEY) and all services on this machine (Ctrl-C stops)",
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

    add_supervisor_commands(commands)
