"""Who routine code runs as: never with the runner's credentials, and as another user when it can.

A runner started as root (as under `mainspring up` here, and in the containers) starts its
workers as root and each worker switches to an unprivileged user (`nobody` unless
MAINSPRING_WORKER_USER names another) before it imports any routine code. That user cannot
read the runner's credentials file (0600, root's) nor `/proc/<runner>/environ`, and the
workers' environment never holds the bus URL, credentials path, database URL or passwords.
A runner that is not root cannot switch users: routines then run as its own user, and the
runner says so in its log at start.

The worker writes only where the runner hands it a place: the run's log file and the run's
folder in a local artifact store (created and given to the user per run), and the local
dataset root (its group is the worker's, group-writable, so routines create datasets there).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import stat
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mainspring.base.settings import ConfigError

UID_VARIABLE = "MAINSPRING_WORKER_UID"
GID_VARIABLE = "MAINSPRING_WORKER_GID"
DEFAULT_USER = "nobody"
# What a routine's environment must never hold: how to reach and authenticate to the bus
# (URL with a password, the credentials file's path, TLS files), the run history database
# (its URL may carry a password), the web token, and any password a deployment passes.
SECRET_PREFIXES = ("MAINSPRING_NATS_",)
SECRET_NAMES = frozenset({"MAINSPRING_DATABASE_URL", "MAINSPRING_WEB_TOKEN"})
SECRET_SUFFIXES = ("_PASSWORD",)
PR_SET_DUMPABLE = 4  # from <linux/prctl.h>


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment without anything that grants access to the bus or history."""
    return {
        key: value
        for key, value in environ.items()
        if not key.startswith(SECRET_PREFIXES)
        and key not in SECRET_NAMES
        and not key.endswith(SECRET_SUFFIXES)
    }


def first_blocked(
    path: Path, uid: int, gid: int, lookup: Callable[[Path], os.stat_result] = os.stat
) -> Path | None:
    """The first folder on the way to `path` (itself included) that uid/gid may not enter.

    Folders not made yet are not in the way: the runner creates them, enterable by all.
    """
    current = Path(path.anchor)
    for part in (path.resolve().parts)[1:]:
        current = current / part
        try:
            info = lookup(current)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            return None
        if info.st_uid == uid:
            needed = stat.S_IXUSR
        elif info.st_gid == gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return current
    return None


@dataclass(frozen=True)
class WorkerUser:
    """The user workers switch to (None: they keep the runner's) and why, for the log."""

    uid: int | None
    gid: int | None
    note: str

    def env(self) -> dict[str, str]:
        """What tells a starting worker whom to become."""
        if self.uid is None or self.gid is None:
            return {}
        return {UID_VARIABLE: str(self.uid), GID_VARIABLE: str(self.gid)}

    def give(self, path: Path, folder: bool = False) -> None:
        """Create `path` (a file, or a folder) for the worker user and make it theirs."""
        if folder:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def share(self, folder: Path) -> None:
        """Let the worker user create entries in `folder` (its group, group-writable, setgid)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.uid is not None and self.gid is not None:
            os.chown(folder, -1, self.gid)
            folder.chmod(stat.S_IMODE(folder.stat().st_mode) | stat.S_IRWXG | stat.S_ISGID)


def _account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"MAINSPRING_WORKER_USER={name}: no such user on this machine; create it "
            f"(useradd --system {name}) or name another"
        ) from None


def choose(
    setting: str | None,
    euid: int,
    reached: Sequence[Path],
    lookup: Callable[[Path], os.stat_result] = os.stat,
) -> WorkerUser:
    """Whom workers run as, given the setting (None: the default), the runner's euid and the
    folders the worker must reach. An explicit user that cannot work is an error; the default
    falls back to the runner's user, and the note says why and how to fix it."""
    if euid != 0:
        return WorkerUser(
            None,
            None,
            f"routines run as this runner's user (uid {euid}): only a runner started as root "
            "can switch them to another user",
        )
    name = DEFAULT_USER if setting is None else setting
    if name in ("", "root", "0"):
        return WorkerUser(None, None, "routines run as root: MAINSPRING_WORKER_USER asks for it")
    account = _account(name)
    for path in reached:
        blocked = first_blocked(path, account.pw_uid, account.pw_gid, lookup)
        if blocked is None:
            continue
        why = (
            f"user {name} cannot enter {blocked} (mode {stat.S_IMODE(lookup(blocked).st_mode):o}) "
            f"on the way to {path}"
        )
        fix = f"make it enterable (chmod o+x {blocked})"
        if setting is None:
            return WorkerUser(
                None,
                None,
                f"routines run as root, not as {name}: {why}; {fix} or set MAINSPRING_WORKER_USER",
            )
        raise ConfigError(
            f"MAINSPRING_WORKER_USER={name}: {why}; {fix}, or set MAINSPRING_WORKER_USER=root "
            "to run routines as root"
        )
    return WorkerUser(
        account.pw_uid, account.pw_gid, f"routines run as {name} (uid {account.pw_uid})"
    )


def keep_import_folders(uid: int, gid: int, path: list[str]) -> None:
    """Before switching: import through an open handle each folder of `path` the user could
    not reach by name, so the interpreter's own library keeps importing.

    An interpreter installed under a home only its owner may enter (pyenv's under /root, as
    here) would otherwise fail at the routine's first `import csv`. A folder reached through
    /proc/self/fd/N is checked only from that folder down, so this opens nothing else: the
    folders stay as readable as their own modes say.
    """
    for index, entry in enumerate(path):
        if not entry or not Path(entry).is_dir():
            continue
        if first_blocked(Path(entry), uid, gid) is None:
            continue
        handle = os.open(entry, os.O_PATH | os.O_DIRECTORY)
        path[index] = f"/proc/self/fd/{handle}"
    sys.path_importer_cache.clear()


def become_worker_user(environ: MutableMapping[str, str]) -> None:
    """In a worker before any routine code: switch to the user the runner chose, for good."""
    uid, gid = environ.pop(UID_VARIABLE, None), environ.pop(GID_VARIABLE, None)
    if uid is None or gid is None:
        return
    keep_import_folders(int(uid), int(gid), sys.path)
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    if os.getuid() != int(uid) or os.geteuid() != int(uid):
        raise PermissionError(f"the worker could not become uid {uid}")
    # A change of user makes the process undumpable, which hands its /proc files to root;
    # the worker resets its own peak memory there (clear_refs), so it takes them back.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1)
