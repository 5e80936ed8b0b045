"""The pytest plugin loads in every pytest run of an environment with mainspring: keep it light."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_plugin_imports_no_storage_or_system_code() -> None:
    heavy = ("mainspring.testing", "mainspring.apps.up", "pyarrow", "deltalake", "sqlmodel")
    probe = (
        "import sys, mainspring.pytest_plugin; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_the_plugin_is_registered_for_pytest() -> None:
    from importlib.metadata import entry_points

    plugins = {e.name: e.value for e in entry_points(group="pytest11")}
    assert plugins.get("mainspring") == "mainspring.pytest_plugin"
