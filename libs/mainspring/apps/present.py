"""How runs, routines and times read on a terminal and the web page: shared by the CLI, `web` and the demo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mainspring.base.units import format_bytes


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


def print_status(status: dict[str, Any]) -> None:
    """The status of every part as a table, with where the system lives above it."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not status.get("parts"):
        console.print(f"mainspring is not up in {status['home']}: start it with `mainspring up`")
        print_runners(console, status)
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
    for line in storage_lines(status.get("streams") or []):
        console.print(line)
    print_runners(console, status)


def print_runners(console: Any, status: dict[str, Any]) -> None:
    """The live runners as a table (or why they are unknown), when status read the bus."""
    from rich.table import Table

    if status.get("runners_problem"):
        console.print(status["runners_problem"])
        return
    if "runners" not in status:
        return
    runners = status["runners"]
    if not runners:
        console.print("runners   none live (a run waits until one starts)")
        return
    grid = Table(box=None, header_style="bold")
    for column in ("runner", "host", "slots busy", "memory available", "refreshed"):
        grid.add_column(column.upper())
    for runner in runners:
        grid.add_row(
            str(runner["instance"]),
            str(runner["host"]),
            f"{runner['busy']}/{runner['slots']}",
            f"{format_bytes(runner['memory_available'])} of {format_bytes(runner['memory_total'])}",
            f"{format_seconds(runner['refreshed_s'])} ago",
        )
    console.print(grid)


def storage_lines(streams: list[dict[str, Any]]) -> list[str]:
    """One line per stream and bucket: messages and bytes held, and the byte limit."""
    width = max((len(s["name"]) for s in streams), default=0)
    return [
        f"{s['name']:<{width}}  {s['messages']:,} messages, {format_bytes(s['bytes'])}"
        f" of {format_bytes(s['max_bytes']) if s['max_bytes'] else 'no limit'}"
        for s in streams
    ]


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


def next_fire_text(definition: Any) -> str | None:
    """When a timed trigger fires next (None for other triggers or when disabled)."""

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


def node_table_lines(dag: dict[str, Any]) -> list[str]:
    """A DAG run's node table and edges as lines for `runs show`."""
    rows = []
    for node in dag.get("nodes") or []:
        output = node.get("output") if node.get("output_kept") == "json" else None
        shown = json.dumps(output) if output is not None else node.get("output_preview") or ""
        rows.append(
            {
                "node": node["label"],
                "status": node["status"],
                "started": (node.get("started_at") or "")[11:23],
                "finished": (node.get("finished_at") or "")[11:23],
                "output": shown if len(shown) <= 60 else shown[:57] + "...",
                "kept": node.get("output_kept") or "",
                "error": node.get("error") or "",
            }
        )
    columns = ["node", "status", "started", "finished", "output", "kept", "error"]
    edges = ", ".join(f"{a} >> {b}" for a, b in dag.get("edges") or [])
    head = f"DAG {dag.get('nsref')} {dag.get('status')}"
    if dag.get("resumed_from"):
        head += f" ({dag.get('mode')} of {dag['resumed_from']})"
    return [head, table(rows, columns), f"edges: {edges or 'none'}"]


def print_node_table(run: dict[str, Any]) -> None:
    """A DAG run's node table and edges (nothing for a routine's run)."""
    if run.get("dag"):
        print("\n".join(node_table_lines(run["dag"])))


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
        "priority",
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
    print_node_table(run)
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
