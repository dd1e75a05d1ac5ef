"""Every ``testdata/*.txt`` scenario, run by ``transcript.py`` (TIDE_REWRITE=1 rewrites)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .transcript import check_transcript

TESTDATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    check_transcript(path)
