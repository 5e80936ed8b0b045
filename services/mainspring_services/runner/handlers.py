"""Runner handlers: take a run request from the shared work queue, execute it, report it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker, NatsMessage

from mainspring.contract import subjects
from mainspring.contract.messages import (
    ISOLATIONS,
    ArtifactRef,
    CancelRun,
    DagRecord,
    RequestRun,
    RunCompleted,
    RunHeartbeat,
    RunLogged,
    RunProgressed,
    RunQueued,
    RunResources,
    RunStarted,
)
from mainspring.runtime import metrics
from mainspring.runtime.service import (
    consumer,
    delivered,
    package_version,
    publish_event,
)
from mainspring.sdk.bundle import extract_bundle
from mainspring.storage.artifacts import run_location, store_failure
from mainspring.storage.capacity import CapacityCatalog, RunnerCapacity
from mainspring.storage.runlogs import store_log
from mainspring.storage.state import (
    StateConflict,
    StateTooLarge,
    load_state,
    save_state,
)
from mainspring_services.runner import core, worker_user
from mainspring_services.runner.coordination import CancelMarks
from mainspring_services.runner.core import Outcome
from mainspring_services.runner.pool import ForkServer, Worker, WorkerPool
from mainspring_services.runner.ports import Admission, RunnerParts
from mainspring_services.runner.process import ChildRun
from mainspring_services.runner.settings import RunnerSettings

log = logging.getLogger("mainspring.runner")


@dataclass(frozen=True)
class Prepared:
    """What an attempt that may start knows: its number, the routine's state (with its
    revision) and when this runner took the run's claim (monotonic seconds)."""

    attempt: int
    state: dict[str, Any]
    state_revision: int
    claimed_at: float


def _now() -> datetime:
    return datetime.now(UTC)


def reconnects(broker: NatsBroker) -> int:
    """How often the broker's connection was re-established (0 before it connected)."""
    try:
        stats = getattr(broker.connection, "stats", None)
    except Exception:  # noqa: BLE001 - not connected (yet): nothing was re-established
        return 0
    return int(stats.get("reconnects", 0)) if isinstance(stats, dict) else 0


def memory_info() -> tuple[int, int]:
    """(available, total) bytes of this machine, from /proc/meminfo."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    total = values.get("MemTotal", 0)
    return values.get("MemAvailable", total), total


class Runner:
    """Executes runs, one child process each, at most `runner_slots` at a time."""

    def __init__(
        self, broker: NatsBroker, settings: RunnerSettings, parts: RunnerParts, name: str
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.name = name
        self.bundles = parts.bundles
        self.ledger = parts.ledger
        self.leases = parts.leases
        self.claims = parts.claims
        self.state_kv = parts.state
        self.capacity = parts.capacity
        # Every live runner's entry (this one's too), for the memory hold reason.
        self.runners = CapacityCatalog(settings.runner_capacity_ttl_s)
        self.started_at = _now()
        self.host = socket.gethostname()
        self.registering: asyncio.Task[None] | None = None
        self.worker_user = worker_user.choose(
            settings.worker_user, os.geteuid(), self.worker_reaches()
        )
        self.pool = WorkerPool(
            self.child_env(),
            spares=settings.runner_slots if settings.warm_workers else 0,
            max_idle=settings.max_idle_workers,
            max_runs=settings.max_runs_per_worker,
            max_rss_growth=settings.worker_max_rss_growth,
        )
        self.fork_server = ForkServer(self.child_env())
        self.active: dict[str, ChildRun] = {}
        self.cancel_marks = CancelMarks(parts.ledger, functools.partial(reconnects, broker))
        self.handed_back: set[str] = set()
        self.announced_holds: dict[str, str] = {}
        # Concurrency slots held by the runs here, freed before their completion goes out.
        self.leases_held: dict[str, str] = {}
        self.draining = False
        # Runs started here, one slot each; the intake is woken whenever one ends.
        self.admitted: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()

    def worker_reaches(self) -> list[Path]:
        """Folders a worker must enter by name: the code and local stores (it imports the
        interpreter's library through handles where it cannot, see worker_user). Its output
        goes through the runner, which writes the log."""
        places = [self.settings.bundle_cache()]
        for root in (self.settings.resolved_artifact_root(), self.settings.resolved_dataset_root()):
            if "://" not in root:
                places.append(Path(root))
        return places

    def child_env(self) -> dict[str, str]:
        """Environment of every worker process (see worker_user.py for what it never holds)."""
        return {
            **self.worker_user.env(),
            "MAINSPRING_ARTIFACT_ROOT": self.settings.resolved_artifact_root(),
            "MAINSPRING_DATASET_ROOT": self.settings.resolved_dataset_root(),
        }

    async def start(self) -> None:
        """Hand the dataset root to the worker user and start the warm workers."""
        log.info("%s", self.worker_user.note)
        dataset_root = self.settings.resolved_dataset_root()
        if "://" not in dataset_root:
            # Routines create their datasets here as the worker user.
            self.worker_user.share(Path(dataset_root))
        await self.pool.fill()
        # Registered once the workers are warm: what the entry offers is ready.
        await self.capacity.put(self.capacity_entry())
        await self.runners.start(self.capacity)
        self.registering = asyncio.create_task(self._refresh_capacity())

    def capacity_entry(self) -> RunnerCapacity:
        """What this runner offers now: slots, memory, isolation modes."""
        available, total = memory_info()
        return RunnerCapacity(
            instance=self.name,
            host=self.host,
            version=package_version(),
            started_at=self.started_at,
            refreshed_at=_now(),
            slots=max(1, self.settings.runner_slots),
            busy=len(self.admitted),
            memory_total=total,
            memory_available=available,
            isolation=list(ISOLATIONS),
        )

    async def _refresh_capacity(self) -> None:
        # Every heartbeat, well within the bucket's TTL: a runner that stops refreshing
        # (killed, frozen) is gone from the registry once the TTL passes.
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.capacity.put(self.capacity_entry())
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("could not refresh this runner's capacity entry: %s", exc)

    async def unregister(self) -> None:
        """Take this runner's entry out of the registry: it takes no more runs."""
        if self.registering is not None:
            self.registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.registering
            self.registering = None
        try:
            await self.capacity.remove(self.name)
        except Exception as exc:  # noqa: BLE001 - the bucket's TTL removes it anyway
            log.warning("could not delete this runner's capacity entry: %s", exc)
        await self.runners.stop()

    async def bundle_dir(self, digest: str) -> Any:
        """The unpacked code of a routine version (fetched once per runner)."""
        target = self.settings.bundle_cache() / digest
        if not (target / ".complete").exists():
            extract_bundle(await self.bundles.get_bundle(digest), target)
        return target

    async def announce_hold(self, request: RequestRun, reason: str) -> None:
        """Say why a run waits (once per reason)."""
        if self.announced_holds.get(request.run_id) != reason:
            self.announced_holds[request.run_id] = reason
            await publish_event(
                self.broker,
                RunQueued(run_id=request.run_id, routine=request.routine, reason=reason, at=_now()),
                subjects.RUN_QUEUED,
            )

    async def hold(self, request: RequestRun, message: NatsMessage, reason: str) -> None:
        """Leave the run in the queue for later, saying why (once per reason)."""
        await self.announce_hold(request, reason)
        # Waiting is not an attempt: this delivery must not count against the retries.
        await self.give_back_uncharged(request, message, self.settings.hold_retry_s)

    def free_slots(self) -> int:
        """Slots with no run started in them."""
        return max(1, self.settings.runner_slots) - len(self.admitted)

    def launch(self, request: RequestRun, message: NatsMessage) -> None:
        """Execute a run in a free slot, in the background: its task acks or naks the message
        when the run ends, and frees the slot."""
        task = asyncio.create_task(self._run_admitted(request, message))
        self.admitted.add(task)
        task.add_done_callback(self._slot_freed)

    def _slot_freed(self, task: asyncio.Task[None]) -> None:
        self.admitted.discard(task)
        self.wake.set()

    async def keep_alive(self, message: NatsMessage) -> None:
        """Keep a pulled request this runner's while it waits for a slot (in-progress acks)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            with contextlib.suppress(Exception):
                await message.in_progress()

    async def _run_admitted(self, request: RequestRun, message: NatsMessage) -> None:
        try:
            await self.execute(request, message)
            if message.committed is None:
                await message.ack()
        except Exception:
            log.exception(
                "run %s of %s: runner fault; redelivering", request.run_id, request.routine
            )
            with contextlib.suppress(Exception):
                await message.nack(delay=5.0)

    async def execute(self, request: RequestRun, message: NatsMessage) -> None:
        """Take one delivery of a run: cancel, hold, start an attempt, retry or complete."""
        started_at = _now()
        if self.cancel_marks.known(request.run_id):
            await self.complete_cancelled(request)
            return
        if request.options.memory_limit:
            available, total = memory_info()
            others = [r for r in self.runners.live() if r.instance != self.name]
            waiting = core.memory_hold_reason(
                request.options.memory_limit, available, total, self.host, others
            )
            if waiting:
                await self.hold_unless_cancelled(request, message, waiting)
                return
        lease: str | None = None
        if request.options.max_concurrent:
            lease = await self.leases.acquire(
                request.routine, request.options.max_concurrent, request.run_id
            )
            if lease is None:
                holders = await self.leases.holders(request.routine, request.options.max_concurrent)
                reason = core.concurrency_reason(
                    request.routine, request.options.max_concurrent, holders
                )
                await self.hold_unless_cancelled(request, message, reason)
                return
        self.announced_holds.pop(request.run_id, None)
        if lease is not None:
            self.leases_held[request.run_id] = lease
        try:
            await self.attempt(request, message, started_at)
        finally:
            await self.release_lease(request.run_id)

    async def release_lease(self, run_id: str) -> None:
        """Free the run's concurrency slot, if it holds one (once)."""
        lease = self.leases_held.pop(run_id, None)
        if lease is not None:
            await self.leases.release(lease)

    async def complete_cancelled(self, request: RequestRun) -> None:
        """End a run that was cancelled before it started."""
        await self.complete(
            request, Outcome("cancelled", {}, "cancelled before it started"), None, []
        )

    async def hold_unless_cancelled(
        self, request: RequestRun, message: NatsMessage, reason: str
    ) -> None:
        """Hold a run back, unless it was cancelled meanwhile: a cancelled run is not queued."""
        if await self.ledger.cancel_requested(request.run_id):
            await self.complete_cancelled(request)
            return
        await self.hold(request, message, reason)

    async def prepare(
        self, request: RequestRun, message: NatsMessage, started_at: datetime
    ) -> Prepared | None:
        """The attempt number and the routine's state (with its revision) for a run that may
        start; None when it ended here instead (lost, cancelled, or already settled)."""
        # Every delivery is an attempt unless marked uncharged (held, handed back, running
        # elsewhere), so a runner killed mid-run is charged for it with nothing written
        # before the start; a first delivery is attempt 1 with nothing to read.
        deliveries = delivered(message.raw_message)
        attempt = (
            1
            if deliveries <= 1
            else deliveries - await self.ledger.uncharged_deliveries(request.run_id)
        )
        lost = core.lost_run_outcome(attempt, request.options.retries, self.settings.run_ack_wait_s)
        if lost is not None:
            await self.complete(request, lost, started_at, [])
            return None
        # Everything the start needs from the bus in one round trip, not four in a row: the
        # cancel mark, an outcome settled by an earlier copy of this request, the run's claim
        # (no other copy is running it now) and the routine's state. The outcome is read on
        # first deliveries too: the dispatcher's fence keeps it from publishing a request
        # twice, but a server that lost its consumer state hands a request out again as a
        # first delivery, and a completion published again past the duplicate window
        # requests its downstream run again; the settled attempt's claim would answer them
        # only while the leases bucket keeps it (ARCHITECTURE.md).
        # Stamped before the claim is asked for: a freeze anywhere after it counts.
        claimed_at = time.monotonic()
        cancelled, settled, claimed, (state, state_revision) = await asyncio.gather(
            self.cancel_marks.requested(request.run_id, redelivered=deliveries > 1),
            self.ledger.settled(request.run_id),
            self.claims.claim(request.run_id),
            load_state(self.state_kv, request.routine),
        )
        if claimed in ("taken", "done") and settled is None:
            # The claim's last attempt may have settled the run after this copy's outcome
            # read (it leaves its claim as it was, see RunClaims): read it again.
            settled = await self.ledger.settled(request.run_id)
        ours = claimed in ("claimed", "taken")
        if settled is not None:
            log.warning(
                "run %s of %s already ended %s: not run again",
                request.run_id,
                request.routine,
                settled.status,
            )
            if ours:
                await self.claims.release(request.run_id)
            await publish_event(self.broker, settled, settled.subject())
            return None
        if not ours:
            # Another copy runs now. Not its attempt: this delivery goes uncharged, and this
            # copy returns after the ack wait (refused as settled then, or taken over once
            # the holder stopped refreshing its claim).
            log.info(
                "run %s of %s is running elsewhere; this copy waits",
                request.run_id,
                request.routine,
            )
            await self.give_back_uncharged(request, message, self.settings.run_ack_wait_s)
            return None
        if cancelled:
            await self.claims.release(request.run_id)
            await self.complete_cancelled(request)
            return None
        return Prepared(attempt, state, state_revision, claimed_at)

    async def attempt(
        self, request: RequestRun, message: NatsMessage, started_at: datetime
    ) -> None:
        """Start one attempt of a run and report how it ended (or schedule its retry)."""
        prepared = await self.prepare(request, message, started_at)
        if prepared is None:
            return
        settled = False
        try:
            settled = await self.run_attempt(request, message, started_at, prepared)
        finally:
            if not settled:
                # A retry scheduled, the run handed back, or a runner fault: the attempt is
                # over here, so the next copy starts the next attempt without waiting for the
                # claim to go stale.
                with contextlib.suppress(Exception):
                    await self.claims.release(request.run_id)

    async def publish_progress(self, run_id: str, payload: dict[str, Any]) -> None:
        """Publish a progress report of a running run; one that cannot be stored (its
        stream missing mid-setup, the bus away) is logged and never fails the run."""
        progress = RunProgressed(
            run_id=run_id,
            fraction=payload["fraction"],
            message=payload.get("message", ""),
            at=_now(),
        )
        try:
            await publish_event(self.broker, progress, subjects.RUN_PROGRESS)
        except Exception as exc:  # noqa: BLE001 - a lost report never fails the run
            log.warning(
                "progress of run %s not stored (%s: %s); the run goes on",
                run_id,
                type(exc).__name__,
                exc,
            )

    async def run_attempt(
        self,
        request: RequestRun,
        message: NatsMessage,
        started_at: datetime,
        prepared: Prepared,
    ) -> bool:
        """Run the claimed attempt in a worker and report how it ended (or schedule its retry);
        whether the run's outcome was settled."""
        attempt, state, state_revision = prepared.attempt, prepared.state, prepared.state_revision
        try:
            bundle = await self.bundle_dir(request.routine_version)
        except Exception as exc:  # noqa: BLE001 - the run fails with why
            outcome = Outcome(
                "failed",
                {},
                f"cannot fetch code {request.routine_version[:12]}: {exc}",
                phase="start",
            )
            await self.complete(request, outcome, started_at, [])
            return True
        started = RunStarted(
            run_id=request.run_id,
            routine=request.routine,
            runner=self.name,
            attempt=attempt,
            started_at=started_at,
            isolation=request.options.isolation,
            artifact_location=run_location(self.settings.resolved_artifact_root(), request.run_id),
        )
        ended = asyncio.Event()
        announced = asyncio.create_task(self.announce(started, ended))
        if attempt == 1:
            metrics.run_started(request, started_at)
        # The worker saves the run's files as its user: hand it their folder.
        artifact_root = self.settings.resolved_artifact_root()
        if "://" not in artifact_root:
            try:
                self.worker_user.give(
                    Path(run_location(artifact_root, request.run_id)), folder=True
                )
            except OSError as exc:
                # An unwritable store fails the run when it saves there, with the reason;
                # it is no reason for the runner to drop the run it holds.
                log.warning(
                    "%s", store_failure(artifact_root, f"the folder of run {request.run_id}", exc)
                )
        child = ChildRun(
            request,
            bundle,
            self.local_log(request.run_id),
            self.settings.run_log_max_bytes,
        )
        child.state = state
        self.active[request.run_id] = child

        async def on_child_message(payload: dict[str, Any]) -> None:
            if payload.get("type") == "log":
                await self.publish_log(request.run_id, payload)
            elif payload.get("type") == "progress":
                await self.publish_progress(request.run_id, payload)

        heartbeat = asyncio.create_task(self._heartbeat(message, request.run_id))
        try:
            worker = await self.worker_for(request)
            if not await self.claim_still_ours(request, prepared.claimed_at):
                heartbeat.cancel()
                self.active.pop(request.run_id, None)
                ended.set()
                await self.release_worker(request, worker, Outcome("completed", {}), [])
                await self.yield_to_successor(request, message)
                return False
            try:
                outcome = await child.run(on_child_message, self.settings.memory_poll_s, worker)
            except BaseException:
                await worker.discard()
                raise
        except BaseException:
            # A runner fault: the run is redelivered, so there is nothing to announce.
            ended.set()
            with contextlib.suppress(Exception):
                await announced
            raise
        finally:
            heartbeat.cancel()
            self.active.pop(request.run_id, None)
        if request.run_id not in self.handed_back and not core.should_retry(
            outcome, attempt, request.options.retries
        ):
            # It ends here, and its completion says who ran it.
            ended.set()
        await announced  # stored before the completion; failing, the run is redelivered
        # Released only once the run left `active`: a late cancel must not reach a worker
        # that already waits for (or serves) another run.
        await self.release_worker(request, worker, outcome, child.leftovers)
        return await self.after_attempt(request, message, started, outcome, child, state_revision)

    async def after_attempt(
        self,
        request: RequestRun,
        message: NatsMessage,
        started: RunStarted,
        outcome: Outcome,
        child: ChildRun,
        state_revision: int,
    ) -> bool:
        """Hand the run back, schedule its retry, or complete it (saving the routine's state);
        whether the run's outcome was settled."""
        attempt = started.attempt
        if request.run_id in self.handed_back:
            # Stopped by a draining shutdown: not the run's fault, so the attempt is not charged.
            self.handed_back.discard(request.run_id)
            await self.give_back_uncharged(request, message)
            return False
        if core.should_retry(outcome, attempt, request.options.retries):
            delay = core.retry_delay(attempt, request.options.retry_backoff_s)
            reason = core.retry_reason(outcome, attempt, request.options.retries, delay)
            log.info("run %s of %s: %s", request.run_id, request.routine, reason)
            await publish_event(
                self.broker,
                RunQueued(run_id=request.run_id, routine=request.routine, reason=reason, at=_now()),
                subjects.RUN_QUEUED,
            )
            await message.nack(delay=delay)
            return False
        if outcome.status == "completed" and child.final_state is not None:
            try:
                await save_state(self.state_kv, request.routine, child.final_state, state_revision)
            except (StateConflict, StateTooLarge) as exc:
                outcome = Outcome("failed", outcome.outputs, str(exc))
        await self.complete(
            request, outcome, started.started_at, child.artifacts, child.resources(), started
        )
        return True

    async def announce(self, started: RunStarted, ended: asyncio.Event) -> None:
        """Publish run.started once the run has lasted run_started_after_s; a run that ends
        sooner (`ended`) is announced by its completion alone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), self.settings.run_started_after_s)
            return
        await publish_event(self.broker, started, subjects.RUN_STARTED)

    def local_log(self, run_id: str) -> Path:
        """Where a run's output is written on this runner while it runs (every attempt)."""
        return self.settings.home.resolve() / "logs" / f"{run_id}.log"

    async def publish_log(self, run_id: str, payload: dict[str, Any]) -> None:
        """Stream a piece of a run's output live (core NATS: nobody may be listening)."""
        with contextlib.suppress(Exception):
            piece = RunLogged(
                run_id=run_id,
                text=payload["text"],
                offset=payload["offset"],
            )
            await self.broker.publish(
                piece.model_dump_json().encode(), subjects.run_log_subject(run_id)
            )

    async def keep_log(self, run_id: str) -> tuple[str | None, str | None]:
        """Move a finished run's output file to the artifact store: its path there, or why
        it could not be stored (the file then stays on this runner)."""
        local = self.local_log(run_id)
        try:
            printed = local.stat().st_size > 0
        except OSError:
            printed = False
        if not printed:
            # Most runs print nothing: no thread hop, no copy, nothing stored.
            local.unlink(missing_ok=True)
            return None, None
        try:
            uri = await asyncio.to_thread(
                store_log, self.settings.resolved_artifact_root(), run_id, local
            )
        except Exception as exc:  # noqa: BLE001 - the log stays local, the run says why
            problem = f"{exc}; the output is kept on runner {self.name} at {local}"
            log.warning("run %s: %s", run_id, problem)
            return None, problem
        local.unlink(missing_ok=True)
        return uri, None

    async def worker_for(self, request: RequestRun) -> Worker:
        """A ready process for the run: a reused worker of its code, or a fresh fork."""
        if request.options.isolation == "process":
            return await self.fork_server.fork()
        return await self.pool.take(request.routine_version)

    async def release_worker(
        self, request: RequestRun, worker: Worker, outcome: Outcome, leftovers: list[str]
    ) -> None:
        """After a run: a forked process ends with its run; a worker is kept or recycled."""
        if request.options.isolation == "process":
            await worker.discard()
            return
        fault = core.fault_of(outcome, worker_exited=not worker.alive())
        await self.pool.give_back(worker, fault, leftovers)

    async def claim_still_ours(self, request: RequestRun, claimed_at: float) -> bool:
        """Right before the routine starts: is this copy still the run's claimed attempt?

        A runner frozen (SIGSTOP, a stalled machine) between its claim and the start may
        find that another runner took the run over meanwhile, and even finished it: it must
        not run the code again. Looked up only when it could have happened, so the common
        start makes no extra round trip.
        """
        if not self.claims.may_have_lost(request.run_id, time.monotonic() - claimed_at):
            return True
        return await self.claims.still_held(request.run_id)

    async def yield_to_successor(self, request: RequestRun, message: NatsMessage) -> None:
        """Step back from a run another runner took over: not this copy's attempt."""
        log.warning(
            "run %s of %s was taken over by another runner while this one was frozen; "
            "not running it here",
            request.run_id,
            request.routine,
        )
        await self.give_back_uncharged(request, message, self.settings.run_ack_wait_s)

    async def give_back_uncharged(
        self, request: RequestRun, message: NatsMessage, delay: float | None = None
    ) -> None:
        """Return a delivery that started no attempt to the queue, counted as such first (a
        crash in between charges it, the safe side), so it never counts against retries."""
        await self.ledger.add_uncharged_delivery(request.run_id)
        await message.nack(delay=delay)

    async def _heartbeat(self, message: NatsMessage, run_id: str) -> None:
        # in_progress resets the ack timer: a live runner keeps its run, a dead one loses
        # it to redelivery within ack_wait. The lease is refreshed on the same beat.
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            with contextlib.suppress(Exception):
                await message.in_progress()
                beat = RunHeartbeat(run_id=run_id, runner=self.name, at=_now())
                await self.broker.publish(beat.model_dump_json().encode(), subjects.RUN_HEARTBEAT)
            if self.claims is not None:
                with contextlib.suppress(Exception):
                    # False once another runner took the claim over (this one was frozen):
                    # never written back over the successor's.
                    await self.claims.refresh(run_id)
            lease = self.leases_held.get(run_id)
            if lease is not None and self.leases is not None:
                with contextlib.suppress(Exception):
                    await self.leases.refresh(lease, run_id)

    async def drain(self) -> None:
        """Stop taking runs; let running ones finish for a while, then hand the rest back."""
        self.draining = True
        self.wake.set()
        log.info("draining: %d run(s) in progress", len(self.active))
        await self.unregister()
        if self.admitted:
            await asyncio.wait(set(self.admitted), timeout=self.settings.drain_timeout_s)
        for run_id, child in list(self.active.items()):
            self.handed_back.add(run_id)
            await child.stop(self.settings.hand_back_grace_s)
        if self.admitted:
            await asyncio.wait(set(self.admitted), timeout=5.0)
        await self.pool.close()
        await self.fork_server.close()
        # The hand-back naks must reach the server before the connection closes, or the
        # runs would wait out the ack wait instead of moving to another replica at once.
        with contextlib.suppress(Exception):
            await self.broker.connection.flush(timeout=5)

    async def complete(
        self,
        request: RequestRun,
        outcome: Outcome,
        started_at: datetime | None,
        artifacts: list[dict[str, Any]],
        resources: RunResources | None = None,
        started: RunStarted | None = None,
    ) -> None:
        """Keep the run's log and publish its terminal event (with what `started` said, in
        case run.started was never announced)."""
        self.announced_holds.pop(request.run_id, None)
        if started_at is not None:
            log_uri, not_kept = await self.keep_log(request.run_id)
            outcome = core.with_output_not_kept(outcome, not_kept)
        else:
            log_uri = None
        log.info(
            "run %s of %s %s%s",
            request.run_id,
            request.routine,
            outcome.status,
            f": {outcome.error}" if outcome.error else "",
        )
        ours = RunCompleted(
            run_id=request.run_id,
            routine=request.routine,
            run_number=request.run_number,
            status=outcome.status,
            outputs=outcome.outputs,
            error=outcome.error,
            traceback=outcome.traceback,
            artifacts=[ArtifactRef.model_validate(a) for a in artifacts],
            hop=request.hop,
            parent_run_id=request.parent_run_id,
            started_at=started_at,
            finished_at=_now(),
            phase=outcome.phase,
            isolation=request.options.isolation if started_at is not None else None,
            resources=resources,
            log_uri=log_uri,
            runner=started.runner if started else None,
            attempt=started.attempt if started else None,
            artifact_location=started.artifact_location if started else None,
            dag=DagRecord.model_validate(outcome.dag) if outcome.dag else None,
            **request.carried_forward(),
        )
        settled = await self.ledger.settle(ours)
        if settled.status != ours.status:
            log.warning(
                "run %s of %s ended %s here, but its outcome was already settled %s: %s",
                request.run_id,
                request.routine,
                ours.status,
                settled.status,
                settled.error,
            )
        # The slot is free before the completion goes out: the dispatcher requests the next
        # held run on it, which must find the slot free, not wait out a hold here.
        await self.release_lease(request.run_id)
        # The claim stays as it is, never deleted: a copy of the request whose outcome read
        # raced this settle would otherwise find the claim free and run the code again.
        self.claims.settled(request.run_id)
        await publish_event(self.broker, settled, settled.subject())
        metrics.run_finished(settled.routine, settled.status, started_at, ours.finished_at)

    async def cancel(self, run_id: str) -> None:
        """Stop a run this runner holds; remember the id in case it arrives later."""
        self.cancel_marks.note(run_id)
        child = self.active.get(run_id)
        if child is not None:
            await child.cancel(self.settings.cancel_grace_s)


def register(broker: NatsBroker, runner: Admission) -> None:
    """Subscribe to cancel requests (run requests come through the intake, see intake.py)."""

    # A core subscription to a stored subject: the publisher's JetStream publish waits on
    # its reply inbox for the stream's acknowledgement, so an (empty) reply from here could
    # reach it first and fail the publish.
    @consumer(broker, CancelRun, subjects.RUN_CANCEL, no_reply=True)
    async def on_run_cancel(cancel: CancelRun, _message: NatsMessage) -> None:
        await runner.cancel(cancel.run_id)
