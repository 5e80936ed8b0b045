"""Sweeping code bundles: delete only what two sweeps a grace apart found unused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mainspring.storage.registry import (
    UNREFERENCED_MARK,
    BundleSweep,
    StoredBundle,
    sweep_bundles,
    unreferenced_since,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=10)


@pytest.mark.parametrize(
    ("bundle", "referenced", "expected"),
    [
        # Used by a definition or an unfinished run: kept, and a stale mark cleared.
        (StoredBundle("a"), {"a"}, BundleSweep([], [], [])),
        (StoredBundle("a", NOW - timedelta(hours=1)), {"a"}, BundleSweep([], ["a"], [])),
        # Unused for the first time: only marked.
        (StoredBundle("a"), set(), BundleSweep(["a"], [], [])),
        # Marked, still unused, but within the grace: kept.
        (StoredBundle("a", NOW - timedelta(minutes=9)), set(), BundleSweep([], [], [])),
        # Marked at least a grace ago and still unused: deleted.
        (StoredBundle("a", NOW - GRACE), set(), BundleSweep([], [], ["a"])),
        (StoredBundle("a", NOW - timedelta(days=2)), {"b"}, BundleSweep([], [], ["a"])),
    ],
)
def test_sweep_decides_per_bundle(
    bundle: StoredBundle, referenced: set[str], expected: BundleSweep
) -> None:
    assert sweep_bundles([bundle], referenced, NOW, GRACE) == expected


def test_a_bundle_is_deleted_by_the_second_sweep_only() -> None:
    first = sweep_bundles([StoredBundle("old")], set(), NOW, timedelta(0))
    assert first == BundleSweep(["old"], [], [])
    second = sweep_bundles([StoredBundle("old", NOW)], set(), NOW, timedelta(0))
    assert second.delete == ["old"]


@pytest.mark.parametrize(
    ("description", "since"),
    [
        (None, None),
        ("", None),
        ("some other note", None),
        (UNREFERENCED_MARK + "not a time", None),
        (UNREFERENCED_MARK + NOW.isoformat(), NOW),
    ],
)
def test_the_mark_is_read_back_from_the_description(
    description: str | None, since: datetime | None
) -> None:
    assert unreferenced_since(description) == since
