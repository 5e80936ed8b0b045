"""Whom routine code runs as, and what its environment never holds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mainspring.base.settings import ConfigError
from mainspring_services.runner import worker_user
from mainspring_services.runner.worker_user import choose, first_blocked, worker_environment

NOBODY = 65534


def test_the_worker_environment_holds_no_way_onto_the_bus_or_into_history() -> None:
    environ = {
        "PATH": "/usr/bin",
        "MAINSPRING_HOME": "/srv/home",
        "MAINSPRING_DATASET_ROOT": "/srv/datasets",
        "MAINSPRING_NATS_URL": "nats://runner:secret@nats:4222",
        "MAINSPRING_NATS_CREDENTIALS": "/srv/home/credentials/runner.secret",
        "MAINSPRING_NATS_TLS_CA": "/srv/ca.pem",
        "MAINSPRING_DATABASE_URL": "postgresql://mainspring:secret@db/mainspring",
        "MAINSPRING_WEB_TOKEN": "token",
        "MAINSPRING_RUNNER_PASSWORD": "secret",
    }

    assert worker_environment(environ) == {
        "PATH": "/usr/bin",
        "MAINSPRING_HOME": "/srv/home",
        "MAINSPRING_DATASET_ROOT": "/srv/datasets",
    }


def fake_tree(modes: dict[str, tuple[int, int, int]]) -> object:
    """A stat() over folders given as path -> (mode, uid, gid); others do not exist."""

    def lookup(path: Path) -> os.stat_result:
        if str(path) not in modes:
            raise FileNotFoundError(path)
        mode, uid, gid = modes[str(path)]
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))

    return lookup


TREE = fake_tree(
    {
        "/srv": (0o755, 0, 0),
        "/srv/home": (0o700, 0, 0),
        "/srv/shared": (0o750, 0, NOBODY),
        "/srv/own": (0o700, NOBODY, NOBODY),
    }
)


@pytest.mark.parametrize(
    ("path", "blocked"),
    [
        ("/srv/home/bundles", "/srv/home"),
        ("/srv/shared/datasets", None),  # its group may enter
        ("/srv/own/artifacts", None),  # its owner may enter
        ("/srv/not-made-yet/logs", None),  # the runner creates it, enterable
    ],
)
def test_the_first_folder_the_worker_user_cannot_enter(path: str, blocked: str | None) -> None:
    found = first_blocked(Path(path), NOBODY, NOBODY, TREE)  # type: ignore[arg-type]

    assert found == (Path(blocked) if blocked else None)


def test_a_runner_that_is_not_root_says_routines_run_as_itself() -> None:
    chosen = choose("nobody", 1000, [])

    assert chosen.uid is None
    assert "only a runner started as root can switch" in chosen.note


def test_root_runs_routines_as_nobody_by_default() -> None:
    chosen = choose(None, 0, [Path("/srv/shared/datasets")], TREE)  # type: ignore[arg-type]

    assert (chosen.uid, chosen.note) == (NOBODY, f"routines run as nobody (uid {NOBODY})")
    assert chosen.env() == {"MAINSPRING_WORKER_UID": "65534", "MAINSPRING_WORKER_GID": "65534"}


def test_the_default_falls_back_to_root_and_says_why_and_how_to_fix_it() -> None:
    chosen = choose(None, 0, [Path("/srv/home/bundles")], TREE)  # type: ignore[arg-type]

    assert chosen.uid is None
    assert chosen.note == (
        "routines run as root, not as nobody: user nobody cannot enter /srv/home (mode 700) "
        "on the way to /srv/home/bundles; make it enterable (chmod o+x /srv/home) or set "
        "MAINSPRING_WORKER_USER"
    )


def test_an_explicit_user_that_cannot_reach_the_code_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"MAINSPRING_WORKER_USER=nobody: user nobody cannot"):
        choose("nobody", 0, [Path("/srv/home/bundles")], TREE)  # type: ignore[arg-type]


def test_an_unknown_worker_user_is_named_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="no such user on this machine; create it"):
        choose("no-such-user-here", 0, [])


def test_root_may_be_asked_for() -> None:
    assert choose("root", 0, []).uid is None


SWITCHED = """
import json, os, sys
from mainspring_services.runner.worker_user import become_worker_user
secret = sys.argv[1]
become_worker_user(os.environ)
found = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
try:
    open(secret).read()
    found["secret"] = "read"
except PermissionError:
    found["secret"] = "refused"
import csv, decimal  # the interpreter's own library, imported after the switch
found["imports"] = "ok"
found["variables"] = [k for k in os.environ if k.startswith("MAINSPRING_WORKER_")]
print(json.dumps(found))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a runner started as root")
def test_a_worker_becomes_nobody_before_any_routine_code(tmp_path: Path) -> None:
    # Where nobody may enter, so only the file's own mode (0600, root's) keeps it out.
    folder = Path(tempfile.mkdtemp(prefix="mainspring-worker-user-", dir="/tmp"))
    folder.chmod(0o755)
    secret = folder / "runner.secret"
    secret.write_text("runner:password")
    secret.chmod(0o600)
    env = {**os.environ, **worker_user.WorkerUser(NOBODY, NOBODY, "").env()}

    result = subprocess.run(
        [sys.executable, "-c", SWITCHED, str(secret)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    shutil.rmtree(folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        '{"uid": 65534, "gid": 65534, "groups": [], "secret": "refused", "imports": "ok", '
        '"variables": []}'
    )
