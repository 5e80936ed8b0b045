"""Tables written by other engines fire with exactly their appended rows; their non-appends never
fire; a commit that cannot be read is parked and later versions keep flowing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction

from mainspring.client import Client
from mainspring.contract.messages import DatasetVersionsUnreadable
from mainspring.contract.queries import RunQuery
from mainspring.storage import datasets
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

TABLES = Path(__file__).parent.parent / "unit" / "delta_tables"

COLLECT = """
from mainspring import Routine, on_dataset_append


class Collect(Routine):
    def run(self, new_rows=on_dataset_append("{dataset}"{options})):
        values = [v for batch in new_rows.added_rows() for v in batch.column(0).to_pylist()]
        return {{"values": values, "added": new_rows.added_records}}
"""


def ids(values: list[int]) -> pa.Table:
    return pa.table({"id": pa.array(values, pa.int64())})


async def runs_of(client: Client, routine: str, count: int) -> list[dict[str, Any]]:
    """Wait for `count` completed runs of `routine` (and no more); in run-number order."""

    async def check() -> list[dict[str, Any]] | None:
        runs = await client.list_runs(RunQuery(routine=routine, limit=100))
        done = [r for r in runs if r["status"] == "completed"]
        if len(done) == count and len(runs) == count:
            return sorted(done, key=lambda r: r["run_number"])
        return None

    found: list[dict[str, Any]] = await eventually(
        check, timeout=90, what=f"{count} completed runs of {routine}"
    )
    return [r for r in [await client.get_run(r["id"]) for r in found] if r is not None]


def outputs(runs: list[dict[str, Any]]) -> list[tuple[list[int], int]]:
    return [(r["outputs"]["values"], r["outputs"]["added"]) for r in runs]


def commit(table: Path, version: int, *actions: dict[str, Any] | str) -> None:
    """Write a commit file as another engine would: complete, under its final name at once."""
    log = table / "_delta_log"
    log.mkdir(parents=True, exist_ok=True)
    lines = [a if isinstance(a, str) else json.dumps(a) for a in actions]
    staging = log / f".{version:020d}.json.tmp"
    staging.write_text("\n".join(lines) + "\n")
    os.link(staging, log / f"{version:020d}.json")  # put-if-absent, like the writers' own
    staging.unlink()


def data_file(table: Path, name: str, values: list[int]) -> dict[str, Any]:
    """A parquet file in the table and the add action (without stats) that names it."""
    table.mkdir(parents=True, exist_ok=True)
    pq.write_table(ids(values), table / name)
    return {
        "path": name,
        "partitionValues": {},
        "size": (table / name).stat().st_size,
        "modificationTime": int(time.time() * 1000),
        "dataChange": True,
    }


def register(
    deployment: Deployment, tmp_path: Path, dataset: str, name: str = "", options: str = ""
) -> None:
    name = name or dataset
    folder = write_routine(tmp_path / name, COLLECT.format(dataset=dataset, options=options))
    deployment.cli("routine", "create", str(folder), "--name", name)


async def test_deltalake_writes_fire_with_their_rows_and_its_non_appends_fire_nothing(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    uri = str(system.home / "datasets" / "lake")
    register(system, tmp_path, "lake")  # before the table exists
    register(system, tmp_path, "lake", name="with-merges", options=", merge_inserts=True")

    # The first write of a new table, spelled "WRITE Overwrite" by delta-rs.
    write_deltalake(uri, ids([0, 1, 2]), mode="overwrite")
    first = await runs_of(client, "lake", 1)
    assert outputs(first) == [([0, 1, 2], 3)]

    # An append whose add action has no stats (stats: null) and no operation metrics.
    table = DeltaTable(uri)
    values = list(range(3, 10))
    add = data_file(Path(uri), "outside-1.parquet", values)
    # stats=None is written as "stats": null, and delta-rs records no metrics for it. deltalake
    # types AddAction.stats as str, though its writer takes None and writes null.
    action = AddAction(add["path"], add["size"], {}, add["modificationTime"], True, None)  # type: ignore[arg-type]
    table.create_write_transaction([action], mode="append", schema=table.schema())
    second = await runs_of(client, "lake", 2)
    assert outputs(second)[1] == (values, 7)
    # deltalake's own count skips files without stats; ours reads their footers.
    assert DeltaTable(uri).count() == 3
    assert json.loads(system.cli("dataset", "show", "lake", "--json").stdout)["rows"] == 10

    table = DeltaTable(uri)
    table.merge(
        ids([100]), predicate="s.id = t.id", source_alias="s", target_alias="t"
    ).when_not_matched_insert_all().execute()  # inserts only: still a merge
    table.delete("id = 0")
    table.update(updates={"id": "id + 1000"}, predicate="id = 1")
    table.optimize.compact()
    write_deltalake(uri, ids([20, 21]), mode="append")
    runs = await runs_of(client, "lake", 3)

    assert outputs(runs)[2] == ([20, 21], 2)
    assert (runs[2]["trigger_event"]["from_version"], runs[2]["trigger_event"]["to_version"]) == (
        1,
        6,
    )
    shown = json.loads(system.cli("dataset", "show", "lake", "--json").stdout)
    assert [v["kind"] for v in shown["versions"]] == [
        "append",
        "compaction",
        "update",
        "delete",
        "merge",
        "append",
        "append",
    ]
    assert [v["added_rows"] for v in shown["versions"]][-2:] == [7, 3]
    # The routine that opted in also got the rows the MERGE inserted, and only those.
    with_merges = await runs_of(client, "with-merges", 4)
    assert outputs(with_merges) == [([0, 1, 2], 3), (values, 7), ([100], 1), ([20, 21], 2)]


async def test_engines_without_stats_or_commit_info_fire_and_an_unreadable_commit_is_parked(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    table = system.home / "datasets" / "trino"
    register(system, tmp_path, "trino")
    register(system, tmp_path, "dv")
    dead = await client.nc.subscribe("deadletter.dataset.appended")
    await client.nc.flush()

    # Trino with statistics off: CREATE TABLE AS SELECT, no stats, no metrics.
    schema = {
        "type": "struct",
        "fields": [{"name": "id", "type": "long", "nullable": True, "metadata": {}}],
    }
    commit(
        table,
        0,
        {"commitInfo": {"operation": "CREATE TABLE AS SELECT", "operationParameters": {}}},
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
        {
            "metaData": {
                "id": "4e1d5c1e-0000-4000-8000-000000000001",
                "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema),
                "partitionColumns": [],
                "configuration": {},
            }
        },
        {"add": data_file(table, "ctas-0.parquet", [0, 1, 2, 3])},
    )
    # kafka-delta-ingest: no commitInfo at all.
    commit(table, 1, {"add": data_file(table, "ingest-1.parquet", [4, 5])})
    # Stats written as the JSON string "null".
    commit(table, 2, {"add": {**data_file(table, "null-2.parquet", [6]), "stats": "null"}})
    runs = await runs_of(client, "trino", 3)
    assert outputs(runs) == [([0, 1, 2, 3], 4), ([4, 5], 2), ([6], 1)]

    # A commit that is not JSON: parked with its reason, and the next version still fires.
    commit(table, 3, '{"add": {"path": "broken-3.parquet"', "")
    commit(table, 4, {"add": data_file(table, "after-4.parquet", [7, 8])})
    parked = await dead.next_msg(timeout=30)
    report = DatasetVersionsUnreadable.model_validate_json(parked.data)
    assert (report.dataset, report.from_version, report.to_version) == ("trino", 2, 3)
    assert "line 1 is not JSON" in report.reason
    runs = await runs_of(client, "trino", 4)
    assert outputs(runs)[3] == ([7, 8], 2)
    shown = json.loads(system.cli("dataset", "show", "trino", "--json").stdout)
    assert "deltalake cannot load" in shown["error"]
    assert shown["versions"][1]["operation"].startswith("line 1 is not JSON")
    assert [v["kind"] for v in shown["versions"]] == [
        "append",
        "unreadable",
        "append",
        "append",
        "append",
    ]

    # An add naming a data file that is not there (and no stats): it cannot be counted, so
    # it is parked rather than retried on every scan, and the run after it skips it too.
    missing = {"path": "never-written.parquet", "size": 10, "dataChange": True}
    commit(table, 5, {"add": missing})
    parked = await dead.next_msg(timeout=30)
    report = DatasetVersionsUnreadable.model_validate_json(parked.data)
    assert (report.from_version, report.to_version) == (4, 5)
    assert "an added file's row count cannot be read" in report.reason
    commit(table, 6, {"add": data_file(table, "after-6.parquet", [9])})
    runs = await runs_of(client, "trino", 5)
    assert outputs(runs)[4] == ([9], 1)

    # A Databricks data file committed with its deletion vector: rows 0 and 9 are deleted.
    dv_table = system.home / "datasets" / "dv"
    source = TABLES / "table-with-dv-small"
    create, _ = (source / "_delta_log" / f"{0:020d}.json").read_text().split('\n{"add"', 1)
    with_dv = next(
        line
        for line in (source / "_delta_log" / f"{1:020d}.json").read_text().splitlines()
        if line.startswith('{"add"')
    )
    dv_table.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file():  # the data file and its deletion vector
            shutil.copy(file, dv_table / file.name)
    commit(dv_table, 0, *create.splitlines())
    commit(dv_table, 1, with_dv)
    (dv_run,) = await runs_of(client, "dv", 1)
    assert dv_run["outputs"] == {"values": list(range(1, 9)), "added": 8}


async def test_a_dataset_deleted_and_created_again_starts_a_new_cursor_with_a_clear_event(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    root = str(system.home / "datasets")
    datasets.create("photos", "id:int64", root=root)
    register(system, tmp_path, "photos")
    datasets.append("photos", ids([0, 1, 2]), root=root)  # version 1
    await runs_of(client, "photos", 1)
    datasets.append("photos", ids([3]), root=root)
    datasets.append("photos", ids([4]), root=root)  # version 3
    await runs_of(client, "photos", 3)
    # Seeded at version 3 of the old table, before any append of the new one reaches it.
    register(system, tmp_path, "photos", name="late")

    shutil.rmtree(Path(root) / "photos")
    datasets.create("photos", "id:int64", root=root)  # version 0 again, another table
    datasets.append("photos", ids([100, 101]), root=root)  # version 1 again
    runs = await runs_of(client, "photos", 4)
    (late,) = await runs_of(client, "late", 1)

    assert outputs(runs) == [([0, 1, 2], 3), ([3], 1), ([4], 1), ([100, 101], 2)]
    assert outputs([late]) == [([100, 101], 2)]
    assert runs[0]["id"] != runs[3]["id"]  # the same range (0, 1] of another table
    for routine in ("photos", "late"):
        events = await client.trigger_events(routine, 20)
        (restart,) = [e for e in events if "deleted and created again" in (e["reason"] or "")]
        assert restart["status"] == "skipped"
        assert "the cursor starts again at version 0" in restart["reason"]


async def test_versions_cleaned_from_the_log_while_the_watcher_was_down_are_reported(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    root = str(system.home / "datasets")
    datasets.create("photos", "id:int64", root=root)
    register(system, tmp_path, "photos")
    datasets.append("photos", ids([0, 1]), root=root)  # version 1
    await runs_of(client, "photos", 1)
    watcher_kv = await client.nc.jetstream().key_value("watcher")

    async def seen_version_1() -> bool:
        return (await watcher_kv.get("seen.photos")).value == b"1"

    await eventually(seen_version_1, what="the watcher to mark version 1 seen")
    system.services["dataset_watcher"].kill(signal.SIGTERM)
    for version in (2, 3, 4):
        datasets.append("photos", ids([version * 10]), root=root)
    datasets.append("photos", ids([50, 51]), root=root)  # version 5
    # Log cleanup after a checkpoint, as engines do once the log retention has passed.
    DeltaTable(str(Path(root) / "photos")).create_checkpoint()
    for version in range(5):
        (Path(root) / "photos" / "_delta_log" / f"{version:020d}.json").unlink()
    dead = await client.nc.subscribe("deadletter.dataset.appended")
    await client.nc.flush()

    system.start("dataset_watcher")
    parked = await dead.next_msg(timeout=30)
    report = DatasetVersionsUnreadable.model_validate_json(parked.data)
    assert (report.from_version, report.to_version) == (1, 4)
    assert "versions 2..4 were removed from the log" in report.reason
    runs = await runs_of(client, "photos", 2)
    assert outputs(runs)[1] == ([50, 51], 2)


async def test_polars_write_delta_appends_fire_and_mix_with_ours_in_one_event(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    root = str(system.home / "datasets")
    uri = str(Path(root) / "tiles")
    datasets.create("tiles", "id:int64,text:string", root=root)
    register(system, tmp_path, "tiles", options=", batch_rows=5")

    def frame(first: int, count: int) -> pl.DataFrame:
        values = list(range(first, first + count))
        return pl.DataFrame({"id": values, "text": [f"tile {i}" for i in values]})

    # Polars writes strings as string_view; ours are string: one event holds both.
    frame(0, 2).write_delta(uri, mode="append")
    datasets.append("tiles", frame(2, 3).to_arrow(), root=root)
    frame(7, 1).write_delta(uri, mode="overwrite")  # removes every file: never fires
    frame(10, 5).write_delta(uri, mode="append")
    runs = await runs_of(client, "tiles", 2)

    assert outputs(runs) == [([0, 1, 2, 3, 4], 5), ([10, 11, 12, 13, 14], 5)]
    shown = json.loads(system.cli("dataset", "show", "tiles", "--json").stdout)
    assert [v["kind"] for v in shown["versions"]][:3] == ["append", "overwrite", "append"]
