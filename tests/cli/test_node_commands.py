"""``tide serve`` / ``tide dev-cluster``: help renders, bad arguments exit 2 with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest


def tide(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidekv", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["serve", "dev-cluster"])
def test_help_renders(command: str) -> None:
    r = tide(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "--data-dir" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--tick-ms", "0"],
        ["serve", "--peers", "one=nowhere"],
        ["serve", "--address", "no-port"],
        ["serve", "--engine", "papyrus"],
        ["serve", "--id", "1", "--peers", "2=127.0.0.1:1"],
        ["dev-cluster", "--nodes", "0"],
        ["serve", "--shards", "0"],
        ["serve", "--shards", "4097"],
        ["dev-cluster", "--shards", "0"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], tmp_path: object) -> None:
    r = tide(*args, "--data-dir", str(tmp_path))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--down-after", "0"], "--down-after must be a positive"),
        (["--down-after", "nan"], "--down-after must be a positive"),
        (["--down-after", "0.2"], "--down-after must be at least the election timeout"),
        (["--evict-after", "-5"], "--evict-after must be a positive"),
        (["--evict-after", "inf"], "--evict-after must be a positive"),
        (["--evict-after", "1e9"], "--evict-after must be at most"),
    ],
)
def test_bad_liveness_delays_exit_2_naming_the_option(
    args: list[str], named: str, tmp_path: object
) -> None:
    r = tide("serve", *args, "--data-dir", str(tmp_path))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"error: {named}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
