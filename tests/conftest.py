"""Shared fixtures: real nats-server deployments on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from mainspring.client import Client
from tests.harness import Deployment, deployment_context


@pytest.fixture
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """nats-server started; services are started by the test (or `system`)."""
    database = getattr(request, "param", "sqlite")
    with deployment_context(tmp_path, database) as deployed:
        yield deployed
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(deployed.logs())


@pytest.fixture
def system(deployment: Deployment) -> Deployment:
    """The whole system running against the deployment."""
    deployment.start_all()
    return deployment


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[Client]:
    """An SDK client connected to the deployment."""
    connected = await Client.connect(deployment.settings())
    yield connected
    await connected.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
