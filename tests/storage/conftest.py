"""Fixtures shared by the storage tests: one parameter per registered engine.

Every name in :data:`tidekv.storage.ENGINES` becomes a parameter, so a new engine is
covered by the conformance and crash suites as soon as it is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidekv.storage import ENGINES, Engine, open_engine

#: Engines that promise durability (``sync=True`` survives a crash).
DURABLE = [name for name in ENGINES if name != "memory"]


@pytest.fixture(params=list(ENGINES))
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=DURABLE)
def durable_engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


OpenFn = Callable[..., Engine]


class Opened:
    """Opens engines of one kind under a temporary directory; closes them at teardown."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.engines: list[Engine] = []

    def path(self, sub: str = "db") -> str | None:
        return None if self.name == "memory" else str(self.root / sub)

    def open(self, sub: str = "db", **options: Any) -> Engine:
        engine = open_engine(self.name, self.path(sub), **options)
        self.engines.append(engine)
        return engine

    def reopen(self, engine: Engine) -> Engine:
        new = engine.reopen()
        self.engines.append(new)
        return new

    def close_all(self) -> None:
        for engine in self.engines:
            if not engine.closed:
                engine.close()


@pytest.fixture
def opened(engine_name: str, tmp_path: Path) -> Iterator[Opened]:
    o = Opened(engine_name, tmp_path)
    yield o
    o.close_all()


@pytest.fixture
def engine(opened: Opened) -> Engine:
    return opened.open()
