"""The home's NATS passwords, how settings use them, and the config `up` gives nats-server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mainspring.apps.up import ServerSecurity, nats_server_config
from mainspring.base import credentials
from mainspring.base.settings import ConfigError, Settings


def test_passwords_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    first = credentials.ensure(tmp_path, ["runner", "client"])
    again = credentials.ensure(tmp_path, ["runner", "client"])

    assert first == again
    assert first["runner"] != first["client"]
    assert stat.S_IMODE(credentials.folder(tmp_path).stat().st_mode) == 0o700
    for user in ("runner", "client"):
        path = credentials.path_of(tmp_path, user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == f"{user}:{first[user]}\n"


def test_a_file_opened_up_is_made_private_again(tmp_path: Path) -> None:
    credentials.ensure(tmp_path, ["runner"])
    path = credentials.path_of(tmp_path, "runner")
    path.chmod(0o644)

    credentials.ensure(tmp_path, ["runner"])

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_password_reads_as_a_string_in_nats_config() -> None:
    # nats-server parses an environment value like config: a leading digit makes a number.
    assert all(credentials.new_password()[0].isalpha() for _ in range(200))


def test_a_file_for_another_user_is_refused_with_the_fix(tmp_path: Path) -> None:
    credentials.ensure(tmp_path, ["runner"])
    credentials.path_of(tmp_path, "runner").rename(credentials.path_of(tmp_path, "client"))

    with pytest.raises(credentials.CredentialsError, match="are for 'runner', not 'client'"):
        credentials.ensure(tmp_path, ["client"])


def test_a_malformed_file_says_what_it_must_hold(tmp_path: Path) -> None:
    path = tmp_path / "broken.secret"
    path.write_text("no colon here")

    with pytest.raises(credentials.CredentialsError, match="must hold one line `user:password`"):
        credentials.read(path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://runner:s3cret@nats:4222", "nats://runner:***@nats:4222"),
        ("nats://nats:4222", "nats://nats:4222"),
        ("tls://client:pw@127.0.0.1:4222", "tls://client:***@127.0.0.1:4222"),
    ],
)
def test_urls_in_messages_never_show_a_password(url: str, expected: str) -> None:
    assert credentials.redacted(url) == expected


def up_home(tmp_path: Path, nats_url: str = "nats://127.0.0.1:4333") -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "up.json").write_text(json.dumps({"nats_url": nats_url}))
    credentials.ensure(home, ["client", "runner"])
    return home


def test_a_client_on_the_machine_uses_the_homes_client_credentials(tmp_path: Path) -> None:
    home = up_home(tmp_path)
    password = credentials.read(credentials.path_of(home, "client"))[1]

    assert Settings(home=home).resolved_nats_url() == f"nats://client:{password}@127.0.0.1:4333"


def test_a_service_uses_its_own_credentials_file(tmp_path: Path) -> None:
    home = up_home(tmp_path)
    runner = credentials.path_of(home, "runner")
    password = credentials.read(runner)[1]
    settings = Settings(home=home, nats_url="nats://127.0.0.1:4333", nats_credentials=str(runner))

    assert settings.resolved_nats_url() == f"nats://runner:{password}@127.0.0.1:4333"


def test_an_explicit_url_with_a_user_is_used_as_it_is(tmp_path: Path) -> None:
    home = up_home(tmp_path)
    explicit = "nats://ops:their-own@nats.example:4222"

    assert Settings(home=home, nats_url=explicit).resolved_nats_url() == explicit


def test_a_credentials_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, nats_url="nats://n:4222", nats_credentials=str(tmp_path / "missing")
    )

    with pytest.raises(ConfigError, match=r"cannot read NATS credentials .*missing"):
        settings.resolved_nats_url()


def test_up_serves_the_shipped_users_and_its_monitor_on_loopback(tmp_path: Path) -> None:
    config = nats_server_config(tmp_path, "always", 8222, ServerSecurity())

    assert "include ./permissions.conf\n" in config
    assert 'http: "127.0.0.1:8222"\n' in config
    assert "tls" not in config


def test_up_serves_tls_with_both_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")
    key.write_text("key")
    security = ServerSecurity.from_settings(
        Settings(nats_tls_cert=str(cert), nats_tls_key=str(key))
    )

    config = nats_server_config(tmp_path, None, None, security)

    assert security.tls
    assert f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n' in config


@pytest.mark.parametrize(
    ("cert", "key", "error"),
    [
        ("c.pem", None, "needs both MAINSPRING_NATS_TLS_CERT and MAINSPRING_NATS_TLS_KEY"),
        ("missing.pem", "k.pem", "MAINSPRING_NATS_TLS_CERT .*missing.pem is not a file"),
    ],
)
def test_tls_settings_that_cannot_work_are_one_line_errors(
    tmp_path: Path, cert: str, key: str | None, error: str
) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    settings = Settings(
        nats_tls_cert=str(tmp_path / cert), nats_tls_key=str(tmp_path / key) if key else None
    )

    with pytest.raises(ConfigError, match=error):
        ServerSecurity.from_settings(settings)
