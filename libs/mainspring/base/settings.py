"""Settings shared by the CLI and the services, read from MAINSPRING_* environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mainspring.base import credentials
from mainspring.base.units import parse_memory


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and how to fix it."""


class Settings(BaseSettings):
    """Where the bus, the database and the stores are."""

    model_config = SettingsConfigDict(env_prefix="MAINSPRING_", extra="ignore")

    home: Path = Path(".mainspring")
    nats_url: str | None = None
    # A file holding `user:password` for the bus (`mainspring up` gives each service its own);
    # unset, a URL without a user connects with the home's client credentials, if `up` made any.
    nats_credentials: str | None = None
    # With both set, `mainspring up` starts nats-server with TLS on and clients connect with TLS.
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    # The certificate (or CA) clients trust for the server's; under `up`, its certificate.
    nats_tls_ca: str | None = None
    database_url: str | None = None
    dataset_root: str | None = None
    artifact_root: str | None = None
    user: str | None = None
    max_hops: int = 8
    crash_loop_threshold: int = 5
    runner_slots: int = 2
    duplicate_window_s: float = 600.0
    stream_replicas: int = 1
    # Leases of a killed runner free themselves after this long (refreshed every heartbeat);
    # the leases bucket's TTL, so `mainspring setup` and the runners must agree on it.
    lease_ttl_s: float = 30.0
    # A runner's capacity entry (KV `runners`) is gone this long after its last refresh
    # (every heartbeat): the bucket's TTL, so `mainspring setup` and the services agree on it.
    runner_capacity_ttl_s: float = Field(default=15.0, gt=0)
    # Byte limits of the stream and the buckets (sizes like 2GiB), declared by `mainspring
    # setup` and checked by every service, so both must be given the same. The stream drops
    # its oldest messages when full; a bucket refuses new writes (ARCHITECTURE.md, "Bounded
    # storage"). nats-server reserves each limit against its disk when declaring it.
    stream_max_bytes: int = Field(default=2 * 2**30, gt=0)
    bucket_max_bytes: int = Field(default=128 * 2**20, gt=0)
    ledger_max_bytes: int = Field(default=2**30, gt=0)
    bundles_max_bytes: int = Field(default=2**30, gt=0)
    # Run progress (stream MAINSPRING_PROGRESS) is kept this long and this big, then its
    # oldest reports go: an hour lets the recorder catch up after a short outage; a longer
    # outage loses only the progress history, never a run's lifecycle.
    progress_max_age_s: float = Field(default=3600.0, gt=0)
    progress_max_bytes: int = Field(default=256 * 2**20, gt=0)
    # How often the embedded nats-server of `mainspring up` fsyncs: "always" (every write,
    # survives a machine crash) or an interval like "1s"; empty keeps nats' own 2 minutes.
    nats_sync_interval: str = "always"
    # Where services append their sampled spans as JSON lines for `mainspring runs trace`
    # (`mainspring up` sets it to <home>/traces); unset, services write no span files.
    trace_dir: str | None = None
    # A service serves /healthz, /readyz and /metrics on this port (`mainspring up` assigns
    # one per process); unset, it serves none.
    http_port: int | None = None
    # All interfaces, for containers; `mainspring up` keeps its processes on loopback.
    http_host: str = "0.0.0.0"
    # The bearer token every /api/ request of the web service must carry; unset, the web
    # service answers anyone and so only listens on loopback.
    web_token: str | None = None

    @field_validator(
        "stream_max_bytes",
        "bucket_max_bytes",
        "ledger_max_bytes",
        "bundles_max_bytes",
        "progress_max_bytes",
        mode="before",
    )
    @classmethod
    def _size(cls, value: Any) -> Any:
        # Written like a routine's `memory`: 512MiB, 2GiB, or plain bytes.
        return parse_memory(value) if isinstance(value, str) else value

    def resolved_nats_url(self) -> str:
        """The NATS URL from the environment, else the one `mainspring up` wrote in home, with
        the credentials to use in it (MAINSPRING_NATS_CREDENTIALS, else the home's client)."""
        url = self.nats_url
        if not url:
            state = self.up_state()
            if state is None:
                raise ConfigError(
                    f"no NATS server: start one with `mainspring up` (home {self.home}) "
                    "or set MAINSPRING_NATS_URL"
                )
            url = str(state["nats_url"])
        if credentials.has_credentials(url):
            return url
        if self.nats_credentials:
            path = Path(self.nats_credentials)
        else:
            path = credentials.path_of(self.home, "client")
            if not path.exists():
                return url
        try:
            user, password = credentials.read(path)
        except credentials.CredentialsError as exc:
            raise ConfigError(str(exc)) from None
        return credentials.with_credentials(url, user, password)

    def resolved_nats_tls_ca(self) -> str | None:
        """The certificate clients trust for the bus: the setting, else what `up` serves."""
        if self.nats_tls_ca:
            return self.nats_tls_ca
        state = self.up_state()
        found = state.get("nats_tls_ca") if state else None
        return str(found) if found else None

    def resolved_trace_dir(self) -> Path:
        """Where `mainspring runs trace` looks for spans: the setting, else <home>/traces."""
        return Path(self.trace_dir) if self.trace_dir else self.home / "traces"

    def resolved_database_url(self) -> str:
        """The run history database; SQLite under home by default."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'runs.db').resolve()}"

    def resolved_dataset_root(self) -> str:
        """Where datasets live (a local path or an object-store URI)."""
        return self.dataset_root or str((self.home / "datasets").resolve())

    def resolved_artifact_root(self) -> str:
        """Where run artifacts live (a local path or an object-store URI)."""
        return self.artifact_root or str((self.home / "artifacts").resolve())

    def up_state_path(self) -> Path:
        """The file `mainspring up` writes while it runs."""
        return self.home / "up.json"

    def up_state(self) -> dict[str, object] | None:
        """What the running `mainspring up` published about itself, if one runs."""
        try:
            loaded = json.loads(self.up_state_path().read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None
