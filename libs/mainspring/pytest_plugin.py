"""The pytest plugin: a `mainspring_system` fixture with the real system for integration tests.

Loaded by every pytest run in an environment where mainspring is installed (entry point
`pytest11`), so it imports nothing heavy until a test asks for the fixture. The fixture is
session-scoped unless the ini option `mainspring_system_scope` says otherwise (`module`,
`package`, `class`, `function`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import pytest

if TYPE_CHECKING:
    from mainspring.testing import TestSystem

Scope = Literal["session", "package", "module", "class", "function"]
_SCOPES: tuple[Scope, ...] = ("session", "package", "module", "class", "function")


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini option choosing how widely one system is shared."""
    parser.addini(
        "mainspring_system_scope",
        "scope of the mainspring_system fixture: session (default), package, module, class, function",
        default="session",
    )


def _scope(fixture_name: str, config: pytest.Config) -> Scope:
    scope = str(config.getini("mainspring_system_scope") or "session")
    if scope not in _SCOPES:
        raise pytest.UsageError(
            f"mainspring_system_scope = {scope!r}: use one of {', '.join(_SCOPES)}"
        )
    return scope


@pytest.fixture(scope=_scope)
def mainspring_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSystem]:
    """The whole system (nats-server, services, SQLite) in a temporary home, stopped afterwards."""
    from mainspring.testing import TestSystem

    system = TestSystem(tmp_path_factory.mktemp("mainspring-home")).start()
    try:
        yield system
    finally:
        system.stop()
