"""The published AsyncAPI document is current and names every subject of the bus."""

from __future__ import annotations

from mainspring.apps import asyncapi
from mainspring.contract import subjects
from tests.harness import ROOT

COMMITTED = ROOT / "docs" / "asyncapi.json"


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert COMMITTED.read_text() == asyncapi.rendered(), (
        "docs/asyncapi.json is stale: run `just docs` and commit it"
    )


def subject_constants() -> dict[str, str]:
    """Every subject named in mainspring.contract.subjects (not buckets, consumers or streams)."""
    return {
        name: value
        for name, value in vars(subjects).items()
        if name.isupper()
        and isinstance(value, str)
        and not name.endswith(("_BUCKET", "_CONSUMER", "_PREFIX", "_ANY", "STREAM"))
    }


def test_every_subject_of_the_bus_is_a_channel() -> None:
    addresses = [channel.address for channel in asyncapi.CHANNELS]
    named = subject_constants()
    assert len(named) >= 15
    missing = [
        name
        for name, subject in named.items()
        if not any(a == subject or a.startswith(subject + ".") for a in addresses)
    ]
    assert not missing, f"subjects without a channel in mainspring.apps.asyncapi: {missing}"


def test_routine_completions_and_external_workflows_have_separate_roots() -> None:
    by_name = {channel.name: channel for channel in asyncapi.CHANNELS}
    assert by_name["runCompleted"].address == "run.completed.{routine}.{status}"
    assert by_name["externalCompleted"].address == "external.completed.{routine}.{status}"
    assert "external" not in by_name["runCompleted"].senders
