"""The README's testing examples are the example tests CI runs, word for word."""

from __future__ import annotations

import re

from tests.harness import ROOT

SHOWN = re.compile(
    r"^`(examples/[\w/]+\.py)`[^\n]*:\n\n```python\n(.*?)```", re.MULTILINE | re.DOTALL
)


def test_each_example_test_in_the_readme_is_the_file_pytest_collects() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = dict(SHOWN.findall(readme))
    assert sorted(shown) == [
        "examples/embed_new_rows/test_embed_new_rows.py",
        "examples/embedding_report/test_embedding_report.py",
        "examples/hello/test_hello.py",
    ]
    for path, code in shown.items():
        assert (ROOT / path).read_text() == code, f"README's copy of {path} differs from the file"
