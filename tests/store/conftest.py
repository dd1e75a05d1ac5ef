from __future__ import annotations

from collections.abc import Iterator

import pytest

import tidekv
from tidekv.store import Store

DURABLE_ENGINES = ["lsm", "btree", "hash"]
ALL_ENGINES = ["memory", *DURABLE_ENGINES]


class FakeClock:
    """A settable millisecond clock so tests control HLC wall time."""

    def __init__(self, start: int = 1_763_800_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=ALL_ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=DURABLE_ENGINES)
def durable_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(engine_name: str, tmp_path: object, clock: FakeClock) -> Iterator[Store]:
    s = tidekv.open(str(tmp_path), engine_name, clock=clock)
    yield s
    s.close()
