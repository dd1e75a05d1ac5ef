"""A real uvicorn server on 127.0.0.1 (any free port) over a LocalService, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidekv.testing import LocalServer, local_server


@pytest.fixture(params=["lsm", "memory"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def live(tmp_path: Path, engine: str) -> Iterator[LocalServer]:
    with local_server(str(tmp_path / "db"), engine) as srv:
        yield srv


@pytest.fixture
def http(live: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client
