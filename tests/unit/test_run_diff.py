"""`runs diff`: two recorded runs side by side, every difference marked."""

from __future__ import annotations

from typing import Any

from mainspring.apps.rundiff import compare_runs, render_diff


def _run(run_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": run_id,
        "routine": "segments",
        "blueprint": "kmeans",
        "instance": "segments",
        "routine_version": "f34e4a42cdb16b3b",
        "method": "fit",
        "status": "completed",
        "source": "manual",
        "run_number": 2,
        "inputs": {"values": None},
        "configuration": {"clusters": 2},
        "outputs": {"centroids": [1.0, 5.0]},
        "created_at": "2026-03-01T12:00:00+00:00",
        "started_at": "2026-03-01T12:00:01+00:00",
        "finished_at": "2026-03-01T12:00:03.500000+00:00",
        "wall_seconds": 2.5,
        "artifacts": [{"name": "assignments", "kind": "table", "rows": 12, "size_bytes": 860}],
    }
    return base | fields


def test_every_compared_value_is_a_row_and_differences_are_marked() -> None:
    left = _run("a")
    right = _run(
        "b",
        run_number=4,
        configuration={"clusters": 3},
        outputs={"centroids": [1.0, 3.0, 5.0], "inertia": 2.0},
        status="failed",
        artifacts=[],
    )

    rows = {(r.section, r.field): r for r in compare_runs(left, right, {"assignments": {}}, {})}

    assert rows[("run", "version")].left == "f34e4a42cdb1"
    assert not rows[("run", "method")].differs
    assert rows[("run", "status")].differs
    assert (
        rows[("configuration", "clusters")].left,
        rows[("configuration", "clusters")].right,
    ) == (
        2,
        3,
    )
    # A key only one run has is compared with nothing.
    assert (rows[("outputs", "inertia")].left, rows[("outputs", "inertia")].right) == (None, 2.0)
    assert rows[("durations", "ran (started to finished)")].left == 2.5
    assert not rows[("inputs", "values")].differs
    assert (
        rows[("artifact assignments", "saved")].left,
        rows[("artifact assignments", "saved")].right,
    ) == (
        True,
        False,
    )


def test_artifact_statistics_are_compared_per_column_and_measure() -> None:
    left, right = _run("a"), _run("b")
    rows = compare_runs(
        left,
        right,
        {"assignments": {"cluster": {"max": 1, "nulls": 0}}},
        {"assignments": {"cluster": {"max": 2, "nulls": 0}}},
    )
    by_field = {(r.section, r.field): r for r in rows}

    assert by_field[("artifact assignments", "cluster.max")].differs
    assert not by_field[("artifact assignments", "cluster.nulls")].differs


def test_runs_recorded_before_instances_compare_by_their_routine_and_run() -> None:
    old = {"id": "a", "routine": "hello", "status": "completed", "inputs": {"name": "Ada"}}
    new = _run("b", routine="hello", blueprint="hello", instance="hello", method="run")

    rows = {(r.section, r.field): r for r in compare_runs(old, new)}

    assert not rows[("run", "routine")].differs
    assert not rows[("run", "instance")].differs
    assert not rows[("run", "method")].differs


def test_the_text_marks_differences_and_can_leave_the_rest_out() -> None:
    rows = compare_runs(_run("a"), _run("b", configuration={"clusters": 3}))

    text = render_diff(rows, "a", "b", only_differences=False)
    only = render_diff(rows, "a", "b", only_differences=True)
    same = render_diff(compare_runs(_run("a"), _run("a")), "a", "a", only_differences=True)

    assert "* clusters" in text
    assert "  method" in text
    assert text.endswith("1 difference (marked *)")
    assert only.splitlines()[1:3] == ["configuration:", "* clusters  2  3"]
    assert "method" not in only
    assert same == "runs a and a do not differ"
