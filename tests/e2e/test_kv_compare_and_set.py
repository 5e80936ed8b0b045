"""Compare-and-set on a real JetStream bucket: concurrent writers never lose an update."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.js.api import KeyValueConfig

from mainspring.base import kv
from mainspring.runtime.bus import connect
from mainspring.storage.numbers import RunNumbers, next_run_number
from mainspring_services.dispatcher import crash_loop
from mainspring_services.dispatcher.stores import CrashLoopCounts
from mainspring_services.runner.coordination import RunClaims
from tests.harness import Deployment, eventually

pytestmark = pytest.mark.e2e


async def test_concurrent_run_numbers_are_unique_and_contiguous(deployment: Deployment) -> None:
    writers = [await connect(deployment.nats.url, name=f"writer-{i}") for i in range(3)]
    try:
        buckets = [
            await kv.declare_bucket(nc.jetstream(), KeyValueConfig(bucket="cas_test"))
            for nc in writers
        ]
        numbers = await asyncio.gather(*(next_run_number(buckets[i % 3], "a/b") for i in range(60)))
        other = await next_run_number(buckets[0], "a_b")
    finally:
        for nc in writers:
            await nc.close()
    assert sorted(numbers) == list(range(1, 61))
    assert other == 1  # a/b and a_b are different routines with their own counters


async def test_replicas_remembering_their_last_number_still_never_share_one(
    deployment: Deployment,
) -> None:
    writers = [await connect(deployment.nats.url, name=f"replica-{i}") for i in range(3)]
    try:
        replicas = [
            RunNumbers(await kv.declare_bucket(nc.jetstream(), KeyValueConfig(bucket="numbers")))
            for nc in writers
        ]
        # Each replica's remembered revision goes stale whenever another one takes a number.
        first = await asyncio.gather(*(replicas[i % 3].next("r") for i in range(30)))
        second = [await replicas[i % 3].next("r") for i in range(30)]
    finally:
        for nc in writers:
            await nc.close()
    assert sorted(first) == list(range(1, 31))
    assert second == list(range(31, 61))


async def test_a_stale_revision_loses_and_says_so(deployment: Deployment) -> None:
    nc = await connect(deployment.nats.url)
    try:
        bucket = await kv.declare_bucket(nc.jetstream(), KeyValueConfig(bucket="cas_stale"))
        first = await kv.write_if_unchanged(bucket, "k", b"1", 0)
        assert first is not None
        assert await kv.write_if_unchanged(bucket, "k", b"again", 0) is None  # create lost
        second = await kv.write_if_unchanged(bucket, "k", b"2", first)
        assert second is not None
        assert await kv.write_if_unchanged(bucket, "k", b"3", first) is None  # stale revision
        assert await kv.read(bucket, "k") == (b"2", second)
        assert await kv.read(bucket, "missing") == (None, 0)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def two_runners_claims(deployment: Deployment) -> AsyncIterator[tuple[RunClaims, ...]]:
    """Claims of runner-a and runner-b, each on its own connection to one real bucket, stale
    after 0.2 s (a claim older than that is what a frozen runner leaves)."""
    connections = [await connect(deployment.nats.url, name=f"runner-{n}") for n in "ab"]
    try:
        config = KeyValueConfig(bucket="claims")
        yield tuple(
            [
                RunClaims(await kv.declare_bucket(nc.jetstream(), config), f"runner-{n}", 0.2)
                for nc, n in zip(connections, "ab", strict=True)
            ]
        )
    finally:
        for nc in connections:
            await nc.close()


async def test_a_frozen_runner_finds_its_run_taken_over_and_leaves_the_claim_alone(
    deployment: Deployment,
) -> None:
    # "Frozen": a runner stopped between its claim and the start.
    async with two_runners_claims(deployment) as (frozen, successor):
        assert await frozen.claim("r1") == "claimed"
        assert not frozen.may_have_lost("r1", claimed_for_s=0.05)  # no look on a quick start
        assert await successor.claim("r1") == "held"
        await asyncio.sleep(0.3)
        assert await successor.claim("r1") == "taken"  # taken over once stale

        assert frozen.may_have_lost("r1", claimed_for_s=0.3)
        assert not await frozen.still_held("r1")
        assert await frozen.refresh("r1") is False  # never written over the successor's
        await frozen.release("r1")  # nor deleted
        assert await successor.still_held("r1")
        assert await successor.refresh("r1") is True


async def test_a_settled_runs_claim_is_never_free_for_a_copy_that_read_no_outcome(
    deployment: Deployment,
) -> None:
    # A copy of the request that read the outcome just before the holder settled it must not
    # find the claim free: it is left as it was (no write per run), so the copy finds it held
    # and waits, and once stale takes it over as "taken", which reads the outcome again.
    async with two_runners_claims(deployment) as (holder, copy):
        assert await holder.claim("r1") == "claimed"
        holder.settled("r1")

        assert await copy.claim("r1") == "held"
        await asyncio.sleep(0.3)
        assert await copy.claim("r1") == "taken"
        assert not await holder.refresh("r1")  # the holder no longer tracks it


async def test_crash_loop_counts_kept_in_memory_follow_another_replicas_writes(
    deployment: Deployment,
) -> None:
    writers = [await connect(deployment.nats.url, name=f"dispatcher-{i}") for i in range(2)]
    config = KeyValueConfig(bucket="crash_counts")
    try:
        first = CrashLoopCounts(await kv.declare_bucket(writers[0].jetstream(), config))
        second = CrashLoopCounts(await kv.declare_bucket(writers[1].jetstream(), config))
        seeded = CrashLoopCounts(await kv.declare_bucket(writers[1].jetstream(), config))
        failing = crash_loop.CrashLoopState("e1", ("run-1",))
        assert await seeded.save("stored-before", failing, 0)
        await first.follow()
        await second.follow()

        # What was stored before following is loaded; an unknown routine is healthy, rev 0.
        assert await first.load("stored-before") == (failing, 1)
        assert await first.load("never") == (crash_loop.CrashLoopState(), 0)

        # Another replica counts a failure: the watch brings it, no read needed.
        state, revision = await second.load("r")
        assert await second.save("r", failing, revision)

        async def seen() -> bool:
            return (await first.load("r"))[0] == failing

        await eventually(seen, timeout=5)

        # A write against a revision that moved loses, and the next load has the new one.
        _, stale = await first.load("r")
        assert await second.save("r", crash_loop.CrashLoopState("e1", ("run-1", "run-2")), stale)
        assert not await first.save("r", crash_loop.CrashLoopState(), stale)
        state, fresh = await first.load("r")
        assert state.failures == ("run-1", "run-2")
        assert fresh > stale
        assert await first.save("r", crash_loop.CrashLoopState(), fresh)
        assert (await first.load("r"))[0] == crash_loop.CrashLoopState()
    finally:
        await first.stop()
        await second.stop()
        for nc in writers:
            await nc.close()
