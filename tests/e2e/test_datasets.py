"""Dataset appends fire routines with exactly the new rows, once, across kills of the services."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import DatasetAppended
from mainspring.contract.queries import RunQuery
from mainspring.storage import datasets
from tests.harness import (
    Deployment,
    copy_example,
    eventually,
    kill_holding,
    parked_reason,
    write_routine,
)

pytestmark = pytest.mark.e2e

SCHEMA = "id:int64,text:string"


def rows(first: int, count: int) -> dict[str, list[Any]]:
    """`count` rows with ids first, first+1, ..."""
    return {
        "id": list(range(first, first + count)),
        "text": [f"photo {i} of a red kite" for i in range(first, first + count)],
    }


def seen_ids(run: dict[str, Any]) -> list[int]:
    """The ids a run of EmbedNewRows embedded, from its artifact."""
    (artifact,) = [a for a in run["artifacts"] if a["name"] == "embeddings"]
    ids: list[int] = pq.read_table(artifact["uri"]).column("id").to_pylist()
    return ids


async def completed_runs(client: Client, routine: str, count: int) -> list[dict[str, Any]]:
    """Wait until `routine` has `count` completed runs; return them oldest first."""

    async def check() -> list[dict[str, Any]] | None:
        runs = await client.list_runs(RunQuery(routine=routine, limit=100))
        done = [r for r in runs if r["status"] == "completed"]
        if len(done) >= count and len(done) == len(runs):
            return sorted(done, key=lambda r: r["trigger_event"]["to_version"])
        return None

    found: list[dict[str, Any]] = await eventually(
        check, timeout=90, what=f"{count} completed runs of {routine}"
    )
    return [r for r in [await client.get_run(r["id"]) for r in found] if r is not None]


async def test_appends_fire_per_100_rows_with_exactly_the_new_rows_and_updates_never_fire(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    root = str(system.home / "datasets")
    system.cli("dataset", "create", "photos", "--schema", SCHEMA)
    datasets.append("photos", rows(1000, 5), root=root)  # before the routine: never fires
    system.cli(
        "routine", "create", str(copy_example("embed_new_rows", tmp_path)), "--name", "embed"
    )

    for first, count in [(0, 30), (30, 80), (110, 40), (150, 60), (210, 40)]:
        datasets.append("photos", rows(first, count), root=root)
    runs = await completed_runs(client, "embed", 2)

    assert [seen_ids(r) for r in runs] == [list(range(0, 110)), list(range(110, 210))]
    assert [r["outputs"]["embedded"] for r in runs] == [110, 100]
    assert [
        (r["trigger_event"]["from_version"], r["trigger_event"]["to_version"]) for r in runs
    ] == [
        (1, 3),
        (3, 5),
    ]
    assert all(r["source"] == "trigger" and r["trigger_kind"] == "dataset" for r in runs)

    async def pending() -> dict[str, Any] | None:
        shown = json.loads(system.cli("routine", "show", "embed").stdout)["dataset_cursor"]
        return shown if shown["seen_version"] == 6 else None

    cursor = await eventually(pending, what="the cursor to count version 6")
    assert (cursor["fired_version"], cursor["pending_records"]) == (5, 40)

    datasets.update("photos", {"text": "upper(text)"}, root=root)  # version 7: must not fire
    system.cli("dataset", "update", "photos", "--set", "text=lower(text)", "--where", "id < 50")
    datasets.append("photos", rows(250, 60), root=root)  # 40 pending + 60 = 100: fires
    runs = await completed_runs(client, "embed", 3)

    assert seen_ids(runs[2]) == list(range(210, 310))
    assert (runs[2]["trigger_event"]["from_version"], runs[2]["trigger_event"]["to_version"]) == (
        5,
        9,
    )
    events = await client.trigger_events("embed", 50)
    assert sorted(e["status"] for e in events).count("fired") == 3
    skipped = [e["reason"] for e in events if e["status"] == "skipped"]
    assert any("of batch_rows=100 rows accumulated" in (reason or "") for reason in skipped)
    cursor = json.loads(system.cli("routine", "show", "embed").stdout)["dataset_cursor"]
    assert (cursor["fired_version"], cursor["pending_records"]) == (9, 0)
    shown = json.loads(system.cli("dataset", "show", "photos", "--json").stdout)
    assert [v["kind"] for v in shown["versions"][:3]] == ["append", "update", "update"]
    # Each append says how many rows the table held after it, as the table itself does:
    # added to the count before it, and counted anew after the updates.
    table = DeltaTable(str(Path(root) / "photos"))
    told = {a.to_version: a.table_records for a in await announcements(client, "photos")}
    truth = {}
    for version in told:
        table.load_as_version(version)
        truth[version] = datasets.table_records(table, root, "photos")
    assert told == truth
    assert list(told) == [1, 2, 3, 4, 5, 6, 9]


async def announcements(client: Client, dataset: str) -> list[DatasetAppended]:
    """Every `dataset.appended` of a dataset on the stream, oldest first."""
    stored = await client.js.stream_info(subjects.STREAM, subjects_filter=subjects.DATASET_APPENDED)
    if not (stored.state.subjects or {}).get(subjects.DATASET_APPENDED):
        return []
    subscription = await client.js.subscribe(subjects.DATASET_APPENDED, ordered_consumer=True)
    found = []
    try:
        while True:
            message = await subscription.next_msg(timeout=10)
            body = DatasetAppended.model_validate_json(message.data)
            if body.dataset == dataset:
                found.append(body)
            if message.metadata.num_pending == 0:
                return found
    finally:
        await subscription.unsubscribe()


async def announced_version(client: Client, dataset: str) -> int:
    """The newest version of a dataset announced on the stream (-1 before any)."""
    return max((body.to_version for body in await announcements(client, dataset)), default=-1)


async def test_killing_watcher_and_dispatcher_mid_stream_loses_and_doubles_nothing(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    root = str(system.home / "datasets")
    datasets.create("photos", SCHEMA, root=root)
    system.cli(
        "routine", "create", str(copy_example("embed_new_rows", tmp_path)), "--name", "embed"
    )
    committed = 0

    def append(commits: int) -> None:
        nonlocal committed
        for _ in range(commits):
            datasets.append("photos", rows(committed * 10, 10), root=root)
            committed += 1

    async def logged(name: str, text: str, times: int = 1) -> None:
        async def check() -> bool:
            return system.services[name].log().count(text) >= times

        await eventually(check, timeout=60, what=f"{text!r} x{times} in the {name} log")

    async def watcher_killed_behind() -> None:
        """Kill the watcher while commits in the log wait for its announcement.

        Frozen (SIGSTOP) to look, so it cannot announce between the look and the kill; when
        it has already caught up (it announces a commit in a few milliseconds), commits made
        while it is frozen give it work it cannot have started.
        """
        watcher = system.services["dataset_watcher"]
        assert watcher.process is not None
        watcher.process.send_signal(signal.SIGSTOP)
        if await announced_version(client, "photos") >= committed:
            append(2)
        watcher.kill(signal.SIGKILL)

    async def dispatcher_killed_holding() -> bool:
        return await kill_holding(system.services["dispatcher"], client.js, "dispatcher-dataset")

    def restart(*names: str) -> None:
        append(3)  # committed while they are down
        for name in names:
            system.start(name)

    await logged("dataset_watcher", "started successfully")
    await logged("dispatcher", "started successfully")
    append(4)
    await logged("dataset_watcher", "photos version 2: append")
    append(4)  # the watcher is busy announcing these when it dies
    await watcher_killed_behind()
    restart("dataset_watcher")
    await logged("dataset_watcher", "started successfully", 2)
    append(2)  # 13 commits: the first firing (100 rows) is being decided
    await logged("dispatcher", "requested run")
    append(2)
    landed = [await dispatcher_killed_holding()]
    restart("dispatcher")
    await logged("dispatcher", "started successfully", 2)
    append(3)
    # Mid-stream, both down at once: the dispatcher while it decides these three, the
    # watcher behind two more.
    landed.append(await dispatcher_killed_holding())
    append(2)
    await watcher_killed_behind()
    restart("dataset_watcher", "dispatcher")
    await logged("dispatcher", "started successfully", 3)
    append(30 - committed)
    # At least one dispatcher kill landed while it held an append it had not acknowledged.
    assert any(landed), "no kill landed while the dispatcher was deciding an append"
    runs = await completed_runs(client, "embed", 3)

    assert committed == 30
    assert [seen_ids(r) for r in runs] == [
        list(range(0, 100)),
        list(range(100, 200)),
        list(range(200, 300)),
    ]
    assert len(await client.list_runs(RunQuery(routine="embed", limit=100))) == 3

    async def three_firings() -> list[dict[str, Any]] | None:
        # The recorder reads trigger history on its own consumer: it may trail the runs.
        events = await client.trigger_events("embed", 100)
        fired = [e for e in events if e["status"] == "fired"]
        return fired if len(fired) >= 3 else None

    fired = await eventually(three_firings, timeout=30, what="3 firings in the trigger history")
    assert sorted(e["run_id"] for e in fired) == sorted(r["id"] for r in runs)


WATCH_ALL = """
from mainspring import Routine, on_dataset_append


class Collect(Routine):
    def run(self, new_rows=on_dataset_append("{dataset}"), batch_size: int = 4):
        sizes = [batch.num_rows for batch in new_rows]
        ids = [i for batch in new_rows.added_rows() for i in batch.column("id").to_pylist()]
        return {{"ids": ids, "batches": sizes, "added": new_rows.added_records}}
"""

LOOPING = """
from mainspring import Routine, on_dataset_append
from mainspring.storage import datasets
from mainspring.contract import subjects
class Echo(Routine):
    def run(self, new_rows=on_dataset_append("echo")):
        ids = [i for batch in new_rows.added_rows() for i in batch.column("id").to_pylist()]
        datasets.append("echo", {"id": [i + 100 for i in ids], "text": ["again"] * len(ids)})
        return {"ids": ids, "hop": self.run_info.hop}
"""


async def test_external_dataset_appended_fires_and_malformed_is_dead_lettered(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    for name in ("recorder", "dispatcher", "runner"):  # no watcher: an external system announces
        deployment.start(name)
    root = str(deployment.home / "datasets")
    datasets.create("events", SCHEMA, root=root)
    folder = write_routine(tmp_path / "collect", WATCH_ALL.format(dataset="events"))
    deployment.cli("routine", "create", str(folder), "--name", "collect")
    first = datasets.append("events", rows(0, 7), root=root)
    datasets.update("events", {"text": "'x'"}, root=root)
    last = datasets.append("events", rows(7, 3), root=root)
    dead = await client.nc.subscribe("deadletter.>")
    await client.nc.flush()  # the CLI below blocks this loop: make sure the server has the SUB

    deployment.cli(
        "publish",
        "dataset.appended",
        '{"dataset": "events", "from_version": 0, "to_version": -3, "added_records": 1}',
    )
    body = {"dataset": "events", "from_version": first - 1, "to_version": last, "added_records": 10}
    deployment.cli("publish", "dataset.appended", json.dumps(body))

    parked = await dead.next_msg(timeout=30)
    assert parked.subject == "deadletter.dataset.appended"
    assert "malformed DatasetAppended" in parked_reason(parked)
    assert "to_version" in parked_reason(parked)
    (run,) = await completed_runs(client, "collect", 1)
    assert run["outputs"] == {"ids": list(range(10)), "batches": [4, 4, 2], "added": 10}

    # The same range announced again, past any deduplication (another Nats-Msg-Id): the
    # cursor has already counted it, so no second run.
    deployment.cli("publish", "dataset.appended", json.dumps(body), "--msg-id", "again")
    deployment.cli("publish", "dataset.appended", json.dumps({**body, "from_version": 3}))
    parked = await dead.next_msg(timeout=30)
    assert "must be below to_version" in parked_reason(parked)
    # Appends are handled in stream order: the repeat was decided before the malformed one.
    assert deployment.services["dispatcher"].log().count("requested run") == 1
    assert len(await client.list_runs(RunQuery(routine="collect"))) == 1
    assert all(s.alive() for s in deployment.services.values())


async def test_a_routine_appending_to_its_own_dataset_is_stopped_by_max_hops(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env["MAINSPRING_MAX_HOPS"] = "2"
    # The watcher polls here, as it does on an object store.
    deployment.extra_env["MAINSPRING_WATCHER_NOTIFY"] = "false"
    deployment.extra_env["MAINSPRING_WATCHER_POLL_S"] = "0.2"
    deployment.start_all()
    root = str(deployment.home / "datasets")
    datasets.create("echo", SCHEMA, root=root)
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "echo", LOOPING)), "--name", "echo"
    )

    datasets.append("echo", rows(0, 2), root=root)

    async def blocked() -> list[dict[str, Any]]:
        events = await client.trigger_events("echo", 20)
        return [e for e in events if e["status"] == "loop_blocked"]

    (block,) = await eventually(blocked, timeout=90, what="a loop_blocked trigger event")
    assert "exceeds max_hops 2" in block["reason"]
    runs = await completed_runs(client, "echo", 2)
    assert [r["hop"] for r in runs] == [1, 2]
    assert [r["outputs"]["ids"] for r in runs] == [[0, 1], [100, 101]]
    assert runs[1]["parent_run_id"] == runs[0]["id"]
