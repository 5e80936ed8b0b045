"""Embedded mode: the whole system inside the caller's asyncio application.

`async with mainspring.embedded(namespace=ns, home=...) as manager:` is lythonic's
`TriggerManager(namespace, store, provenance)`: it starts the embedded nats-server and the
services (as `mainspring up` does, each its own process; runs execute in runner workers),
registers the namespace's DAGs and declared triggers, and offers activate, deactivate, fire,
get_events, get_run, start and stop. Leaving the block stops everything it started.

The ticker is the poll loop: it runs between `start()` and `stop()`, so timed triggers fire
only then, while `fire()` works whenever the trigger is active (as in lythonic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from mainspring.apps.status import collect_status, everything_ready, wait_until
from mainspring.apps.up import SERVICES, System
from mainspring.base.settings import Settings
from mainspring.client import Client
from mainspring.client.dags import DagsRegistered, register
from mainspring.compose import DagProvenance, Namespace
from mainspring.sdk.bundle import BundleError, bundle_files
from mainspring.storage.dag_definitions import DagRegistration, namespace_registration

log = logging.getLogger("mainspring.embedded")

# Set in every process an embedded system starts (services, workers, poll functions): a
# module that calls embedded() at import time would otherwise start a second system inside
# the runner that imports it.
EMBEDDED_MARKER = "MAINSPRING_EMBEDDED_BY"
SUPERVISE_EVERY_S = 0.5
KEEP_IN_HOME = DagProvenance()


class EmbeddedError(RuntimeError):
    """Embedded mode cannot start as asked; the message says why and what to change."""


def embedded(
    namespace: Namespace,
    home: Path | str = Path(".mainspring"),
    provenance: DagProvenance | None = KEEP_IN_HOME,
    *,
    runners: int = 1,
    ready_timeout_s: float = 60.0,
) -> EmbeddedSystem:
    """The system for `namespace`, started by `async with` (lythonic's TriggerManager).

    provenance: where run history is kept (default: `runs.db` in `home`); None keeps no run
    or node records, only trigger events.
    """
    return EmbeddedSystem(namespace, Path(home), provenance, runners, ready_timeout_s)


def settings_for(home: Path, provenance: DagProvenance | None) -> Settings:
    """The settings of an embedded system: everything under `home` but a provenance file."""
    home = home.resolve()
    database = (
        Path(provenance.path).resolve()
        if provenance is not None and provenance.path is not None
        else home / "runs.db"
    )
    return Settings(
        home=home,
        nats_url=None,
        database_url=f"sqlite:///{database}",
        dataset_root=str(home / "datasets"),
        artifact_root=str(home / "artifacts"),
    )


def check_home_outside_bundle(home: Path, folder: Path) -> None:
    """EmbeddedError when the home (the bus's store, logs) would be bundled as code."""
    home, folder = home.resolve(), folder.resolve()
    if home == folder or folder in home.parents:
        inside = [p for p in bundle_files(folder) if home in p.resolve().parents]
        if inside or home == folder:
            raise EmbeddedError(
                f"home {home} is inside {folder}, whose files are bundled as the code: put "
                "the home elsewhere, or name it .mainspring (never bundled)"
            )


class EmbeddedSystem:
    """A running embedded system: lythonic's TriggerManager on Mainspring's services."""

    def __init__(
        self,
        namespace: Namespace,
        home: Path,
        provenance: DagProvenance | None,
        runners: int,
        ready_timeout_s: float,
    ) -> None:
        self.namespace = namespace
        self.home = home.resolve()
        self.provenance = provenance
        self.settings = settings_for(home, provenance)
        self.runners = runners
        self.ready_timeout_s = ready_timeout_s
        self.registered: DagsRegistered | None = None
        self._system: System | None = None
        self._client: Client | None = None
        self._supervisor: asyncio.Task[None] | None = None

    # --- lythonic's TriggerManager ----------------------------------------------------------

    async def activate(self, name: str) -> None:
        """Switch a trigger on (its definition and last run are kept)."""
        await self.client.activate_trigger(name)

    async def deactivate(self, name: str) -> None:
        """Switch a trigger off without losing its definition or history."""
        await self.client.deactivate_trigger(name)

    async def fire(self, name: str, payload: dict[str, Any] | None = None) -> str:
        """Fire an active trigger now (payload None: its default); returns the run id."""
        return await self.client.fire_trigger(name, payload)

    async def get_events(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The trigger's firings, newest first: `fired_at`, `status`, `run_id`, `payload`."""
        return await self.client.trigger_events(name, limit)

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A recorded run with its node table (`["dag"]`); None when none is kept."""
        return await self.client.get_run(run_id)

    async def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until a run has ended and return its record (needs provenance)."""
        if self.provenance is None:
            raise EmbeddedError(
                "runs are not recorded with provenance=None, so there is nothing to wait on: "
                "watch get_events(name), or pass a DagProvenance"
            )
        return await self.client.wait(run_id, timeout=timeout)

    def start(self) -> None:
        """Let timed triggers fire: start the ticker (lythonic's poll loop)."""
        system = self._running_system()
        if not any(child.name == "ticker" for child in system.children):
            system.start_service("ticker")
            system.write_state("up")

    def stop(self) -> None:
        """Stop timed firing; definitions, activation and history stay."""
        system = self._running_system()
        system.stop_service("ticker")
        system.write_state("up")

    @property
    def polling(self) -> bool:
        """Are timed triggers firing (between start() and stop())?"""
        return self._system is not None and any(c.name == "ticker" for c in self._system.children)

    # --- the system's life ------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The SDK client connected to this system."""
        if self._client is None:
            raise EmbeddedError(
                "the embedded system is not running: use it inside `async with mainspring.embedded(...)`"
            )
        return self._client

    def _running_system(self) -> System:
        if self._system is None:
            raise EmbeddedError(
                "the embedded system is not running: use it inside `async with mainspring.embedded(...)`"
            )
        return self._system

    async def __aenter__(self) -> EmbeddedSystem:
        if os.environ.get(EMBEDDED_MARKER):
            raise EmbeddedError(
                "mainspring.embedded() ran while a runner imported your module: put the code "
                'that starts it under `if __name__ == "__main__":`'
            )
        registration = await asyncio.to_thread(self._registration)
        service_env = {EMBEDDED_MARKER: str(os.getpid())}
        if self.provenance is None:
            service_env["MAINSPRING_RECORD_RUNS"] = "false"
        # Started from this (the loop's) thread: the parts get SIGTERM when the thread that
        # started them ends (Linux's parent-death signal). The ticker waits for start().
        self._system = System(
            self.settings,
            runners=self.runners,
            web_port=None,
            services=tuple(s for s in SERVICES if s != "ticker"),
            service_env=service_env,
        )
        try:
            self._system.start()
            self.settings = self.settings.model_copy(update={"nats_url": self._system.nats_url})
            await self._wait_ready()
            self._supervisor = asyncio.create_task(self._supervise())
            self._client = await Client.connect(self.settings)
            # A part is "ready" once connected to the bus; the recorder answers queries a
            # moment later, once its subscribers are bound: the caller's first get_events
            # must not find nobody there.
            await self._client.wait_ready(self.ready_timeout_s)
            self.registered = await register(self._client, registration)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    def _registration(self) -> DagRegistration:
        try:
            registration = namespace_registration(self.namespace, datetime.now(UTC))
        except BundleError as exc:
            raise EmbeddedError(str(exc)) from None
        check_home_outside_bundle(self.home, registration.folder)
        return registration

    async def _wait_ready(self) -> None:
        ready = await asyncio.to_thread(
            wait_until,
            lambda: everything_ready(collect_status(self.settings)),
            self.ready_timeout_s,
        )
        if not ready:
            parts = collect_status(self.settings).get("parts") or []
            waiting = [f"{p['name']} {p['state']}" for p in parts if p.get("state") != "ready"]
            raise EmbeddedError(
                f"the embedded system in {self.home} was not ready after "
                f"{self.ready_timeout_s:g}s ({', '.join(waiting)}); see {self.home / 'logs'}"
            )

    async def _supervise(self) -> None:
        """Restart a part that died, as `mainspring up` does."""
        while self._system is not None:
            self._system.supervise_once()
            if self._system.failure:
                log.error("embedded system: %s", self._system.failure)
                return
            await asyncio.sleep(SUPERVISE_EVERY_S)

    async def _close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
        if self._system is not None:
            system, self._system = self._system, None
            await asyncio.to_thread(system.stop)
