"""The chaos network sweeps what dead runs left behind, and only that.

Needs root and ``ip`` (CI has both: ``.ci/run`` installs iproute2 and nftables); the
probe says why when it cannot run, and these tests are then skipped with that reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tidekv.chaos import net
from tidekv.chaos.net import Netns, NetworkError, probe, sweep_stale

WHY = probe("swprb")
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no network namespaces: {WHY}")


def _names() -> tuple[set[str], set[str]]:
    ns = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    links = set(net._links())
    return ns, links


def _leave_behind(tag: str) -> None:
    """What a run killed with SIGKILL leaves: a namespace, a veth pair, a bridge."""
    subprocess.run(["ip", "netns", "add", f"tc{tag}n1"], check=True)
    subprocess.run(["ip", "link", "add", f"tc{tag}br", "type", "bridge"], check=True)
    subprocess.run(
        ["ip", "link", "add", f"tc{tag}h1", "type", "veth", "peer", "name", f"tc{tag}p1"],
        check=True,
    )


@pytest.fixture
def tags() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tag in made:
        Netns(tag, (250, 1)).teardown()


def test_sweep_removes_a_dead_runs_leftovers(tags: list[str]) -> None:
    tag = "dead1"
    tags.append(tag)
    _leave_behind(tag)
    ns, links = _names()
    assert f"tc{tag}n1" in ns and f"tc{tag}br" in links and f"tc{tag}h1" in links

    assert tag in sweep_stale()

    ns, links = _names()
    assert f"tc{tag}n1" not in ns
    assert not {f"tc{tag}br", f"tc{tag}h1", f"tc{tag}p1"} & links


def test_sweep_keeps_a_live_runs_network(tags: list[str]) -> None:
    live = Netns("a11fe", (250, 2))
    tags.append("a11fe")
    live.setup([1, 2])
    try:
        assert "a11fe" not in sweep_stale()
        ns, links = _names()
        assert {"tca11fen1", "tca11fen2"} <= ns and "tca11febr" in links
        with pytest.raises(NetworkError, match="in use"):
            Netns("a11fe", (250, 3)).setup([1])
    finally:
        live.teardown()
    ns, _ = _names()
    assert "tca11fen1" not in ns


def test_a_killed_holder_releases_its_lock(tags: list[str]) -> None:
    """The lock dies with its process, however it dies: SIGKILL here."""
    tag = "c111"
    tags.append(tag)
    code = (
        "import os, sys, time\n"
        "from tidekv.chaos.net import _hold\n"
        f"_hold({tag!r})\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        _leave_behind(tag)
        assert tag not in sweep_stale()  # its owner is alive
        assert f"tc{tag}n1" in _names()[0]
    finally:
        child.kill()
        child.wait()
    assert os.path.exists(net._lock_path(tag))  # SIGKILL left the file, but not the lock
    assert tag in sweep_stale()
    assert f"tc{tag}n1" not in _names()[0]
    assert not os.path.exists(net._lock_path(tag))
