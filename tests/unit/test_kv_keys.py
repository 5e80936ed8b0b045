"""Routine names become KV keys and subject tokens without two names sharing one."""

from __future__ import annotations

import re

import pytest

from mainspring.base.kv import key_token

VALID_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.mark.parametrize("name", ["embed-new-rows", "Nightly2", "a-b-c"])
def test_plain_names_are_kept(name: str) -> None:
    assert key_token(name) == name


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a/b", "a_b"),
        ("a.b", "a_b"),
        ("a_2fb", "a/b"),
        ("a b", "a_20b"),
        ("café", "cafe"),
        ("x>", "x*"),
    ],
)
def test_distinct_names_get_distinct_tokens(first: str, second: str) -> None:
    assert key_token(first) != key_token(second)


@pytest.mark.parametrize("name", ["a/b", "a.b", "a_b", "café", "x>", "team:etl", "a b"])
def test_tokens_are_single_subject_tokens_and_valid_keys(name: str) -> None:
    assert VALID_TOKEN.match(key_token(name))
