"""Comparing two runs side by side: what they were given, how they ran, what they made.

`compare_runs` is pure (two recorded runs and their artifacts' statistics in, rows out);
`artifact_statistics` reads the statistics a run saved with its artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# What identifies a run and how it ended, in the order shown.
_RUN_FIELDS = (
    ("routine", "blueprint"),
    ("version", "routine_version"),
    ("instance", "instance"),
    ("method", "method"),
    ("status", "status"),
    ("source", "source"),
    ("run number", "run_number"),
    ("execution", "execution"),
    ("error", "error"),
)
_RESOURCE_FIELDS = (
    ("peak memory bytes", "peak_memory_bytes"),
    ("cpu seconds", "cpu_seconds"),
    ("wall seconds", "wall_seconds"),
)
_ARTIFACT_FIELDS = ("kind", "rows", "size_bytes")


@dataclass(frozen=True)
class DiffRow:
    """One compared value: its section, its name, and each run's value (None: absent)."""

    section: str
    field: str
    left: Any
    right: Any

    @property
    def differs(self) -> bool:
        """The two runs disagree here."""
        return bool(self.left != self.right)

    def as_json(self) -> dict[str, Any]:
        """The row as the CLI's and the web's JSON give it."""
        return {
            "section": self.section,
            "field": self.field,
            "a": self.left,
            "b": self.right,
            "differs": self.differs,
        }


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def _durations(run: dict[str, Any]) -> dict[str, float | None]:
    return {
        "waited (created to started)": _seconds_between(
            run.get("created_at"), run.get("started_at")
        ),
        "ran (started to finished)": _seconds_between(
            run.get("started_at"), run.get("finished_at")
        ),
    }


def _keyed(section: str, left: dict[str, Any], right: dict[str, Any]) -> list[DiffRow]:
    """Rows for every key either side has, in the first run's order then the second's."""
    keys = list(left) + [k for k in right if k not in left]
    return [DiffRow(section, key, left.get(key), right.get(key)) for key in keys]


def _version(run: dict[str, Any]) -> str | None:
    version = run.get("routine_version")
    return version[:12] if version else None


def _artifacts(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in run.get("artifacts") or []}


def _flat_statistics(statistics: dict[str, Any] | None) -> dict[str, Any]:
    """`{"score": {"mean": 2.0}}` as `{"score.mean": 2.0}`: one row per column and measure."""
    flat: dict[str, Any] = {}
    for column, measures in (statistics or {}).items():
        for measure, value in (measures or {}).items():
            flat[f"{column}.{measure}"] = value
    return flat


def compare_runs(
    left: dict[str, Any],
    right: dict[str, Any],
    left_statistics: dict[str, dict[str, Any]] | None = None,
    right_statistics: dict[str, dict[str, Any]] | None = None,
) -> list[DiffRow]:
    """Two recorded runs side by side: identity and status, inputs, configuration, outputs,
    durations, resources used, and each artifact with its statistics (by artifact name)."""
    rows: list[DiffRow] = []
    for label, key in _RUN_FIELDS:
        value_left, value_right = left.get(key), right.get(key)
        if key == "routine_version":
            value_left, value_right = _version(left), _version(right)
        elif key in ("blueprint", "instance"):
            # Runs recorded before instances name their routine only.
            value_left = value_left or left.get("routine")
            value_right = value_right or right.get("routine")
        elif key == "method":
            value_left, value_right = value_left or "run", value_right or "run"
        rows.append(DiffRow("run", label, value_left, value_right))
    for section in ("inputs", "configuration", "outputs"):
        rows += _keyed(section, left.get(section) or {}, right.get(section) or {})
    rows += _keyed("durations", _durations(left), _durations(right))
    rows += [
        DiffRow("resources", label, left.get(key), right.get(key))
        for label, key in _RESOURCE_FIELDS
    ]
    artifacts_left, artifacts_right = _artifacts(left), _artifacts(right)
    for name in list(artifacts_left) + [n for n in artifacts_right if n not in artifacts_left]:
        a, b = artifacts_left.get(name) or {}, artifacts_right.get(name) or {}
        section = f"artifact {name}"
        rows.append(DiffRow(section, "saved", name in artifacts_left, name in artifacts_right))
        rows += [DiffRow(section, key, a.get(key), b.get(key)) for key in _ARTIFACT_FIELDS]
        rows += _keyed(
            section,
            _flat_statistics((left_statistics or {}).get(name)),
            _flat_statistics((right_statistics or {}).get(name)),
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value)
    return str(value)


def render_diff(rows: list[DiffRow], left_id: str, right_id: str, only_differences: bool) -> str:
    """The rows as a text table under section headings; `*` marks a difference."""
    shown = [row for row in rows if row.differs or not only_differences]
    if not shown:
        return f"runs {left_id} and {right_id} do not differ"
    width_field = max(len(row.field) for row in shown)
    width_left = max([len(left_id), *(len(_cell(row.left)) for row in shown)])
    lines = [f"  {'':<{width_field}}  {left_id:<{width_left}}  {right_id}"]
    section = None
    for row in shown:
        if row.section != section:
            section = row.section
            lines.append(f"{section}:")
        mark = "*" if row.differs else " "
        lines.append(
            f"{mark} {row.field:<{width_field}}  {_cell(row.left):<{width_left}}  "
            f"{_cell(row.right)}".rstrip()
        )
    differences = sum(row.differs for row in rows)
    lines.append(f"{differences} difference{'s' if differences != 1 else ''} (marked *)")
    return "\n".join(lines)


def artifact_statistics(root: str, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The statistics each of a run's artifacts was saved with (runs started with
    --statistics), by artifact name; artifacts without any are left out."""
    from pyarrow import fs as pafs

    from mainspring.storage.artifacts import artifact_dir

    found: dict[str, dict[str, Any]] = {}
    for item in run.get("artifacts") or []:
        filesystem, folder = artifact_dir(root, run["id"], item["name"])
        path = f"{folder}/statistics.json"
        if filesystem.get_file_info(path).type != pafs.FileType.File:
            continue
        with filesystem.open_input_stream(path) as stream:
            found[item["name"]] = json.loads(stream.read())
    return found
