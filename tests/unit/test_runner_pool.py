"""Reusable workers and the fork server with real processes (no NATS needed).

Each recycling condition is shown on a real worker: the run leaves something behind (or
faults) and the pool kills the worker instead of keeping it for the digest's next run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mainspring.contract.messages import Isolation, RequestRun, ResolvedRunOptions
from mainspring_services.runner import core
from mainspring_services.runner.pool import ForkServer, Worker, WorkerPool
from mainspring_services.runner.process import ChildRun
from mainspring_services.runner.procfs import descendants_rss_bytes, rss_bytes, tree_rss_bytes

MiB = 2**20


def _bundle(folder: Path, body: str, imports: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routine.py").write_text(
        "import os, sys, time, signal, threading, subprocess\n"
        f"{imports}\n"
        "def touched(size):\n"
        "    block = bytearray(size)\n"
        "    block[::4096] = b'x' * len(block[::4096])\n"
        "    return block\n"
        "from mainspring import Routine, on_complete\n\n\n"
        "class Job(Routine):\n"
        "    def run(self, event=on_complete('nothing'), n: int = 0) -> dict:\n"
        f"{textwrap.indent(textwrap.dedent(body), '        ')}\n"
        "        return {'n': n, 'pid': os.getpid()}\n"
    )
    return folder


def _request(
    digest: str,
    *,
    n: int = 0,
    isolation: Isolation = "worker",
    memory_limit: int | None = None,
    timeout_s: float | None = None,
) -> RequestRun:
    return RequestRun(
        run_id=str(uuid.uuid4()),
        routine="job",
        routine_version=digest,
        entrypoint="routine.py:Job",
        run_number=n,
        source="manual",
        trigger_kind="manual",
        inputs={"n": n},
        requested_at=datetime.now(UTC),
        options=ResolvedRunOptions(
            isolation=isolation, memory_limit=memory_limit, timeout_s=timeout_s
        ),
    )


async def _ignore(_message: dict[str, Any]) -> None:
    return None


class Harness:
    """A pool and a fork server, and one call to run a request as the runner does."""

    def __init__(self, tmp: Path, max_runs: int = 100, max_rss_growth: int = 512 * MiB) -> None:
        self.tmp = tmp
        self.pool = WorkerPool(
            {}, spares=0, max_idle=4, max_runs=max_runs, max_rss_growth=max_rss_growth
        )
        self.fork_server = ForkServer({})

    async def run(
        self,
        bundle: Path,
        request: RequestRun,
        on_worker: Callable[[Worker, ChildRun], None] | None = None,
        on_message: Callable[[dict[str, Any]], Awaitable[None]] = _ignore,
        memory_poll_s: float = 0.02,
    ) -> tuple[core.Outcome, Worker, ChildRun]:
        if request.options.isolation == "process":
            worker = await self.fork_server.fork()
        else:
            worker = await self.pool.take(request.routine_version)
        child = ChildRun(request, bundle, self.tmp / "logs" / f"{request.run_id}.log")
        if on_worker is not None:
            on_worker(worker, child)
        outcome = await child.run(on_message, memory_poll_s, worker)
        if request.options.isolation == "process":
            await worker.discard()
        else:
            fault = core.fault_of(outcome, worker_exited=not worker.alive())
            await self.pool.give_back(worker, fault, child.leftovers)
        return outcome, worker, child

    async def close(self) -> None:
        await self.pool.close()
        await self.fork_server.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp_path)
    yield made
    await made.close()


async def test_a_worker_serves_many_runs_of_its_digest_and_logs_each_apart(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "b", "print('run', n); print('oops', n, file=sys.stderr)")

    results = [await harness.run(bundle, _request("d1", n=n)) for n in range(5)]

    assert [o.status for o, _, _ in results] == ["completed"] * 5
    assert len({o.outputs["pid"] for o, _, _ in results}) == 1, "one worker served every run"
    assert harness.pool.idle_count() == 1
    for n, (_, _, child) in enumerate(results):
        assert child.log_path.read_text() == f"run {n}\noops {n}\n"


async def test_workers_are_pinned_per_digest_and_idle_ones_evicted_lru(tmp_path: Path) -> None:
    pool = WorkerPool({}, spares=0, max_idle=2, max_runs=100, max_rss_growth=512 * MiB)
    try:
        taken = {d: await pool.take(d) for d in ("a", "b", "c")}
        assert len({w.pid for w in taken.values()}) == 3
        for digest in ("a", "b", "c"):
            await pool.give_back(taken[digest], None, [])

        # Bounded: "a" was least recently used and is stopped.
        assert pool.idle_digests() == ["b", "c"]
        await asyncio.wait_for(asyncio.shield(taken["a"].exited), 10)
        again = await pool.take("b")
        assert again is taken["b"]
        await pool.give_back(again, None, [])
        assert pool.idle_digests() == ["c", "b"]
    finally:
        await pool.close()
    assert all(not w.alive() for w in taken.values())


async def test_a_spare_that_died_while_waiting_is_replaced_on_take() -> None:
    pool = WorkerPool({}, spares=1, max_idle=1, max_runs=100, max_rss_growth=512 * MiB)
    try:
        await pool.fill()
        await asyncio.gather(*pool._starting)
        spare = pool._spare[0]
        spare.kill()
        await asyncio.wait_for(asyncio.shield(spare.exited), 10)

        taken = await pool.take("d")

        assert taken is not spare
        assert taken.alive()
        assert taken.digest == "d"
        await pool.give_back(taken, None, [])
    finally:
        await pool.close()


RECYCLED_BY: dict[str, tuple[str, str]] = {
    "thread": (
        "threading.Thread(target=time.sleep, args=(30,), name='lingering', daemon=True).start()",
        "thread(s) still running (lingering)",
    ),
    "child process": ("subprocess.Popen(['sleep', '30'])", "child process(es) still alive"),
    "cwd": ("os.chdir('/')", "working directory changed to /"),
    "environment": ("os.environ['LEAKED'] = '1'", "environment changed (LEAKED)"),
    "sys.path": ("sys.path.append('/nowhere')", "sys.path changed"),
    "signal handler": (
        "signal.signal(signal.SIGUSR1, lambda *a: None)",
        "signal handlers changed (SIGUSR1)",
    ),
    "sys.exit": ("sys.exit(3)", "fault: the routine called sys.exit()"),
    "os._exit": ("os._exit(4)", "fault: the worker process ended"),
    "segfault": ("import ctypes; ctypes.string_at(0)", "fault: the worker process ended"),
    "load failure": ("import not_a_module_anywhere", "fault: the routine failed to load"),
}


@pytest.mark.parametrize("kind", list(RECYCLED_BY))
async def test_a_worker_is_recycled_when_its_run_leaves_something_behind(
    kind: str, harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body, reason = RECYCLED_BY[kind]
    if kind == "load failure":
        bundle = _bundle(tmp_path / "b", "pass", imports=body)
    else:
        bundle = _bundle(tmp_path / "b", body)
    caplog.set_level("INFO", logger="mainspring.runner")

    _, worker, _ = await harness.run(bundle, _request("d1"))

    await asyncio.wait_for(asyncio.shield(worker.exited), 10)
    assert harness.pool.idle_count() == 0
    assert reason in caplog.text
    # The next run of the digest gets a fresh worker and works.
    clean = _bundle(tmp_path / "clean", "pass")
    outcome, fresh, _ = await harness.run(clean, _request("d2"))
    assert outcome.status == "completed"
    assert fresh.pid != worker.pid


async def test_an_ordinary_exception_keeps_the_worker(harness: Harness, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", "if n == 0: raise ValueError('bad row 7')")

    failed, first, _ = await harness.run(bundle, _request("d1", n=0))
    completed, second, _ = await harness.run(bundle, _request("d1", n=1))

    assert failed.status == "failed"
    assert "ValueError: bad row 7" in (failed.error or "")
    assert completed.status == "completed"
    assert second is first


async def test_a_worker_is_recycled_after_max_runs(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_runs=3)
    bundle = _bundle(tmp_path / "b", "pass")
    try:
        pids = [
            (await harness.run(bundle, _request("d1", n=n)))[0].outputs["pid"] for n in range(4)
        ]
    finally:
        await harness.close()

    assert pids[0] == pids[1] == pids[2] != pids[3]


async def test_a_worker_whose_memory_grew_past_the_bound_is_recycled(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_rss_growth=50 * MiB)
    # Kept alive at module level: memory the worker holds after the run.
    bundle = _bundle(tmp_path / "b", "KEPT.append(touched(80 * 2**20))", "KEPT = []")
    try:
        first = (await harness.run(bundle, _request("d1", n=0)))[0]
        second = (await harness.run(bundle, _request("d1", n=1)))[0]
    finally:
        await harness.close()

    assert first.status == second.status == "completed"
    assert first.outputs["pid"] != second.outputs["pid"]


async def test_memory_a_worker_keeps_a_little_of_each_run_adds_up_to_a_recycle(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, max_rss_growth=50 * MiB)
    # 30 MiB kept per run: under the bound after one run, over it after two.
    bundle = _bundle(tmp_path / "b", "KEPT.append(touched(30 * 2**20))", "KEPT = []")
    try:
        outcomes = [(await harness.run(bundle, _request("d1", n=n)))[0] for n in range(3)]
    finally:
        await harness.close()

    assert [o.status for o in outcomes] == ["completed"] * 3
    pids = [o.outputs["pid"] for o in outcomes]
    assert pids[0] == pids[1] != pids[2], pids


@pytest.mark.parametrize("isolation", ["worker", "process"])
async def test_twenty_runs_each_using_most_of_the_limit_all_pass(
    isolation: Isolation, harness: Harness, tmp_path: Path
) -> None:
    limit = 100 * MiB
    # Each run touches 80% of its limit and frees it: the limit is the run's own growth,
    # not what the worker holds (imports, earlier runs).
    bundle = _bundle(tmp_path / "b", "block = touched(80 * 2**20); del block")

    outcomes = [
        (await harness.run(bundle, _request("d1", n=n, isolation=isolation, memory_limit=limit)))[0]
        for n in range(20)
    ]

    assert [o.status for o in outcomes] == ["completed"] * 20, [o.error for o in outcomes]
    pids = {o.outputs["pid"] for o in outcomes}
    assert len(pids) == (1 if isolation == "worker" else 20)


@pytest.mark.parametrize("isolation", ["worker", "process"])
async def test_a_spike_over_the_limit_between_two_polls_still_fails_the_run(
    isolation: Isolation, harness: Harness, tmp_path: Path
) -> None:
    # Touch 150MiB against a 100MiB limit and free it at once; the poll (every 60s here)
    # never sees it, the kernel's peak of the worker does.
    bundle = _bundle(tmp_path / "b", "block = touched(150 * 2**20); del block")

    outcome, worker, _ = await harness.run(
        bundle,
        _request("d1", isolation=isolation, memory_limit=100 * MiB),
        memory_poll_s=60,
    )

    assert outcome.error == core.MEMORY_EXCEEDED
    await asyncio.wait_for(asyncio.shield(worker.exited), 10)


@pytest.mark.parametrize("isolation", ["worker", "process"])
async def test_limits_and_cancel_kill_the_run_and_its_worker(
    isolation: Isolation, harness: Harness, tmp_path: Path
) -> None:
    bomb = _bundle(tmp_path / "bomb", "hog = []\nwhile True: hog.append(touched(2**24))")
    loop = _bundle(tmp_path / "loop", "self.progress(0.5, 'spinning')\nwhile True: pass")
    started: list[Worker] = []

    def note(worker: Worker, _child: ChildRun) -> None:
        started.append(worker)

    memory = (
        await harness.run(bomb, _request("m", isolation=isolation, memory_limit=60 * MiB), note)
    )[0]
    timeout = (await harness.run(loop, _request("t", isolation=isolation, timeout_s=1), note))[0]
    spinning: list[dict[str, Any]] = []
    cancelled_child: list[ChildRun] = []

    def note_child(worker: Worker, child: ChildRun) -> None:
        started.append(worker)
        cancelled_child.append(child)

    async def cancel_once_spinning(message: dict[str, Any]) -> None:
        # The routine reported progress from inside run(): the cancel lands mid-run.
        spinning.append(message)
        await cancelled_child[0].cancel(grace_s=1)

    cancelled = (
        await harness.run(
            loop, _request("c", isolation=isolation), note_child, on_message=cancel_once_spinning
        )
    )[0]

    assert memory.error == core.MEMORY_EXCEEDED
    assert timeout.error == "timed out after 1s"
    assert cancelled.status == "cancelled"
    assert [m["message"] for m in spinning] == ["spinning"]
    for worker in started:
        await asyncio.wait_for(asyncio.shield(worker.exited), 10)
    assert harness.pool.idle_count() == 0


async def test_a_forked_child_runs_pyarrow_compute_and_writes_parquet(
    harness: Harness, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    bundle = _bundle(
        tmp_path / "b",
        f"""
        import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
        table = pa.table({{"x": list(range(100_000))}})
        total = pc.sum(pc.multiply(table["x"], 2)).as_py()
        pq.write_table(table, {str(out)!r})
        n = total
        """,
    )

    outcome, worker, _ = await harness.run(bundle, _request("d1", isolation="process"))

    assert outcome.status == "completed", outcome
    assert outcome.outputs["n"] == 2 * sum(range(100_000))
    assert outcome.outputs["pid"] == worker.pid
    server = harness.fork_server.server_pid()
    assert server is not None
    assert worker.pid != server
    # The server forks from a single thread: Arrow's pools were never started in it.
    assert _thread_count(server) == 1
    assert pq.read_table(out).num_rows == 100_000


def test_a_killed_runner_takes_its_workers_and_forked_children_with_it(tmp_path: Path) -> None:
    # A stand-in runner: a process that starts a worker and a forked child, prints their
    # pids, then waits to be SIGKILLed (PR_SET_PDEATHSIG must end both).
    script = tmp_path / "runner.py"
    script.write_text(
        "import asyncio, sys\n"
        "from mainspring_services.runner.pool import WorkerPool, ForkServer\n"
        "async def main():\n"
        "    pool = WorkerPool({}, spares=0, max_idle=1, max_runs=1, max_rss_growth=2**30)\n"
        "    worker = await pool.take('d')\n"
        "    forked = await ForkServer({}).fork()\n"
        "    print(worker.pid, forked.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    runner = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert runner.stdout is not None
    pids = [int(p) for p in runner.stdout.readline().split()]
    assert len(pids) == 2
    assert all(_alive(pid) for pid in pids)

    runner.kill()
    runner.wait()

    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_tree_memory_counts_what_a_process_forked() -> None:
    # The parent stays small; its child holds ~120MiB of touched pages.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', "
            "'b = bytearray(120 * 2**20); b[::4096] = bytes(len(b[::4096])) ; "
            "print(1, flush=True); import time; time.sleep(30)'], stdout=subprocess.PIPE)\n"
            "child.stdout.readline(); print('ready', flush=True); time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == b"ready"

        own, tree = rss_bytes(parent.pid), tree_rss_bytes(parent.pid)
        below = descendants_rss_bytes(parent.pid)

        assert own < 100 * MiB
        assert tree - own > 100 * MiB
        assert 100 * MiB < below < tree
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # its own session: the child goes too
        parent.wait()
    # Gone: nothing below it, rather than its last size.
    assert descendants_rss_bytes(parent.pid) == 0


async def test_a_run_reports_its_output_live_and_the_resources_it_used(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = _bundle(
        tmp_path / "b",
        "print('busy', flush=True)\n"
        "block = touched(64 * 2**20)\n"
        "deadline = time.process_time() + 0.2\n"
        "while time.process_time() < deadline: pass\n",
    )
    heard: list[dict[str, Any]] = []

    async def on_message(message: dict[str, Any]) -> None:
        heard.append(message)

    outcome, worker, child = await harness.run(bundle, _request("d1"), on_message=on_message)
    used = child.resources()

    assert outcome.status == "completed"
    pieces = [m for m in heard if m["type"] == "log"]
    assert "".join(m["text"] for m in pieces) == "busy\n"
    assert pieces[0]["offset"] == 0
    assert used.peak_memory_bytes is not None
    assert used.peak_memory_bytes > worker.baseline_rss + 60 * MiB
    assert used.cpu_seconds is not None
    assert used.cpu_seconds >= 0.2
    assert used.wall_seconds is not None
    assert used.wall_seconds >= used.cpu_seconds - 0.05


async def test_a_process_left_printing_after_its_run_does_not_hold_the_run_or_its_log(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = _bundle(
        tmp_path / "b",
        "print('run output', flush=True)\n"
        "subprocess.Popen([sys.executable, '-c', "
        "'import time\\nwhile True: print(\"orphan\", flush=True); time.sleep(0.01)'])\n"
        "time.sleep(0.2)\n",
    )
    started = time.monotonic()

    outcome, worker, child = await harness.run(bundle, _request("d1"))

    assert outcome.status == "completed"
    assert time.monotonic() - started < 10, "the run ends though the orphan keeps printing"
    assert child.log_path.read_text().startswith("run output\n")
    assert not worker.alive(), "the worker with a live child is recycled"
