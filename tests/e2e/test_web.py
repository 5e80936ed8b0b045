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
