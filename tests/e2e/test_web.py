"""The web page answers with the same runs and routines as the CLI, and its buttons act."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mainspring.apps.up import free_port, wait_for_port
from mainspring.client import Client
from tests.harness import Deployment, copy_example

pytestmark = pytest.mark.e2e


@pytest.fixture
def web(system: Deployment) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "web", "--port", str(port)],
        env=system.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def read_page(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as page:
        body: bytes = page.read()
        return body


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def fetch(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """`call` off the event loop, so the SDK client's connection stays served."""
    return await asyncio.to_thread(call, url, body)


async def test_page_lists_starts_and_refuses_runs(
    system: Deployment, client: Client, web: str, tmp_path: Path
) -> None:
    system.cli("routine", "create", str(copy_example("hello", tmp_path)), "--name", "hello")

    page = await asyncio.to_thread(read_page, web + "/")
    assert b"<title>Mainspring</title>" in page
    status, routines = await fetch(web + "/api/routines")
    assert status == 200
    assert [r["name"] for r in routines["routines"]] == ["hello"]

    status, refused = await fetch(web + "/api/routines/hello/run", {"inputs": {"steps": "lots"}})
    assert status == 400
    assert "input 'steps'" in refused["error"]

    status, started = await fetch(web + "/api/routines/hello/run", {"inputs": {"steps": 1}})
    assert status == 202
    run_id = started["run_id"]
    # The run the page started, waited for by its id (the routine also ticks every 10s).
    finished = await client.wait(run_id, timeout=60)
    assert finished["status"] == "completed", finished
    status, shown = await fetch(web + "/api/runs/" + run_id)
    assert status == 200
    assert shown["run"]["id"] == run_id
    assert shown["run"]["routine"] == "hello"
    assert shown["run"]["status"] == "completed"
    assert shown["run"]["inputs"] == {"name": "world", "steps": 1}
    status, listed = await fetch(web + "/api/runs?routine=hello")
    assert status == 200
    assert run_id in [r["id"] for r in listed["runs"]]

    status, _ = await fetch(web + "/api/routines/hello/disable", {"reason": "maintenance"})
    assert status == 200
    _, routines = await fetch(web + "/api/routines")
    assert routines["routines"][0]["enabled"] is False
    assert routines["routines"][0]["disabled_reason"] == "maintenance"


async def test_page_runs_a_picked_method_and_compares_two_runs(
    system: Deployment, client: Client, web: str, tmp_path: Path
) -> None:
    folder = copy_example("kmeans_clustering", tmp_path)
    system.cli("routine", "create", str(folder), "--name", "kmeans")
    system.cli("instance", "create", "segments", "--routine", "kmeans", "--set", "clusters=2")

    status, routines = await fetch(web + "/api/routines")
    assert status == 200
    by_name = {r["name"]: r for r in routines["routines"]}
    assert by_name["segments"]["routine"] == "kmeans"
    assert by_name["segments"]["methods"] == ["run", "configure", "fit", "predict"]

    status, first = await fetch(web + "/api/routines/segments/run", {"method": "fit"})
    assert status == 202, first
    assert (await client.wait(first["run_id"], timeout=60))["method"] == "fit"
    system.cli("instance", "configure", "segments", "--set", "clusters=3", "--wait")
    status, second = await fetch(web + "/api/routines/segments/run", {"method": "fit"})
    assert status == 202, second
    await client.wait(second["run_id"], timeout=60)
    status, unknown = await fetch(web + "/api/routines/segments/run", {"method": "train"})
    assert status == 400
    assert "no method 'train'" in unknown["error"]

    status, diff = await fetch(web + f"/api/runs/diff?a={first['run_id']}&b={second['run_id']}")
    assert status == 200
    rows = {(r["section"], r["field"]): r for r in diff["rows"]}
    assert (rows[("configuration", "clusters")]["a"], rows[("configuration", "clusters")]["b"]) == (
        2,
        3,
    )
    assert rows[("configuration", "clusters")]["differs"] is True
    assert rows[("run", "method")]["differs"] is False
    status, missing = await fetch(web + f"/api/runs/diff?a={first['run_id']}&b=nope")
    assert status == 404
    assert "run nope is not recorded" in missing["error"]
