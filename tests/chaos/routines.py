"""The chaos suite's routines: each writes one line per execution to a file outside the system."""

from __future__ import annotations

from pathlib import Path

from tests.harness import write_routine

# Written with one O_APPEND write: lines of several worker processes never interleave.
EFFECT = """
import json
import os
import time
import uuid

OUT = {out!r}


def effect(kind, keys, run_id, started):
    exec_id = uuid.uuid4().hex
    line = json.dumps(
        {{"kind": kind, "keys": keys, "run": run_id, "exec": exec_id,
          "start": started, "end": time.time()}}
    ) + "\\n"
    fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return {{"exec": exec_id}}
"""

TICK = """
import time
from mainspring import Routine, on_schedule


class Tick(Routine):
    retries = 3

    def run(self, tick=on_schedule(every="1s", catchup="all", catchup_window="10m", overlap="allow")):
        started = time.time()
        return effect("tick", [tick.scheduled_at.isoformat()], self.run_info.id, started)
"""

MANUAL = """
import time
from mainspring import Routine, on_schedule


class Manual(Routine):
    retries = 3

    def run(self, tick=on_schedule(cron="0 0 29 2 *"), key: str = ""):
        started = time.time()
        return effect("manual", [key], self.run_info.id, started)
"""

CHAINED = """
import time
from mainspring import Routine, on_workflow_success


class Chained(Routine):
    retries = 3

    def run(self, upstream=on_workflow_success("manual")):
        started = time.time()
        return effect("completion", [upstream.run_id], self.run_info.id, started)
"""

ROWS = """
import time
from mainspring import Routine, on_dataset_append


class Rows(Routine):
    retries = 3

    def run(self, new_rows=on_dataset_append("events")):
        started = time.time()
        keys = [str(v) for batch in new_rows.added_rows() for v in batch.column(0).to_pylist()]
        return effect("append", keys, self.run_info.id, started)
"""

SOURCES = {"tick": TICK, "manual": MANUAL, "after": CHAINED, "rows": ROWS}


def routine_folder(root: Path, name: str, effect_file: Path) -> Path:
    """A routine's folder: its trigger and the shared side-effect writer in one file."""
    return write_routine(root / name, EFFECT.format(out=str(effect_file)) + SOURCES[name])
