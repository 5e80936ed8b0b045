"""What importing the SDK costs: no database library for a client or a CLI call."""

from __future__ import annotations

import subprocess
import sys


def test_the_sdk_client_imports_no_database_library() -> None:
    # RunQuery is a plain model: SDK users and every CLI call skip SQLAlchemy's import.
    code = "import sys, mainspring.client; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
