"""The harness's network: one namespace per node on a bridge, and the faults on it.

Each node ``i`` lives in the network namespace ``tc<tag>n<i>`` with one veth interface
(``eth0``, address ``10.<a>.<b>.i/24``) whose peer is attached to a bridge in the
harness's own namespace (the bridge has ``.254``: the harness's clients reach every
node directly, as Jepsen's control node does). Partitions are nftables rules in the
receiving node's namespace (``drop`` from the other side's addresses), so a one-way
partition is one side's rules only; a slow network is a netem delay (or, on a
kernel without netem, a token-bucket rate limit) on the node's ``eth0``. Everything is
removed by :meth:`Netns.teardown` (which :meth:`Netns.setup` also runs first, so the
leftovers of a crashed run with the same tag go too).

A run holds an ``flock`` on ``/run/tidekv-chaos/<tag>.lock`` from setup to teardown; the
kernel drops it when the process dies, however it dies. :func:`sweep_stale` (run by
:meth:`Netns.setup`) removes the namespaces, veths and bridges of every tag whose lock
no live process holds: what a run killed with SIGKILL, or a pytest stopped mid-test,
left behind.

When namespaces are not permitted (no root, no ``ip``, a container without
``CAP_NET_ADMIN``) :func:`probe` says why and the runner falls back to loopback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

__all__ = ["Loopback", "Netns", "NetworkError", "probe", "sweep_stale"]

LOCK_DIR = "/run/tidekv-chaos"
_NS_NAME = re.compile(r"^tc([0-9a-f]{1,6})n\d+$")
_LINK_NAME = re.compile(r"^tc([0-9a-f]{1,6})(?:br|h\d+)$")


class NetworkError(RuntimeError):
    pass


def _lock_path(tag: str) -> str:
    return os.path.join(LOCK_DIR, f"{tag}.lock")


def _hold(tag: str) -> int:
    """Take the run's ownership lock for ``tag``; the fd stays open until :func:`_release`."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(_lock_path(tag), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise NetworkError(f"chaos network tag {tag} is in use by a running harness") from None
    return fd


def _release(tag: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_lock_path(tag))
    os.close(fd)


def _owned(tag: str) -> bool:
    """Whether a live process holds ``tag``'s lock."""
    try:
        fd = os.open(_lock_path(tag), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the lock we may just have taken
    return False


def _links() -> list[str]:
    names = []
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def sweep_stale() -> list[str]:
    """Remove the namespaces and links of chaos runs that are gone; returns the tags."""
    found: dict[str, list[tuple[str, str]]] = {}
    for ns in _run(["ip", "netns", "list"], check=False).stdout.split():
        m = _NS_NAME.match(ns)
        if m:
            found.setdefault(m.group(1), []).append(("netns", ns))
    for name in _links():
        m = _LINK_NAME.match(name)
        if m:
            found.setdefault(m.group(1), []).append(("link", name))
    swept = []
    for tag, things in sorted(found.items()):
        if _owned(tag):
            continue
        for kind, name in things:
            if kind == "link":
                _run(["ip", "link", "del", name], check=False)
            else:
                _run(["ip", "netns", "del", name], check=False)
        with contextlib.suppress(OSError):
            os.unlink(_lock_path(tag))
        swept.append(tag)
    return swept


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def probe(tag: str) -> str | None:
    """``None`` if namespaces, veth, a bridge and nftables all work here; else why not."""
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (apt-get install iproute2 nftables)"
    ns = f"tc{tag}probe"
    try:
        _run(["ip", "netns", "add", ns])
    except NetworkError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "chaosprobe"])
        _run(["ip", "link", "add", f"tc{tag}pa", "type", "veth", "peer", "name", f"tc{tag}pb"])
        _run(["ip", "link", "del", f"tc{tag}pa"])
    except NetworkError as exc:
        return f"namespaces work but not veth/nftables: {exc}"
    finally:
        _run(["ip", "netns", "del", ns], check=False)
    return None


class Loopback:
    """Every node on 127.0.0.1 (ports ``base+i-1``; peer ports +100); no network faults."""

    kind = "loopback"

    def __init__(self, base_port: int) -> None:
        self.base = base_port

    def host(self, i: int) -> str:
        return "127.0.0.1"

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.base + i - 1}"

    def wrap(self, i: int, cmd: list[str]) -> list[str]:
        return cmd

    def setup(self, nodes: Iterable[int]) -> None:
        pass

    def teardown(self) -> None:
        pass


class Netns:
    """A bridge and one namespace per node (see the module docstring)."""

    kind = "netns"
    PORT = 7070

    def __init__(self, tag: str, subnet: tuple[int, int]) -> None:
        if not re.fullmatch(r"[0-9a-f]{1,6}", tag):
            # at most 6 characters for interface names; hex so sweep_stale can parse names
            raise ValueError("the tag must be 1 to 6 lowercase hex digits")
        self.tag = tag
        self.subnet = subnet
        self.nodes: list[int] = []
        self.bridge = f"tc{tag}br"
        self.netem: bool | None = None  # found out at the first slow-net fault
        self._lock: int | None = None

    def ns(self, i: int) -> str:
        return f"tc{self.tag}n{i}"

    def host(self, i: int) -> str:
        a, b = self.subnet
        return f"10.{a}.{b}.{i}"

    def address(self, i: int) -> str:
        return f"{self.host(i)}:{self.PORT}"

    def wrap(self, i: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside node ``i``'s namespace (``ip netns exec`` execs it: the pid
        is the command's own, so signals reach it directly)."""
        return ["ip", "netns", "exec", self.ns(i), *cmd]

    def setup(self, nodes: Iterable[int]) -> None:
        a, b = self.subnet
        self.nodes = list(nodes)
        self._lock = _hold(self.tag)
        self.teardown(release=False)
        sweep_stale()
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"10.{a}.{b}.254/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in self.nodes:
            ns, outer, inner = self.ns(i), f"tc{self.tag}h{i}", f"tc{self.tag}p{i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
            _run(["ip", "link", "set", inner, "netns", ns])
            _run(["ip", "link", "set", outer, "master", self.bridge])
            _run(["ip", "link", "set", outer, "up"])
            ex = ["ip", "netns", "exec", ns]
            _run([*ex, "ip", "link", "set", inner, "name", "eth0"])
            _run([*ex, "ip", "addr", "add", f"{self.host(i)}/24", "dev", "eth0"])
            _run([*ex, "ip", "link", "set", "eth0", "up"])
            _run([*ex, "ip", "link", "set", "lo", "up"])
            _run([*ex, "nft", "add", "table", "inet", "chaos"])
            _run(
                [
                    *ex,
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "chaos",
                    "input",
                    "{ type filter hook input priority 0 ; policy accept ; }",
                ]
            )

    def teardown(self, *, release: bool = True) -> None:
        for name in _links():
            if name.startswith(f"tc{self.tag}h") or name == self.bridge:
                _run(["ip", "link", "del", name], check=False)
        for ns in _run(["ip", "netns", "list"], check=False).stdout.split():
            if ns.startswith(f"tc{self.tag}n"):
                _run(["ip", "netns", "del", ns], check=False)
        if release and self._lock is not None:
            _release(self.tag, self._lock)
            self._lock = None

    # -- faults -----------------------------------------------------------------------------

    def drop_from(self, i: int, sources: Iterable[int]) -> None:
        """Node ``i`` stops receiving anything from ``sources`` (one direction only)."""
        for s in sources:
            if s != i:
                _run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        self.ns(i),
                        "nft",
                        "add",
                        "rule",
                        "inet",
                        "chaos",
                        "input",
                        "ip",
                        "saddr",
                        self.host(s),
                        "drop",
                    ]
                )

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Nodes that share no group stop hearing each other (both ways)."""
        for i in self.nodes:
            mine = [g for g in groups if i in g]
            peers = {n for g in mine for n in g}
            self.drop_from(i, [n for n in self.nodes if n not in peers])

    def slow(self, i: int, ms: float) -> str:
        """Slow node ``i``'s outgoing packets: a netem delay of ``ms`` (± a quarter) where
        the kernel has netem, else a 256 kbit/s token bucket (queueing delay); says which."""
        tc = ["ip", "netns", "exec", self.ns(i), "tc", "qdisc", "add", "dev", "eth0", "root"]
        if self.netem is None:
            self.netem = (
                _run([*tc, "netem", "delay", f"{ms:g}ms", f"{ms / 4:g}ms"], check=False).returncode
                == 0
            )
            if self.netem:
                return f"netem delay {ms:g} ms"
        elif self.netem:
            _run([*tc, "netem", "delay", f"{ms:g}ms", f"{ms / 4:g}ms"])
            return f"netem delay {ms:g} ms"
        _run([*tc, "tbf", "rate", "256kbit", "burst", "16kbit", "latency", "2s"])
        return "tbf 256 kbit/s: this kernel has no netem"

    def heal(self) -> None:
        for i in self.nodes:
            ex = ["ip", "netns", "exec", self.ns(i)]
            _run([*ex, "nft", "flush", "chain", "inet", "chaos", "input"], check=False)
            with contextlib.suppress(NetworkError):
                _run([*ex, "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
