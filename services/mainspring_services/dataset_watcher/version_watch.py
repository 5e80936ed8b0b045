"""Dataset watcher: notice each committed version, classify it, announce the appends once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from deltalake import DeltaTable
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from mainspring.contract import subjects
from mainspring.contract.messages import DatasetVersionsUnreadable
from mainspring.runtime.service import publish_event
from mainspring.storage import datasets, deltalog
from mainspring_services.dataset_watcher import core
from mainspring_services.dataset_watcher.settings import WatcherSettings

log = logging.getLogger("mainspring.dataset_watcher")

UNREADABLE_SUBJECT = subjects.dead_letter_subject(subjects.DATASET_APPENDED)


def seen_key(dataset: str) -> str:
    """The watcher-bucket key of a dataset's last processed version."""
    return f"seen.{dataset}"


def table_key(dataset: str) -> str:
    """The watcher-bucket key of the table (metaData.id) whose versions `seen` counts."""
    return f"table.{dataset}"


class Watcher:
    """Follows every dataset's commit log and publishes `dataset.appended` for appends."""

    def __init__(self, broker: NatsBroker, settings: WatcherSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.root = settings.resolved_dataset_root()
        self.fs, self.base = deltalog.filesystem(self.root)
        self.kv: KeyValue | None = None
        self.seen: dict[str, int] = {}
        # The table (metaData.id) each dataset's seen version belongs to, as in the bucket.
        self.table_ids: dict[str, str | None] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.tables: dict[str, DeltaTable] = {}
        # Footer row counts of files without stats: a data file never changes once written.
        self.footer_records: dict[str, dict[str, int]] = {}
        # Each dataset's (version, rows) last counted, to add an append's rows to.
        self.row_totals: dict[str, tuple[int, int]] = {}

    async def last_seen(self, dataset: str) -> int:
        """The last version processed (survives restarts); -1 for a dataset never seen, so
        every version committed before the watcher first looked is still announced."""
        if dataset not in self.seen:
            assert self.kv is not None
            try:
                entry = await self.kv.get(seen_key(dataset))
                self.seen[dataset] = int(entry.value or b"-1")
            except (KeyNotFoundError, NotFoundError):
                self.seen[dataset] = -1
        return self.seen[dataset]

    async def follow_table(self, dataset: str, identity: str | None) -> None:
        """Start again from version 0 when the dataset was deleted and created again."""
        assert self.kv is not None
        if dataset not in self.table_ids:
            try:
                known = (await self.kv.get(table_key(dataset))).value
            except (KeyNotFoundError, NotFoundError):
                known = None
            self.table_ids[dataset] = known.decode() if known else None
        known_table = self.table_ids[dataset]
        if core.recreated(known_table, identity):
            log.warning(
                "%s was deleted and created again (table %s, before %s): reading the new "
                "table from version 0",
                dataset,
                identity,
                known_table,
            )
            self.tables.pop(dataset, None)
            self.footer_records.pop(dataset, None)
            self.row_totals.pop(dataset, None)
            # Seen is reset before the new identity is stored: a crash in between resets again.
            await self.mark_seen(dataset, -1)
        if identity is not None and identity != known_table:
            await self.kv.put(table_key(dataset), identity.encode())
            self.table_ids[dataset] = identity

    async def mark_seen(self, dataset: str, version: int) -> None:
        """Remember a processed version (after its announcement is on the stream)."""
        assert self.kv is not None
        await self.kv.put(seen_key(dataset), str(version).encode())
        self.seen[dataset] = version

    def table_records(self, dataset: str, version: int) -> int | None:
        """Rows in the table at a version, from the log's stats, else the files' footers."""
        try:
            table = self.tables.get(dataset)
            if table is None:
                table = DeltaTable(deltalog.table_uri(self.root, dataset), version=version)
                self.tables[dataset] = table
            else:
                table.load_as_version(version)
            cache = self.footer_records.setdefault(dataset, {})
            return datasets.table_records(table, self.root, dataset, cache)
        except Exception as exc:  # noqa: BLE001 - counts fall back
            self.tables.pop(dataset, None)
            log.warning("row count of %s at version %s unavailable: %s", dataset, version, exc)
            return None

    def note_rows(self, dataset: str, version: int, records: int | None) -> None:
        """Remember the rows at a version for the next append to add to; forget them at a
        version that was not counted (not an append), which the next one counts anew."""
        if records is None:
            self.row_totals.pop(dataset, None)
        else:
            self.row_totals[dataset] = (version, records)

    def read_version(self, dataset: str, version: int) -> tuple[deltalog.Commit, int] | None:
        """A version's commit and the rows it added (footers read when stats are missing),
        or None when it is not in the log yet; UnreadableCommit when it cannot be read."""
        commit = deltalog.read_commit(self.fs, self.base, dataset, version)
        if commit is None:
            return None
        if commit.kind != "append" and not commit.inserts_by_merge:
            return commit, 0
        # A store that did not answer raises: the next scan tries the version again.
        return commit, deltalog.counted_records(self.fs, self.base, dataset, commit)

    async def catch_up(self, dataset: str) -> None:
        """Process every version after the last seen one, in order, one announcement each."""
        lock = self.locks.setdefault(dataset, asyncio.Lock())
        async with lock:
            identity = await asyncio.to_thread(deltalog.table_identity, self.fs, self.base, dataset)
            await self.follow_table(dataset, identity)
            seen = await self.last_seen(dataset)
            while True:
                version = seen + 1
                try:
                    read = await asyncio.to_thread(self.read_version, dataset, version)
                except deltalog.UnreadableCommit as exc:
                    # Retrying the same bytes on every scan would stall the dataset for good.
                    await self.report(core.unreadable(dataset, version, exc.reason))
                    await self.mark_seen(dataset, version)
                    seen = version
                    continue
                if read is None:
                    return
                commit, added_records = read
                records = None
                if commit.kind == "append" or commit.inserts_by_merge:
                    records = core.rows_after(self.row_totals.get(dataset), commit, added_records)
                    if records is None:
                        records = await asyncio.to_thread(self.table_records, dataset, version)
                self.note_rows(dataset, version, records)
                appended = core.announcement(dataset, commit, added_records, records, identity)
                if appended is not None:
                    # Published before the version is marked seen: a crash in between
                    # republishes it with the same Nats-Msg-Id, which the stream drops.
                    await publish_event(self.broker, appended, subjects.DATASET_APPENDED)
                    log.info(
                        "%s version %s: append of %s rows (hop %s)",
                        dataset,
                        version,
                        appended.added_records,
                        appended.hop,
                    )
                else:
                    log.info("%s version %s: %s, not announced", dataset, version, commit.kind)
                await self.mark_seen(dataset, version)
                seen = version

    async def report(self, skipped: DatasetVersionsUnreadable) -> None:
        """Park the report of skipped versions on the dead-letter subject of dataset.appended."""
        log.error("%s: %s; parked on %s", skipped.dataset, skipped.reason, UNREADABLE_SUBJECT)
        await publish_event(self.broker, skipped, UNREADABLE_SUBJECT)

    async def skip_cleaned_gap(self, dataset: str) -> None:
        """Resume past versions whose commit files were cleaned out of the log, and say so."""
        seen = await self.last_seen(dataset)
        if await asyncio.to_thread(self.commit_exists, dataset, seen + 1):
            return
        available = await asyncio.to_thread(deltalog.log_versions, self.fs, self.base, dataset)
        resume = core.resume_after_gap(seen, available)
        if resume is not None:
            await self.report(core.cleaned_gap(dataset, seen, resume))
            await self.mark_seen(dataset, resume)

    def commit_exists(self, dataset: str, version: int) -> bool:
        """Is this version's commit file in the log (readable or not)?"""
        path = deltalog.commit_path(self.base, dataset, version)
        return bool(self.fs.get_file_info(path).type == pafs.FileType.File)

    async def scan(self) -> None:
        """Check every dataset under the root once."""
        names = await asyncio.to_thread(deltalog.dataset_names, self.fs, self.base)
        for name in names:
            try:
                await self.skip_cleaned_gap(name)
                await self.catch_up(name)
            except Exception:
                log.exception("checking dataset %s failed; next scan retries", name)

    async def poll(self, interval_s: float) -> None:
        """Scan every interval (the only source of news for an object-store root)."""
        while True:
            try:
                await self.scan()
            except Exception:
                log.exception("scanning %s failed; retrying", self.root)
            await asyncio.sleep(interval_s)

    async def notified(self) -> None:
        """Catch up a dataset as soon as a commit file appears in its log (inotify)."""
        from watchfiles import awatch

        await asyncio.to_thread(Path(self.base).mkdir, parents=True, exist_ok=True)

        def commit_files(_change: Any, path: str) -> bool:
            return core.is_commit_file(path)

        while True:
            try:
                async for changes in awatch(
                    self.base,
                    watch_filter=commit_files,
                    debounce=1000,
                    step=self.settings.watcher_notify_step_ms,
                    recursive=True,
                ):
                    for name in core.datasets_in((path for _, path in changes), self.base):
                        try:
                            await self.catch_up(name)
                        except Exception:
                            log.exception("catching up %s failed; the next scan retries", name)
            except Exception:
                # The root vanished or the watch limit was hit: the scans carry on meanwhile.
                log.exception("file notifications on %s stopped; restarting them", self.base)
            await asyncio.sleep(1.0)

    def loops(self) -> list[Any]:
        """The coroutines that keep the watcher going."""
        if deltalog.is_local(self.root) and self.settings.watcher_notify:
            return [self.notified(), self.poll(self.settings.watcher_backstop_s)]
        return [self.poll(self.settings.watcher_poll_s)]


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Stop the watcher's loops."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
