"""Trigger specs (what users write as run() defaults) and the events a fired trigger delivers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mainspring.base.schedules import (
    DstRepeat,
    ScheduleError,
    check_cron,
    check_dst_repeat,
    check_offset,
    every_tz_warning,
    parse_every,
    parse_tz,
)

if TYPE_CHECKING:
    import pyarrow as pa

CatchUp = Literal["latest", "skip", "all"]
Overlap = Literal["allow", "skip", "buffer_one", "cancel_previous"]
CompletionStatus = Literal["any", "completed", "failed", "cancelled"]


class TriggerSpec(BaseModel):
    """Base of all triggers; stored in the routine registry as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TimedSpec(TriggerSpec):
    """Fields shared by schedule and poll triggers."""

    cron: str | None = None
    every: str | None = None
    # The phase of an `every` grid on tz's wall clock; None: the Unix epoch grid, tz ignored.
    offset: str | None = None
    tz: str = "UTC"
    catchup: CatchUp = "latest"
    catchup_window: str | None = None
    overlap: Overlap = "skip"
    dst_repeat: DstRepeat = "first"

    def check_timing(self) -> None:
        """Exactly one of cron/every, each valid; a known tz; dst_repeat only for fixed times."""
        if (self.cron is None) == (self.every is None):
            raise ScheduleError("give exactly one of cron= and every=, e.g. every='1m'")
        if self.cron is not None:
            check_cron(self.cron)
        if self.every is not None:
            parse_every(self.every)
        if self.catchup_window is not None:
            parse_every(self.catchup_window)
        parse_tz(self.tz)
        check_dst_repeat(self.dst_repeat, self.cron, self.every)
        check_offset(self.offset, self.cron, self.every)

    def timing_warning(self) -> str | None:
        """A doubt about the timing worth saying at registration (None: none)."""
        return every_tz_warning(self.every, self.tz, self.offset)


class ScheduleTrigger(TimedSpec):
    """Fires on a cron expression or a fixed interval."""

    kind: Literal["schedule"] = "schedule"


class PollTrigger(TimedSpec):
    """On each tick runs `fn` (module:qualname in the bundle); a dict fires, None skips."""

    kind: Literal["poll"] = "poll"
    fn: str
    timeout_s: float = 60.0


class DatasetAppendTrigger(TriggerSpec):
    """Fires when rows are appended to a dataset."""

    kind: Literal["dataset"] = "dataset"
    dataset: str
    batch_rows: int | None = Field(default=None, ge=1)
    added_fraction: float | None = Field(default=None, gt=0.0)
    # Also fire on MERGEs that only inserted rows (never appends by default: a merge may
    # re-insert rows that were deleted, and upserts are not new data to most routines).
    merge_inserts: bool = False


class CompletionTrigger(TriggerSpec):
    """Fires when a run of another routine (or external workflow) finishes."""

    kind: Literal["completion"] = "completion"
    routine: str
    status: CompletionStatus = "any"


class ManualTrigger(TriggerSpec):
    """Fires only when asked (`mainspring dag run`, the SDK): a DAG's own registry entry."""

    kind: Literal["manual"] = "manual"


AnyTrigger = (
    ScheduleTrigger | PollTrigger | DatasetAppendTrigger | CompletionTrigger | ManualTrigger
)


def on_schedule(
    cron: str | None = None,
    every: str | None = None,
    tz: str = "UTC",
    catchup: CatchUp = "latest",
    catchup_window: str | None = None,
    overlap: Overlap = "skip",
    dst_repeat: DstRepeat = "first",
    offset: str | None = None,
) -> Any:
    """Fire on a cron (5 fields, or 6 with seconds first) or an interval like '10s', '1h30m'
    (with offset=, at that phase of the interval on tz's clock: every='1d', offset='9h')."""
    check_dst_repeat(dst_repeat, cron, every)  # before the model, for a one-line error
    spec = ScheduleTrigger(
        cron=cron,
        every=every,
        offset=offset,
        tz=tz,
        catchup=catchup,
        catchup_window=catchup_window,
        overlap=overlap,
        dst_repeat=dst_repeat,
    )
    spec.check_timing()
    return spec


def on_poll(
    fn: Callable[[], dict[str, Any] | None],
    cron: str | None = None,
    every: str | None = None,
    tz: str = "UTC",
    timeout_s: float = 60.0,
    overlap: Overlap = "skip",
    catchup: CatchUp = "latest",
    catchup_window: str | None = None,
    dst_repeat: DstRepeat = "first",
    offset: str | None = None,
) -> Any:
    """Run `fn()` on each tick: a dict fires the routine with its keys as inputs, None skips."""
    qualname = getattr(fn, "__qualname__", "")
    if "<" in qualname or not getattr(fn, "__module__", None):
        raise ScheduleError("on_poll(fn): fn must be a module-level function, not a lambda")
    check_dst_repeat(dst_repeat, cron, every)
    spec = PollTrigger(
        fn=f"{fn.__module__}:{qualname}",
        cron=cron,
        every=every,
        offset=offset,
        tz=tz,
        timeout_s=timeout_s,
        overlap=overlap,
        catchup=catchup,
        catchup_window=catchup_window,
        dst_repeat=dst_repeat,
    )
    spec.check_timing()
    return spec


def on_dataset_append(
    dataset: str,
    batch_rows: int | None = None,
    added_fraction: float | None = None,
    merge_inserts: bool = False,
) -> Any:
    """Fire when rows are appended to `dataset` (optionally only past a threshold; with
    merge_inserts, also when a MERGE only inserted rows)."""
    return DatasetAppendTrigger(
        dataset=dataset,
        batch_rows=batch_rows,
        added_fraction=added_fraction,
        merge_inserts=merge_inserts,
    )


def on_complete(name: str, status: CompletionStatus = "any") -> Any:
    """Fire when a run of routine or workflow `name` ends with `status`."""
    return CompletionTrigger(routine=name, status=status)


def on_workflow_success(name: str) -> Any:
    """Fire when a run of `name` completes."""
    return CompletionTrigger(routine=name, status="completed")


def on_workflow_failure(name: str) -> Any:
    """Fire when a run of `name` fails."""
    return CompletionTrigger(routine=name, status="failed")


class ScheduleEvent(BaseModel):
    """Delivered to a schedule-triggered run."""

    model_config = ConfigDict(frozen=True)
    scheduled_at: datetime
    fired_at: datetime

    @classmethod
    def at(cls, scheduled_at: datetime, fired_at: datetime | None = None) -> ScheduleEvent:
        """The event of a tick at `scheduled_at` (a naive time is UTC), for tests."""
        nominal = _aware(scheduled_at)
        return cls(scheduled_at=nominal, fired_at=_aware(fired_at) if fired_at else nominal)


class CompletionEvent(BaseModel):
    """Delivered to a completion-triggered run: the upstream run's result."""

    model_config = ConfigDict(frozen=True)
    routine: str
    run_id: str
    run_number: int
    status: str
    outputs: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        routine: str,
        outputs: dict[str, Any] | None = None,
        status: str = "completed",
        *,
        run_id: str | None = None,
        run_number: int = 1,
        artifacts: list[dict[str, Any]] | None = None,
    ) -> CompletionEvent:
        """The event of a finished run of `routine`, for tests."""
        return cls(
            routine=routine,
            run_id=run_id or f"{routine}-run-{run_number}",
            run_number=run_number,
            status=status,
            outputs=outputs or {},
            artifacts=artifacts or [],
        )


class PollEvent(BaseModel):
    """Delivered to a poll-triggered run: what the poll function returned."""

    model_config = ConfigDict(frozen=True)
    scheduled_at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def with_payload(
        cls, payload: dict[str, Any] | None = None, scheduled_at: datetime | None = None
    ) -> PollEvent:
        """The event of a poll that returned `payload` (at `scheduled_at`, default now), for tests."""
        return cls(scheduled_at=_aware(scheduled_at or datetime.now(UTC)), payload=payload or {})


class ManualEvent(BaseModel):
    """Delivered to the trigger parameter of a run started by hand (CLI, SDK, API)."""

    model_config = ConfigDict(frozen=True)
    requested_by: str | None = None
    request_id: str = ""


class DatasetEvent:
    """The rows appended to a dataset in versions (from_version, to_version].

    Iterating yields pyarrow RecordBatches of only those rows, streamed from the added
    files so memory stays bounded however large the range.
    """

    def __init__(
        self,
        dataset: str,
        from_version: int,
        to_version: int,
        added_records: int,
        batches: Callable[[int], Iterator[pa.RecordBatch]],
        batch_size: int = 1024,
    ) -> None:
        self.dataset = dataset
        self.from_version = from_version
        self.to_version = to_version
        self.added_records = added_records
        self.batch_size = batch_size
        self._batches = batches

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self._batches(self.batch_size)

    def added_rows(self) -> list[pa.RecordBatch]:
        """The appended rows as record batches, as iterating the event gives them.

        They are read into memory at once; iterate the event itself to stream them.
        """
        return list(self)

    @classmethod
    def from_table(
        cls,
        data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
        from_version: int = 0,
        to_version: int | None = None,
        *,
        dataset: str = "",
        batch_size: int = 1024,
    ) -> DatasetEvent:
        """The event of appending `data` in versions (from_version, to_version], for tests.

        Iterating it yields batches of `batch_size` rows, as a fired event's do. `dataset`
        left empty becomes the routine's trigger dataset when the event is fired.
        """
        import pyarrow as pa

        if isinstance(data, pa.RecordBatch):
            table = pa.Table.from_batches([data])
        elif isinstance(data, pa.Table):
            table = data
        else:
            table = pa.Table.from_batches(list(data))
        end = from_version + 1 if to_version is None else to_version
        if from_version >= end:
            raise ValueError(
                f"from_version {from_version} must be below to_version {end}: "
                "the range (from_version, to_version] holds the appended versions"
            )
        rows = table.combine_chunks()

        def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
            return iter(rows.to_batches(max_chunksize=max(1, batch_rows)))

        return cls(dataset, from_version, end, rows.num_rows, batches, batch_size)

    def replace(self, *, dataset: str | None = None, batch_size: int | None = None) -> DatasetEvent:
        """The same rows under another dataset name or batch size."""
        return DatasetEvent(
            dataset if dataset is not None else self.dataset,
            self.from_version,
            self.to_version,
            self.added_records,
            self._batches,
            batch_size if batch_size is not None else self.batch_size,
        )

    def __repr__(self) -> str:
        return (
            f"DatasetEvent({self.dataset!r}, versions ({self.from_version}, {self.to_version}], "
            f"{self.added_records} rows)"
        )


def _aware(moment: datetime) -> datetime:
    # Fired events carry UTC times; a test's naive datetime means UTC, not the machine's zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
