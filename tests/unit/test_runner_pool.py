"""Warm workers and process-tree memory, with real processes (no NATS needed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from services.runner.pool import WarmPool
from services.runner.process import rss_bytes, tree_rss_bytes


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_the_pool_hands_out_a_started_worker_and_refills_behind_it() -> None:
    pool = WarmPool(2, {})
    await pool.fill()
    await _until(lambda: pool.idle_count() == 2)

    taken = await pool.take()

    assert taken.alive()
    await _until(lambda: pool.idle_count() == 2)
    idle = list(pool._idle)
    assert taken not in idle
    await taken.discard()
    await pool.close()

    assert pool.idle_count() == 0
    # Stopped and reaped: no worker outlives the pool, none is left a zombie.
    assert [w.process.returncode is not None for w in [taken, *idle]] == [True] * 3


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
        assert parent.stdout is not None and parent.stdout.readline().strip() == b"ready"

        own, tree = rss_bytes(parent.pid), tree_rss_bytes(parent.pid)

        assert own < 100 * 2**20
        assert tree - own > 100 * 2**20
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # its own session: the child goes too
        parent.wait()
