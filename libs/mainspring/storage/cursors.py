"""Per-routine dataset cursors in the dispatch bucket: where a dataset routine last fired.

The dispatcher owns them and is their only writer. A new routine's cursor starts where
`routine create` found the dataset (`RoutineDefinition.dataset_start`), so rows that existed
before the routine do not fire it.
"""

from __future__ import annotations

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from mainspring.base import kv


class DatasetCursor(BaseModel):
    """Rows in (fired_version, seen_version] are announced but not yet fired (the pending range)."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    fired_version: int = Field(ge=-1)
    seen_version: int = Field(ge=-1)
    pending_records: int = Field(default=0, ge=0)
    pending_hop: int = Field(default=0, ge=0)
    pending_parent_run_id: str | None = None
    # Table rows at fired_version (from the commit log), the base of added_fraction.
    base_records: int | None = None
    # The table the versions belong to (its metaData.id), once an announcement named it.
    table_id: str | None = None


def cursor_key(routine: str) -> str:
    """The dispatch-bucket key of a routine's cursor."""
    return f"cursor.{kv.key_token(routine)}"


async def load_cursor(bucket: KeyValue, routine: str) -> tuple[DatasetCursor | None, int]:
    """A routine's cursor and its KV revision (0 when there is none)."""
    value, revision = await kv.read(bucket, cursor_key(routine))
    if value is None:
        return None, 0
    return DatasetCursor.model_validate_json(value), revision


async def save_cursor(bucket: KeyValue, routine: str, cursor: DatasetCursor, revision: int) -> bool:
    """Compare-and-set: True when written, False when someone else wrote first."""
    data = cursor.model_dump_json().encode()
    return await kv.write_if_unchanged(bucket, cursor_key(routine), data, revision) is not None
