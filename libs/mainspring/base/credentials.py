"""NATS passwords kept in the home by `mainspring up`: one file per user, readable by its owner only.

Each file holds `user:password`. `up` generates them once and reuses them on the next `up`, so a
client, a service or a restarted nats-server agree across restarts; the CLI, SDK and web page on
the same machine read the `client` file, and each service under `up` gets only its own file's
path (never the password in its environment, which routine workers could otherwise inherit).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

FOLDER = "credentials"
SUFFIX = ".secret"


class CredentialsError(ValueError):
    """A credentials file is missing, unreadable, shared or malformed."""


def folder(home: Path) -> Path:
    """Where `mainspring up` keeps the passwords of its NATS users."""
    return home / FOLDER


def path_of(home: Path, user: str) -> Path:
    """The file holding `user`'s password under home."""
    return folder(home) / f"{user}{SUFFIX}"


def read(path: Path) -> tuple[str, str]:
    """(user, password) from a `user:password` file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise CredentialsError(
            f"cannot read NATS credentials {path}: {exc.strerror}; check MAINSPRING_NATS_CREDENTIALS"
        ) from None
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise CredentialsError(
            f"NATS credentials {path} must hold one line `user:password`; rewrite it or delete "
            "it (the next `mainspring up` generates a new one)"
        )
    return user, password


def _write_private(path: Path, text: str) -> None:
    # Created with 0600 in one step: the password is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def new_password() -> str:
    """A random password nats-server reads as a string from its environment.

    nats-server parses an environment variable's value like a config value, so a password
    starting with a digit is read as a number and refused: this one starts with a letter.
    """
    return f"p{secrets.token_hex(24)}"


def ensure(home: Path, users: Iterable[str]) -> dict[str, str]:
    """Each user's password, generated into home on first use and reused afterwards."""
    target = folder(home)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)
    passwords: dict[str, str] = {}
    for user in users:
        path = path_of(home, user)
        if not path.exists():
            _write_private(path, f"{user}:{new_password()}\n")
        # An older or copied file may have been opened up: keep it private to its owner.
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)
        found_user, password = read(path)
        if found_user != user:
            raise CredentialsError(
                f"NATS credentials {path} are for {found_user!r}, not {user!r}: delete the file "
                "and run `mainspring up` again"
            )
        passwords[user] = password
    return passwords


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` with user and password in it (nats-py reads them from there)."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def has_credentials(url: str) -> bool:
    """Does the URL carry a user (and maybe a password or token)?"""
    return bool(urlsplit(url).username)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
