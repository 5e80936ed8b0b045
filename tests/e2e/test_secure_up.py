"""`mainspring up` is secure by default: users and passwords on the bus, routines as nobody.

The home lives where the `nobody` user may enter (pytest's own temporary folders are root's
alone), so the runner really switches its workers to that user.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import stat
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from mainspring.base import credentials
from mainspring.contract import permissions
from tests.e2e.test_up import Up
from tests.harness import eventually, write_routine

pytestmark = pytest.mark.e2e

NOBODY = 65534


@pytest.fixture
def open_up() -> Iterator[Up]:
    """`mainspring up` in a home every user may enter (its credentials stay root's)."""
    base = Path(tempfile.mkdtemp(prefix="mainspring-secure-up-", dir="/tmp"))
    base.chmod(0o755)
    system = Up(home=base / "home", cwd=base)
    try:
        yield system
    finally:
        system.stop()
        shutil.rmtree(base, ignore_errors=True)


# A schedule that never fires during a test: its runs are the ones started by hand.
NEVER = 'on_schedule(cron="0 0 29 2 *")'

THIEF = f"""
import json, os
from pathlib import Path

import nats
from mainspring import Routine, on_schedule


class Thief(Routine):
    isolation = "{{isolation}}"

    async def run(self, tick={NEVER}) -> dict:
        home = Path(os.environ["MAINSPRING_HOME"])
        up = json.loads((home / "up.json").read_text())
        runner = next(p["pid"] for p in up["parts"] if p["name"] == "runner")
        found = {{"uid": os.getuid(), "read": [], "refused": [], "connected_as": []}}
        found["environment"] = sorted(
            k for k in os.environ if "NATS" in k or "PASSWORD" in k or "DATABASE" in k
        )
        places = sorted((home / "credentials").glob("*")) if os.access(home / "credentials", os.R_OK) else []
        places += [home / "credentials" / "runner.secret", home / "credentials" / "client.secret"]
        places += [Path(f"/proc/{{os.getppid()}}/environ"), Path(f"/proc/{{runner}}/environ")]
        stolen = []
        for place in places:
            try:
                text = place.read_bytes().decode(errors="replace")
            except OSError as exc:
                found["refused"].append(f"{{place}}: {{type(exc).__name__}}")
                continue
            found["read"].append(str(place))
            found.setdefault("secrets_seen", []).extend(
                word.split("=")[0] for word in text.split("\\0")
                if any(s in word for s in ("NATS", "PASSWORD", "DATABASE"))
            )
            stolen += [line for line in text.replace("\\0", "\\n").splitlines() if ":" in line]
        # Whatever was found, and nothing at all: try the bus with it.
        for attempt in [*stolen, None]:
            user, _, password = (attempt or "").partition(":")
            try:
                nc = await nats.connect(
                    up["nats_url"], user=user or None, password=password or None,
                    allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3,
                )
            except Exception as exc:
                found.setdefault("bus", []).append(str(exc))
            else:
                found["connected_as"].append(user or "anonymous")
                await nc.close()
        return found
"""

WORKS = f"""
import os

import pyarrow as pa
from mainspring import Routine, on_schedule
from mainspring.storage import datasets


class Works(Routine):
    def run(self, tick={NEVER}) -> dict:
        print("printed by uid", os.getuid())
        self.save_artifact("numbers", pa.table({{"n": [1, 2, 3]}}))
        self.state["count"] = self.state.get("count", 0) + 1
        names = [d.name for d in datasets.list_datasets()]
        if "made_by_a_routine" not in names:
            datasets.create("made_by_a_routine", data={{"n": [1]}})
        datasets.append("made_by_a_routine", {{"n": [2]}})
        datasets.append("made_by_hand", {{"id": [7]}})
        return {{"uid": os.getuid(), "count": self.state["count"]}}
"""


def run_outputs(up: Up, routine: str) -> dict[str, Any]:
    result = up.cli("run", routine, "--wait", "--timeout", "90", "--json")
    assert result.returncode == 0, f"{result.stderr}\n{up.logs()}"
    run: dict[str, Any] = json.loads(result.stdout)
    assert run["status"] == "completed", f"{run}\n{up.logs()}"
    outputs: dict[str, Any] = run["outputs"]
    return outputs


async def test_up_turns_authentication_on_and_keeps_its_passwords(open_up: Up) -> None:
    open_up.start("--web-port", "0")
    await open_up.ready()
    state = open_up.state()
    folder = credentials.folder(open_up.home)

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{name}{credentials.SUFFIX}" for name in permissions.USER_NAMES
    )
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    # The CLI on this machine connects with the home's client credentials by itself.
    write_routine(
        open_up.cwd / "plain",
        f"from mainspring import Routine, on_schedule\n\n\nclass Plain(Routine):\n    def run(self, tick={NEVER}) -> dict:\n        return {{'ok': True}}\n",
    )
    assert (
        open_up.cli("routine", "create", str(open_up.cwd / "plain"), "--name", "plain").returncode
        == 0
    )
    assert run_outputs(open_up, "plain") == {"ok": True}
    # Nobody gets on the bus without a password.
    with pytest.raises(Exception, match=r"(?i)authorization violation"):
        await nats.connect(
            state["nats_url"], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3
        )
    # The monitor answers on loopback only, and says authentication is required.
    varz = await asyncio.to_thread(read_json, f"{state['monitor_url']}/varz")
    assert (varz["http_host"], varz["auth_required"]) == ("127.0.0.1", True)

    before = {p.name: p.read_text() for p in folder.iterdir()}
    assert open_up.cli("down").returncode == 0
    open_up.start("--web-port", "0")
    await open_up.ready()

    assert {p.name: p.read_text() for p in folder.iterdir()} == before
    assert run_outputs(open_up, "plain") == {"ok": True}


@pytest.mark.parametrize("isolation", ["worker", "process"])
async def test_routine_code_cannot_reach_the_bus_credentials(open_up: Up, isolation: str) -> None:
    open_up.start("--web-port", "0")
    await open_up.ready()
    thief = write_routine(open_up.cwd / "thief", THIEF.replace("{isolation}", isolation))
    assert open_up.cli("routine", "create", str(thief), "--name", "thief").returncode == 0

    found = run_outputs(open_up, "thief")

    assert found["uid"] == NOBODY
    assert found["environment"] == []
    # A process worker's parent is its fork server, the same user with the same cleaned
    # environment: readable, with nothing in it. The runner and the credentials are not.
    parent_is_fork_server = isolation == "process"
    assert len(found["read"]) == (1 if parent_is_fork_server else 0), found
    assert found.get("secrets_seen", []) == [], found
    assert any(
        f"/proc/{open_up.part_pid('runner')}/environ: PermissionError" in r
        for r in found["refused"]
    ), found
    assert found["connected_as"] == [], found
    assert found["bus"]
    assert all("authorization violation" in e.lower() for e in found["bus"]), found
    assert any("runner.secret: PermissionError" in r for r in found["refused"]), found


async def test_logs_artifacts_state_and_datasets_work_as_the_worker_user(open_up: Up) -> None:
    open_up.start("--web-port", "0")
    await open_up.ready()
    made = open_up.cli("dataset", "create", "made_by_hand", "--schema", "id:int64")
    assert made.returncode == 0, made.stderr
    works = write_routine(open_up.cwd / "works", WORKS)
    assert open_up.cli("routine", "create", str(works), "--name", "works").returncode == 0

    assert run_outputs(open_up, "works") == {"uid": NOBODY, "count": 1}
    assert run_outputs(open_up, "works") == {"uid": NOBODY, "count": 2}

    runs = json.loads(open_up.cli("runs", "list", "--routine", "works", "--json").stdout)
    log = open_up.cli("runs", "logs", runs[0]["id"])
    assert f"printed by uid {NOBODY}" in log.stdout, log.stderr
    artifacts = open_up.cli("runs", "artifacts", runs[0]["id"])
    assert "numbers" in artifacts.stdout, artifacts.stderr
    shown = open_up.cli("dataset", "show", "made_by_a_routine")
    assert shown.returncode == 0, shown.stderr
    dataset_root = open_up.home / "datasets"
    assert (dataset_root / "made_by_a_routine").stat().st_uid == NOBODY
    by_hand = json.loads(open_up.cli("dataset", "show", "made_by_hand", "--json").stdout)
    assert by_hand["rows"] == 2, by_hand


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "nats.pem", folder / "nats.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_up_serves_tls_when_given_a_certificate(
    open_up: Up, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(open_up.cwd)
    monkeypatch.setenv("MAINSPRING_NATS_TLS_CERT", str(cert))
    monkeypatch.setenv("MAINSPRING_NATS_TLS_KEY", str(key))
    open_up.start("--web-port", "0")
    await open_up.ready()
    state = open_up.state()

    assert state["nats_url"].startswith("tls://127.0.0.1:")
    write_routine(
        open_up.cwd / "plain",
        f"from mainspring import Routine, on_schedule\n\n\nclass Plain(Routine):\n    def run(self, tick={NEVER}) -> dict:\n        return {{'ok': True}}\n",
    )
    assert (
        open_up.cli("routine", "create", str(open_up.cwd / "plain"), "--name", "plain").returncode
        == 0
    )
    assert run_outputs(open_up, "plain") == {"ok": True}
    port = int(state["nats_url"].rsplit(":", 1)[1])
    assert '"tls_required":true' in await asyncio.to_thread(server_greeting, port)
    # A client that does not trust the certificate is refused, even with the right password.
    user, password = credentials.read(credentials.path_of(open_up.home, "client"))
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await nats.connect(
            state["nats_url"],
            user=user,
            password=password,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
        )


def server_greeting(port: int) -> str:
    """The INFO line nats-server sends first, before any TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(4096).decode(errors="replace")


def read_json(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(address, timeout=10) as answer:
        loaded: dict[str, Any] = json.loads(answer.read())
    return loaded


POLLER = """
import os
from mainspring import Routine, on_poll


def check():
    secrets = sorted(k for k in os.environ if "NATS" in k or "PASSWORD" in k)
    return {"polled_by": os.getuid(), "secrets": secrets}


class Poller(Routine):
    def run(self, event=on_poll(check, every="1s", timeout_s=10), polled_by: int = -1):
        return {"payload": event.payload, "run_by": os.getuid()}
"""


async def test_a_poll_function_runs_as_the_worker_user_too(open_up: Up) -> None:
    open_up.start("--web-port", "0")
    await open_up.ready()
    poller = write_routine(open_up.cwd / "poller", POLLER)
    assert open_up.cli("routine", "create", str(poller), "--name", "poller").returncode == 0

    async def completed() -> dict[str, Any] | None:
        listed = open_up.cli(
            "runs", "list", "--routine", "poller", "--status", "completed", "--json"
        )
        runs: list[dict[str, Any]] = json.loads(listed.stdout or "[]")
        return runs[0] if runs else None

    run = await eventually(completed, 90, what="a run fired by the poll")

    assert run["outputs"] == {
        "payload": {"polled_by": NOBODY, "secrets": []},
        "run_by": NOBODY,
    }, open_up.logs()
