"""`mainspring demo`: the whole system on this machine, example routines, their runs shown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from mainspring.apps.present import print_run, short_time, table
from mainspring.apps.up import System
from mainspring.base.settings import Settings
from mainspring.client import Client
from mainspring.contract.queries import RunQuery

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def say(text: str) -> None:
    """A demo step, visibly."""
    print(f"\n==> {text}", flush=True)


async def _demo(settings: Settings) -> None:
    client = await Client.connect(settings)
    try:
        await client.wait_ready()
        say("registering examples/hello (runs every 10s, or by hand)")
        hello = await client.create_routine(EXAMPLES / "hello", "hello")
        print(f"    {hello.name}: {hello.entrypoint}, version {hello.version[:12]}")

        say("mainspring run hello --input name=newcomer --wait")
        run_id = await client.submit(
            "hello", {"name": "newcomer", "steps": 5}, labels=["demo"], source="manual"
        )
        run = await client.wait(run_id, timeout=60)
        print_run(run)

        say("waiting for the schedule to fire hello twice on its own")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = await client.list_runs(
                RunQuery(routine="hello", source="trigger", status="completed")
            )
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.5)

        say("mainspring runs list")
        runs = await client.list_runs(RunQuery(limit=10))
        rows = [
            {**r, "created": short_time(r["created_at"]), "number": r["run_number"]} for r in runs
        ]
        print(table(rows, ["id", "routine", "number", "status", "source", "created"]))

        say("mainspring routine events hello")
        events = await client.trigger_events("hello", 5)
        for event in events:
            event["scheduled_at"] = short_time(event["scheduled_at"])
        print(table(events, ["scheduled_at", "kind", "status", "run_id"]))

        await _dataset_demo(client, settings)
        await _instances_demo(client, settings)
    finally:
        await client.close()


async def _dataset_demo(client: Client, settings: Settings) -> None:
    """A `photos` dataset, EmbedNewRows watching it, appends in a few commits, the firings."""
    from mainspring.storage import datasets

    root = settings.resolved_dataset_root()
    say("mainspring dataset create photos --schema 'id:int64,text:string'")
    if datasets.current_state("photos", root) is None:
        datasets.create("photos", "id:int64,text:string", root=root)
    start = datasets.info("photos", root)
    print(f"    photos at {start.uri}: version {start.version}, {start.rows} rows")

    say("registering examples/embed_new_rows (fires per 100 appended rows)")
    embed = await client.create_routine(EXAMPLES / "embed_new_rows", "embed_new_rows")
    print(f"    {embed.name}: {embed.entrypoint}, version {embed.version[:12]}")
    before = len(await client.list_runs(RunQuery(routine="embed_new_rows", limit=1000)))

    say("appending 250 rows in five commits of 50; then an update, which never fires")
    for commit in range(5):
        first = start.rows + commit * 50
        version = datasets.append(
            "photos",
            {
                "id": list(range(first, first + 50)),
                "text": [f"photo {i}: a kestrel over the dunes" for i in range(first, first + 50)],
            },
            root=root,
        )
        print(f"    appended 50 rows: version {version}")
    version = datasets.update("photos", {"text": "upper(text)"}, "id < 10", root=root)
    print(f"    updated rows with id < 10: version {version}")

    say("waiting for embed_new_rows to fire twice (100 rows each; 50 stay pending)")
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = await client.list_runs(RunQuery(routine="embed_new_rows", limit=1000))
        if len([r for r in runs if r["status"] == "completed"]) >= before + 2:
            break
        await asyncio.sleep(0.5)
    rows = [
        {
            **r,
            "number": r["run_number"],
            "versions": "({from_version}, {to_version}]".format(**r["trigger_event"])
            if r.get("trigger_event")
            else None,
            "embedded": (r.get("outputs") or {}).get("embedded"),
        }
        for r in runs[: len(runs) - before]
    ]
    print(table(rows, ["id", "number", "status", "versions", "embedded", "hop"]))

    say("mainspring routine events embed_new_rows")
    events = await client.trigger_events("embed_new_rows", 10)
    print(table(events, ["kind", "status", "event_key", "reason"]))

    say("mainspring dataset show photos")
    for v in datasets.history("photos", root)[:8]:
        written = (
            f"+{v.added_rows} rows" if v.kind == "append" else f"{v.added_rows} rows rewritten"
        )
        print(f"    version {v.version:>3}  {v.operation:<28} {v.kind:<9} {written}")


async def _instances_demo(client: Client, settings: Settings) -> None:
    """Routine -> instance -> run -> artifacts: the clustering routine, configured, fitted,
    reconfigured, fitted again, asked in memory, and its two fits compared."""
    from mainspring.apps.rundiff import artifact_statistics, compare_runs, render_diff

    say("registering examples/kmeans_clustering as routine kmeans (constructor, fit, predict)")
    kmeans = await client.create_routine(EXAMPLES / "kmeans_clustering", "kmeans")
    print(f"    kmeans: version {kmeans.version[:12]}, methods {', '.join(kmeans.methods)}")

    say("mainspring instance create customer_segments --routine kmeans --set clusters=2")
    instance, configured = await client.create_instance(
        "customer_segments", "kmeans", settings={"clusters": 2}
    )
    if configured is not None:
        await client.wait(configured, timeout=60)
    print(f"    customer_segments: configuration {instance.config}")

    fits = []
    for clusters in (2, 3):
        if clusters != 2:
            say(f"mainspring instance configure customer_segments --set clusters={clusters}")
            rerun = await client.configure_instance("customer_segments", {"clusters": clusters})
            reconfigured = await client.wait(rerun, timeout=60)
            print(f"    run {reconfigured['run_number']} of configure: {reconfigured['inputs']}")
        say("mainspring run customer_segments --method fit --statistics --wait")
        fit_id = await client.submit(
            "customer_segments", method="fit", statistics=True, source="manual"
        )
        fit = await client.wait(fit_id, timeout=60)
        print(f"    {fit['status']}: centroids {(fit.get('outputs') or {}).get('centroids')}")
        fits.append(fit)

    say("mainspring run customer_segments --method predict --input value=60 --in-memory")
    predicted = await client.run_in_memory("customer_segments", {"value": 60}, method="predict")
    print(f"    {predicted['status']}: {predicted['outputs']}")
    # Recorded once the dispatcher settled its report: list the history after that.
    await client.wait(predicted["id"], timeout=60)

    say("mainspring runs list --routine customer_segments")
    history = await client.list_runs(RunQuery(routine="customer_segments", limit=10))
    rows = [{**r, "number": r["run_number"]} for r in reversed(history)]
    print(table(rows, ["id", "number", "method", "status", "execution", "inputs"]))

    say("mainspring runs diff FIRST_FIT SECOND_FIT --only-differences")
    root = settings.resolved_artifact_root()
    first, second = fits
    diff = compare_runs(
        first, second, artifact_statistics(root, first), artifact_statistics(root, second)
    )
    print(render_diff(diff, first["id"][:8], second["id"][:8], only_differences=True))


def run_demo(keep_up: bool = False) -> int:
    """Start everything, run the demo, stop (or stay up with keep_up)."""
    settings = Settings()
    system = System(settings)
    system.start()
    print(
        f"mainspring is up: NATS {system.nats_url}, home {system.home}, logs in {system.home / 'logs'}"
    )
    print(f"watch it live on the web page: http://127.0.0.1:{system.web_port}", flush=True)
    try:
        asyncio.run(_demo(settings.model_copy(update={"nats_url": system.nats_url})))
        if keep_up:
            say("staying up; try `mainspring runs list` in another terminal. Ctrl-C stops.")
            while True:
                system.supervise_once()
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping")
        system.stop()
    return 0
