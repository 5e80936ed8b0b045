"""The web page answers with the same runs and routines as the CLI, and its buttons act."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mainspring.up import free_port, wait_for_port
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


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_page_lists_starts_and_refuses_runs(system: Deployment, web: str, tmp_path: Path) -> None:
    system.cli("routine", "create", str(copy_example("hello", tmp_path)), "--name", "hello")

    with urllib.request.urlopen(web + "/", timeout=30) as page:
        assert b"<title>Mainspring</title>" in page.read()
    status, routines = call(web + "/api/routines")
    assert status == 200 and [r["name"] for r in routines["routines"]] == ["hello"]

    status, refused = call(web + "/api/routines/hello/run", {"inputs": {"steps": "lots"}})
    assert status == 400 and "input 'steps'" in refused["error"]

    status, started = call(web + "/api/routines/hello/run", {"inputs": {"steps": 1}})
    assert status == 202
    system.cli("runs", "show", started["run_id"])
    waited = system.cli("run", "hello", "--input", "steps=1", "--wait", "--timeout", "60")
    assert "completed" in waited.stdout
    status, shown = call(web + "/api/runs/" + started["run_id"])
    assert status == 200 and shown["run"]["routine"] == "hello"
    status, listed = call(web + "/api/runs?routine=hello")
    assert started["run_id"] in [r["id"] for r in listed["runs"]]

    status, _ = call(web + "/api/routines/hello/disable", {"reason": "maintenance"})
    assert status == 200
    _, routines = call(web + "/api/routines")
    assert routines["routines"][0]["enabled"] is False
    assert routines["routines"][0]["disabled_reason"] == "maintenance"
