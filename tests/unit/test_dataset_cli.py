"""`mainspring dataset ...` works on the store alone: no services needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mainspring.apps.cli import main


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAINSPRING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAINSPRING_DATASET_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_create_append_update_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "first.csv").write_text("id,text\n1,a\n2,b\n")
    (tmp_path / "more.jsonl").write_text('{"id": 3, "text": "c"}\n{"id": 4, "text": "d"}\n')
    (tmp_path / "texts.csv").write_text("text\nw\nx\ny\nz\n")

    assert main(["dataset", "create", "photos", "--from", str(tmp_path / "first.csv")]) == 0
    assert main(["dataset", "append", "photos", str(tmp_path / "more.jsonl")]) == 0
    assert (
        main(["dataset", "update", "photos", "--set", "text=upper(text)", "--where", "id > 3"]) == 0
    )
    assert (
        main(
            [
                "dataset",
                "update",
                "photos",
                "--column",
                "text",
                "--from",
                str(tmp_path / "texts.csv"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["dataset", "show", "photos", "--json"]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["rows"] == 4
    assert shown["version"] == 3
    assert [(v["version"], v["kind"], v["added_rows"]) for v in shown["versions"]] == [
        (3, "overwrite", 4),
        (2, "update", 2),
        (1, "append", 2),
        (0, "append", 2),
    ]
    assert main(["dataset", "list"]) == 0
    assert "photos" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        (["dataset", "append", "nope", "x.csv"], "mainspring dataset create nope"),
        (["dataset", "create", "p", "--schema", "id:int64", "--from", "x.csv"], "exactly one of"),
        (["dataset", "create", "p"], "exactly one of"),
        (["dataset", "create", "p", "--schema", "id:bigint"], "unknown type 'bigint'"),
        (["dataset", "create", "p", "--from", "missing.parquet"], "does not exist"),
        (["dataset", "update", "p"], "give --set"),
        (["dataset", "show", "ghost"], "mainspring dataset create ghost"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(
    argv: list[str], fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert fix in error
    assert "\n" not in error


def test_a_table_deltalake_cannot_load_is_listed_and_shown_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dataset", "create", "good", "--schema", "id:int64"]) == 0
    assert main(["dataset", "create", "broken", "--schema", "id:int64"]) == 0
    log = tmp_path / "home" / "datasets" / "broken" / "_delta_log"
    (log / f"{1:020d}.json").write_text('{"add": {"path": "x.parquet"\n')
    capsys.readouterr()

    assert main(["dataset", "list", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed["good"]["error"] is None
    assert (listed["broken"]["version"], listed["broken"]["rows"]) == (1, 0)
    assert "deltalake cannot load" in listed["broken"]["error"]

    assert main(["dataset", "show", "broken", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "mainspring dataset show broken" in shown["error"]
    assert [(v["version"], v["kind"]) for v in shown["versions"]] == [
        (1, "unreadable"),
        (0, "create"),
    ]
