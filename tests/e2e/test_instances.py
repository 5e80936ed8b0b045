"""Routine instances and methods over a real nats-server: a routine (blueprint) configured as
several instances, each running its own methods, reconfigured in its history, runs compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from tests.harness import Deployment, copy_example, write_routine

pytestmark = pytest.mark.e2e


def run_json(system: Deployment, *args: str) -> dict[str, Any]:
    """`mainspring run ... --wait --json`: the finished run as recorded."""
    result = system.cli("run", *args, "--wait", "--json", "--timeout", "60")
    run: dict[str, Any] = json.loads(result.stdout)
    return run


def register_kmeans(system: Deployment, tmp_path: Path, name: str = "kmeans") -> Path:
    folder = copy_example("kmeans_clustering", tmp_path)
    system.cli("routine", "create", str(folder), "--name", name)
    return folder


async def test_two_instances_of_one_routine_keep_their_own_configuration_and_runs(
    system: Deployment, tmp_path: Path, client: Client
) -> None:
    register_kmeans(system, tmp_path)
    version = (await (await client.store()).get("kmeans")).version

    created = system.cli(
        "instance", "create", "segments_a", "--routine", "kmeans", "--set", "clusters=2", "--wait"
    )
    assert "instance segments_a of routine kmeans created" in created.stdout
    assert "configured by run" in created.stdout
    assert ": completed" in created.stdout
    system.cli(
        "instance", "create", "segments_b", "--routine", "kmeans", "--set", "clusters=4", "--wait"
    )

    fit_a = run_json(
        system, "segments_a", "--method", "fit", "--input", "values=[1, 2, 3, 10, 11, 12]"
    )
    fit_b = run_json(system, "segments_b", "--method", "fit")

    assert fit_a["status"] == "completed", fit_a.get("error")
    assert fit_a["outputs"]["centroids"] == [2.0, 11.0]
    assert fit_a["inputs"] == {"values": [1, 2, 3, 10, 11, 12]}
    assert (fit_a["blueprint"], fit_a["instance"], fit_a["method"]) == (
        "kmeans",
        "segments_a",
        "fit",
    )
    assert fit_a["routine_version"] == version
    assert fit_a["configuration"] == {"clusters": 2, "max_iterations": 20}
    assert len(fit_b["outputs"]["centroids"]) == 4
    assert fit_b["configuration"] == {"clusters": 4, "max_iterations": 20}
    # Each instance numbers its own runs: its constructor run was its first.
    assert fit_a["run_number"] == 2
    assert fit_b["run_number"] == 2

    # A method allowed in memory runs here, with the state the instance's `fit` left.
    predicted = system.cli(
        "run", "segments_a", "--method", "predict", "--input", "value=9", "--in-memory"
    )
    assert "status: completed" in predicted.stdout
    assert '"centroid": 11.0' in predicted.stdout
    assert "method: predict" in predicted.stdout

    listed = system.cli("routine", "list").stdout.splitlines()
    assert [line.split()[:2] for line in listed[1:]] == [
        ["kmeans", "kmeans"],
        ["kmeans", "segments_a"],
        ["kmeans", "segments_b"],
    ]
    shown = json.loads(system.cli("routine", "show", "kmeans").stdout)
    assert [v["version"] for v in shown["versions"]] == [version[:12]]
    assert shown["versions"][0]["methods"] == ["run", "configure", "fit", "predict"]
    assert {i["name"]: i["config"] for i in shown["instances"]} == {
        "kmeans": {},
        "segments_a": {"clusters": 2, "max_iterations": 20},
        "segments_b": {"clusters": 4, "max_iterations": 20},
    }


async def test_bad_method_runs_are_refused_with_one_line_naming_the_fix(
    system: Deployment, tmp_path: Path
) -> None:
    register_kmeans(system, tmp_path)

    in_memory = system.cli("run", "kmeans", "--method", "fit", "--in-memory", check=False)
    unknown = system.cli("run", "kmeans", "--method", "train", check=False)
    bad_input = system.cli(
        "run", "kmeans", "--method", "predict", "--input", "value=high", check=False
    )
    no_routine = system.cli("instance", "create", "x", "--routine", "nope", check=False)
    bad_set = system.cli(
        "instance", "create", "y", "--routine", "kmeans", "--set", "clusters=many", check=False
    )
    taken = system.cli("instance", "create", "kmeans", "--routine", "kmeans", check=False)
    no_instance = system.cli("instance", "configure", "nope", "--set", "clusters=2", check=False)
    bad_pair = system.cli("instance", "configure", "kmeans", "--set", "clusters", check=False)
    no_version = system.cli(
        "instance", "create", "z", "--routine", "kmeans", "--version", "ffff", check=False
    )

    for result in (
        in_memory,
        unknown,
        bad_input,
        no_routine,
        bad_set,
        taken,
        no_instance,
        bad_pair,
        no_version,
    ):
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "method fit of routine kmeans does not allow in-memory runs" in in_memory.stderr
    assert "@method(in_memory=True)" in in_memory.stderr
    assert "no method 'train'" in unknown.stderr
    assert "run, configure, fit, predict" in unknown.stderr
    assert "'value'" in bad_input.stderr
    assert "routine 'nope' is not registered" in no_routine.stderr
    assert "clusters" in bad_set.stderr
    assert "instance 'kmeans' exists" in taken.stderr
    assert "instance 'nope' does not exist: create it with" in no_instance.stderr
    assert "--set 'clusters' is not key=value" in bad_pair.stderr
    assert "'ffff' is not a version of routine kmeans: pick one of" in no_version.stderr
    # A refused in-memory run never started: nothing ran fit.
    runs = json.loads(system.cli("runs", "list", "--routine", "kmeans", "--json").stdout)
    assert [r for r in runs if r.get("method") == "fit"] == []


@pytest.mark.parametrize(
    "deployment", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_reconfiguration_is_a_constructor_run_and_runs_diff_shows_what_changed(
    system: Deployment, tmp_path: Path
) -> None:
    register_kmeans(system, tmp_path)
    system.cli(
        "instance", "create", "segments", "--routine", "kmeans", "--set", "clusters=2", "--wait"
    )
    before = run_json(system, "segments", "--method", "fit", "--statistics")
    configured = system.cli(
        "instance", "configure", "segments", "--set", "clusters=3", "--wait"
    ).stdout
    after = run_json(system, "segments", "--method", "fit", "--statistics")

    assert ": completed" in configured
    history = json.loads(
        system.cli("runs", "list", "--routine", "segments", "--source", "manual", "--json").stdout
    )
    oldest_first = list(reversed(history))
    assert [r["method"] for r in oldest_first] == ["configure", "fit", "configure", "fit"]
    assert [r["inputs"] for r in oldest_first if r["method"] == "configure"] == [
        {"clusters": 2, "max_iterations": 20},
        {"clusters": 3, "max_iterations": 20},
    ]
    assert before["configuration"]["clusters"] == 2
    assert after["configuration"]["clusters"] == 3
    assert len(after["outputs"]["centroids"]) == 3
    listed = json.loads(system.cli("instance", "list", "--json").stdout)
    assert {d["name"]: d["config"] for d in listed}["segments"]["clusters"] == 3

    diff = system.cli("runs", "diff", before["id"], after["id"]).stdout
    lines = diff.splitlines()
    assert lines[0].split() == [before["id"], after["id"]]
    assert any(line.startswith("* clusters") and " 2 " in line for line in lines), diff
    assert any(line.startswith("* centroids") for line in lines), diff
    assert any(line.startswith("  method") and "fit" in line for line in lines), diff
    assert "artifact assignments:" in diff
    # Statistics of the saved table: 3 clusters after, 2 before.
    assert any(line.startswith("* cluster.max") for line in lines), diff

    rows = json.loads(system.cli("runs", "diff", before["id"], after["id"], "--json").stdout)
    by_field = {(r["section"], r["field"]): r for r in rows}
    assert by_field[("configuration", "clusters")] == {
        "section": "configuration",
        "field": "clusters",
        "a": 2,
        "b": 3,
        "differs": True,
    }
    assert by_field[("run", "status")]["differs"] is False
    assert by_field[("artifact assignments", "cluster.max")]["a"] == 1
    assert by_field[("artifact assignments", "cluster.max")]["b"] == 2
    assert by_field[("resources", "wall seconds")]["a"] is not None
    only = system.cli("runs", "diff", before["id"], after["id"], "--only-differences").stdout
    assert "method" not in only

    # Repeating the first constructor run configures the instance as it did then.
    first_configure = oldest_first[0]["id"]
    again = json.loads(
        system.cli("runs", "rerun", first_configure, "--wait", "--json", "--timeout", "60").stdout
    )
    assert (again["method"], again["rerun_of"], again["status"]) == (
        "configure",
        first_configure,
        "completed",
    )
    assert again["configuration"] == {"clusters": 2, "max_iterations": 20}
    relisted = json.loads(system.cli("instance", "list", "--json").stdout)
    assert {d["name"]: d["config"] for d in relisted}["segments"]["clusters"] == 2


async def test_a_pinned_instance_stays_while_a_following_one_moves_to_new_code(
    system: Deployment, tmp_path: Path, client: Client
) -> None:
    folder = register_kmeans(system, tmp_path)
    first = (await (await client.store()).get("kmeans")).version
    system.cli(
        "instance", "create", "pinned", "--routine", "kmeans", "--version", first[:10], "--wait"
    )
    system.cli("instance", "create", "following", "--routine", "kmeans", "--follow-latest")
    source = folder / "kmeans_clustering.py"
    code = source.read_text()
    source.write_text(
        code.replace('return {"clusters": clusters,', 'return {"v2": True, "clusters": clusters,')
    )

    system.cli("routine", "create", str(folder), "--name", "kmeans")
    # The same code under another name is another routine, with no instances of kmeans.
    system.cli("routine", "create", str(folder), "--name", "kmeans_copy")
    taken = system.cli("routine", "create", str(folder), "--name", "pinned", check=False)

    store = await client.store()
    second = (await store.get("kmeans")).version
    assert second != first
    assert (await store.get("pinned")).version == first
    assert (await store.get("following")).version == second
    assert (await store.get("kmeans_copy")).blueprint == "kmeans_copy"
    shown = json.loads(system.cli("routine", "show", "kmeans").stdout)
    assert [v["version"] for v in shown["versions"]] == [second[:12], first[:12]]
    assert sorted(i["name"] for i in shown["instances"]) == ["following", "kmeans", "pinned"]
    assert taken.returncode == 2
    assert "'pinned' is an instance of routine kmeans" in taken.stderr

    # Each runs its own code, and the follower keeps its configuration on the new one.
    pinned = run_json(system, "pinned", "--method", "configure")
    following = run_json(system, "following", "--method", "configure", "--input", "clusters=5")
    assert pinned["routine_version"] == first
    assert "v2" not in pinned["outputs"]
    assert following["routine_version"] == second
    assert following["outputs"] == {"v2": True, "clusters": 5, "max_iterations": 20}
    assert (await store.get("following")).config == {"clusters": 5, "max_iterations": 20}

    # Deleting the instance named like the routine leaves the routine and its other instances.
    system.cli("routine", "delete", "kmeans")
    remaining = json.loads(system.cli("routine", "show", "kmeans").stdout)
    assert remaining["routine"] == "kmeans"
    assert sorted(i["name"] for i in remaining["instances"]) == ["following", "pinned"]
    assert len(remaining["versions"]) == 2
    unknown = system.cli("routine", "show", "nope", check=False)
    assert unknown.returncode == 2
    assert "routine 'nope' is not registered" in unknown.stderr


async def test_an_in_memory_constructor_run_configures_the_instance_it_runs_on(
    system: Deployment, tmp_path: Path
) -> None:
    folder = write_routine(
        tmp_path / "scaler",
        (
            "from mainspring import Routine, method, on_schedule\n"
            "class Scaler(Routine):\n"
            "    @method(in_memory=True)\n"
            "    def configure(self, factor: int = 2) -> dict:\n"
            "        return {'configured': self.config}\n"
            "    @method(in_memory=True)\n"
            "    def scale(self, value: int = 1) -> dict:\n"
            "        return {'scaled': value * self.config['factor']}\n"
            "    def run(self, tick=on_schedule(every='1d')) -> dict:\n"
            "        return {}\n"
        ),
    )
    system.cli("routine", "create", str(folder), "--name", "scaler")
    system.cli("instance", "create", "triple", "--routine", "scaler", "--set", "factor=3", "--wait")

    configured = system.cli(
        "run", "triple", "--method", "configure", "--input", "factor=5", "--in-memory"
    ).stdout
    scaled = system.cli("run", "triple", "--method", "scale", "--input", "value=7", "--in-memory")

    # The constructor run itself already sees the configuration it sets.
    assert '"configured": {"factor": 5}' in configured
    assert '"scaled": 35' in scaled.stdout
