"""The runner's pure decisions."""

from __future__ import annotations

import pytest

from mainspring_services.runner.core import Outcome, with_output_not_kept


@pytest.mark.parametrize(
    ("ended", "kept_as"),
    [
        (Outcome("completed", {"n": 1}), Outcome("failed", {"n": 1}, "store full")),
        (Outcome("failed", {}, "boom", "tb"), Outcome("failed", {}, "boom\nstore full", "tb")),
        (Outcome("cancelled", {}), Outcome("cancelled", {}, "store full")),
    ],
)
def test_a_run_whose_output_was_not_kept_says_why(ended: Outcome, kept_as: Outcome) -> None:
    assert with_output_not_kept(ended, None) == ended
    assert with_output_not_kept(ended, "store full") == kept_as
