"""Keeping a DAG node's output so a later run can restart or replay from it.

An output that round-trips through JSON and is small is kept inline in the node table (the
run record); a larger one, or one JSON cannot hold (a tuple, a dataclass, a DataFrame), is
pickled into the run's folder of the artifact store, up to a size cap; above the cap it is not
kept and the node table says why, so a restart that needs it is refused with that reason.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Any, Protocol

# Inline JSON in the run record: the record travels in one bus message (and one KV value,
# the settled outcome), so each node's share stays small and all nodes together stay well
# below the bus's 1 MiB payload; past either, an output goes to the artifact store.
INLINE_JSON_BYTES = 16 * 1024
INLINE_RUN_BUDGET_BYTES = 256 * 1024
# A pickled output above this is not kept (a restart from it is refused, saying so).
ARTIFACT_CAP_BYTES = 64 * 1024 * 1024
PREVIEW_CHARS = 200


@dataclass(frozen=True)
class KeptOutput:
    """How one output was kept: its DagNodeRecord fields."""

    kept: str
    output: Any = None
    uri: str | None = None
    preview: str | None = None
    note: str | None = None

    def fields(self) -> dict[str, Any]:
        """The node-record fields this sets."""
        return {
            "output_kept": self.kept,
            "output": self.output,
            "output_uri": self.uri,
            "output_preview": self.preview,
            "output_note": self.note,
        }


def preview(value: Any) -> str:
    """A short repr of a value for the node table."""
    text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def small_json(value: Any, cap: int = INLINE_JSON_BYTES) -> tuple[bool, Any]:
    """(True, value) when the value survives a JSON round trip unchanged and is small."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return False, None
    if len(text) > cap:
        return False, None
    try:
        same = json.loads(text) == value
    except Exception:  # noqa: BLE001 - a value whose __eq__ raises is not plain data
        return False, None
    return same, value if same else None


class OutputStore(Protocol):
    """Where node outputs are kept and read back."""

    def keep(self, label: str, value: Any) -> KeptOutput:
        """Keep one node's output; say how."""
        ...

    def load(self, uri: str) -> Any:
        """Read back an output kept as an artifact."""
        ...


class InlineOutputs:
    """Keeps small JSON outputs only (no artifact store: a local run, a test)."""

    def __init__(self, budget_bytes: int = INLINE_RUN_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes

    def inline(self, value: Any) -> tuple[bool, Any]:
        """Small JSON within what is left of this run's inline budget (which it then uses)."""
        ok, data = small_json(value)
        if not ok:
            return False, None
        size = len(json.dumps(data))
        if size > self.budget_bytes:
            return False, None
        self.budget_bytes -= size
        return True, data

    def keep(self, label: str, value: Any) -> KeptOutput:
        """Inline when small JSON, else not kept."""
        ok, data = self.inline(value)
        if ok:
            return KeptOutput("json", output=data)
        return KeptOutput(
            "none",
            preview=preview(value),
            note="not small JSON and no artifact store to keep it in",
        )

    def load(self, uri: str) -> Any:
        """Nothing is kept as an artifact here."""
        raise LookupError(f"output {uri} cannot be read: no artifact store")


class ArtifactOutputs(InlineOutputs):
    """Small JSON inline; anything else pickled to runs/<id>/nodes/<label>.pickle."""

    def __init__(self, root: str, run_id: str, cap_bytes: int = ARTIFACT_CAP_BYTES) -> None:
        super().__init__()
        self.root = root
        self.run_id = run_id
        self.cap_bytes = cap_bytes

    def keep(self, label: str, value: Any) -> KeptOutput:
        """Inline when small JSON, else a pickle file up to the cap."""
        ok, data = self.inline(value)
        if ok:
            return KeptOutput("json", output=data)
        shown = preview(value)
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - any value may refuse to pickle
            return KeptOutput(
                "none", preview=shown, note=f"cannot be pickled ({type(exc).__name__}: {exc})"
            )
        if len(blob) > self.cap_bytes:
            return KeptOutput(
                "none",
                preview=shown,
                note=f"{len(blob)} bytes pickled, over the {self.cap_bytes}-byte cap",
            )
        from mainspring.storage.artifacts import run_folder

        fs, folder = run_folder(self.root, self.run_id)
        path = f"{folder}/nodes/{label}.pickle"
        fs.create_dir(f"{folder}/nodes", recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(blob)
        return KeptOutput("artifact", uri=path, preview=shown)

    def load(self, uri: str) -> Any:
        """Unpickle an output this store kept (for a restart or replay of its run)."""
        from mainspring.storage.artifacts import run_folder

        fs, _ = run_folder(self.root, self.run_id)
        with fs.open_input_stream(uri) as stream:
            return pickle.loads(stream.read())
