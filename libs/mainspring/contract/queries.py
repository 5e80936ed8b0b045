"""What a runs listing asks for: a plain model, so the SDK and CLI need no database library."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class RunQuery(BaseModel):
    """Filters for listing runs (CLI, SDK and the recorder's API share it)."""

    routine: str | None = None
    status: str | None = None
    label: str | None = None
    attribute: dict[str, Any] | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    chain: str | None = None
    # Parts of the run's name or description (case-insensitive).
    name: str | None = None
    description: str | None = None
    limit: int = Field(default=50, ge=0)
    # Continue after this run: the `next` cursor of the previous page.
    after: str | None = None


class RunLookup(BaseModel):
    """One run asked for by id (`api.runs.get`)."""

    run_id: str


class TriggerEventsQuery(BaseModel):
    """A routine's latest trigger firings, or a named trigger's (`api.trigger.events`)."""

    routine: str
    limit: int = Field(default=50, ge=0)
    # A named trigger: its own firings, whatever routine they started.
    trigger: str | None = None
