"""`mainspring setup` declares the bus once; services refuse a bus that is not set up as they need."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from mainspring.contract import subjects
from mainspring.contract.messages import RunCompleted
from mainspring.runtime.bus import BusNotSetUp, check_bus, requirements
from mainspring.storage.ledger import LedgerMarks
from tests.harness import Deployment, deployment_context, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Deployment]:
    """A nats-server nobody has set up yet."""
    with deployment_context(tmp_path, "sqlite", set_up=False) as deployed:
        yield deployed


def refused_start(deployment: Deployment, name: str) -> str:
    """Start a service, wait for it to exit, and return its log."""
    service = deployment.start(name)
    assert service.process is not None
    assert service.process.wait(timeout=60) == 2, service.log()
    return service.log()


def test_a_service_refuses_a_bus_without_setup_in_one_line(bare: Deployment) -> None:
    log = refused_start(bare, "dispatcher")

    [line] = [line for line in log.splitlines() if "cannot start" in line]
    assert line.endswith(
        "dispatcher cannot start: stream MAINSPRING is missing (and 12 more): "
        "run `mainspring setup` (as an admin user in a deployment)"
    )
    assert "Traceback" not in log


async def test_setup_twice_changes_nothing_the_second_time(bare: Deployment) -> None:
    first = bare.cli("setup").stdout
    second = bare.cli("setup").stdout

    assert "created stream MAINSPRING" in first
    assert "created bucket leases" in first
    assert "created bucket runners" in first
    assert second.strip().endswith("is set up (unchanged)"), second
    connection = await nats.connect(bare.nats.url)
    try:
        await check_bus(connection.jetstream(), bare.settings())
    finally:
        await connection.close()


async def test_a_changed_stream_setting_is_reported_then_corrected_by_setup(
    bare: Deployment,
) -> None:
    bare.cli("setup")
    connection = await nats.connect(bare.nats.url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(subjects.STREAM)
        await js.update_stream(replace(info.config, duplicate_window=60.0))

        log = refused_start(bare, "recorder")
        assert (
            "recorder cannot start: stream MAINSPRING has duplicate_window 60.0, this version "
            "needs 600.0: run `mainspring setup`"
        ) in log

        corrected = bare.cli("setup").stdout
        assert "updated stream MAINSPRING has duplicate_window 60.0" in corrected
        bare.start("dispatcher")

        async def consumer_declared() -> bool:
            await js.consumer_info(subjects.STREAM, "dispatcher-submitted")
            return True

        await eventually(consumer_declared, what="the dispatcher started on the corrected bus")
    finally:
        await connection.close()


async def test_setup_declares_the_byte_limits_the_services_check(bare: Deployment) -> None:
    bare.cli("setup")
    settings = bare.settings()
    connection = await nats.connect(bare.nats.url)
    try:
        js = connection.jetstream()
        declared = {
            r.stream: (await js.stream_info(r.stream)).config for r in requirements(settings)
        }
        stream = declared[subjects.STREAM]
        assert stream.max_bytes == settings.stream_max_bytes
        assert stream.discard == DiscardPolicy.OLD
        assert declared[f"KV_{subjects.ROUTINES_BUCKET}"].max_bytes == settings.bucket_max_bytes
        assert declared[f"KV_{subjects.LEDGER_BUCKET}"].max_bytes == settings.ledger_max_bytes
        assert declared[f"OBJ_{subjects.BUNDLES_BUCKET}"].max_bytes == settings.bundles_max_bytes
        progress = declared[subjects.PROGRESS_STREAM]
        assert progress.subjects == [subjects.RUN_PROGRESS]
        assert (progress.retention, progress.storage) == (
            RetentionPolicy.LIMITS,
            StorageType.FILE,
        )
        assert progress.max_age == settings.progress_max_age_s == 3600.0
        assert progress.max_bytes == settings.progress_max_bytes
        assert progress.discard == DiscardPolicy.OLD
        assert subjects.RUN_PROGRESS not in (stream.subjects or [])
        assert declared[f"KV_{subjects.LEDGER_BUCKET}"].discard == DiscardPolicy.OLD
        for name, config in declared.items():
            if name not in (
                subjects.STREAM,
                subjects.PROGRESS_STREAM,
                f"KV_{subjects.LEDGER_BUCKET}",
            ):
                assert config.discard == DiscardPolicy.NEW, name
        await check_bus(js, settings)

        # A bus an older version set up (no byte limit) is refused, and setup bounds it.
        await js.update_stream(replace(stream, max_bytes=-1))
        with pytest.raises(BusNotSetUp, match=r"stream MAINSPRING has max_bytes -1\.0"):
            await check_bus(js, settings)
        corrected = bare.cli("setup").stdout
        assert "updated stream MAINSPRING has max_bytes -1.0" in corrected
        await check_bus(js, settings)
    finally:
        await connection.close()


async def test_setup_moves_progress_out_of_a_stream_an_older_version_declared(
    bare: Deployment,
) -> None:
    settings = bare.settings()
    [main] = [r for r in requirements(settings) if r.stream == subjects.STREAM]
    older = main.declare
    assert isinstance(older, StreamConfig)
    connection = await nats.connect(bare.nats.url)
    try:
        js = connection.jetstream()
        # What an older version declared: every run subject, progress too, under run.>.
        kept = [s for s in subjects.STREAM_SUBJECTS if s not in subjects.RUN_SUBJECTS]
        await js.add_stream(replace(older, subjects=[*kept, "run.>"]))
        stored = await js.publish(subjects.RUN_PROGRESS, b"{}")
        assert stored.stream == subjects.STREAM

        log = refused_start(bare, "recorder")
        assert "recorder cannot start: stream MAINSPRING has subjects [" in log
        changed = bare.cli("setup").stdout

        assert "updated stream MAINSPRING has subjects [" in changed
        assert f"created stream {subjects.PROGRESS_STREAM}" in changed
        info = await js.stream_info(subjects.STREAM)
        assert sorted(info.config.subjects or []) == sorted(subjects.STREAM_SUBJECTS)
        assert info.state.messages == 1, "what the stream held stays"
        moved = await js.publish(subjects.RUN_PROGRESS, b"{}")
        assert moved.stream == subjects.PROGRESS_STREAM
        requested = await js.publish(subjects.RUN_REQUESTED, b"{}")
        assert requested.stream == subjects.STREAM
        await check_bus(js, settings)
        assert bare.cli("setup").stdout.strip().endswith("is set up (unchanged)")
    finally:
        await connection.close()


async def test_a_full_run_ledger_forgets_its_oldest_runs_and_still_settles_new_ones(
    bare: Deployment,
) -> None:
    bare.extra_env["MAINSPRING_LEDGER_MAX_BYTES"] = str(64 * 1024)
    bare.cli("setup")
    connection = await nats.connect(bare.nats.url)
    try:
        ledger = LedgerMarks(connection.jetstream())
        output = {"text": "x" * 400}
        for number in range(400):  # about 3 times what 64 KiB holds
            run = RunCompleted(
                run_id=f"run-{number}",
                routine="r",
                status="completed",
                outputs=output,
                finished_at=datetime.now(UTC),
            )
            assert (await ledger.settle(run)).run_id == run.run_id
        assert await ledger.settled("run-0") is None  # the oldest made room
        newest = await ledger.settled("run-399")
        assert newest is not None
        assert newest.status == "completed"
    finally:
        await connection.close()
