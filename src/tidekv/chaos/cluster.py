"""The node processes of a chaos run: start, kill, pause, restart, clocks and disks.

Each node is ``python -m tidekv serve`` (``tide serve``) started in its network place
(:mod:`tidekv.chaos.net`), logging to ``<root>/n<i>.log``. Two optional per-node
facilities, used only when the run asks for them and the machine has them:

* a clock offset: the node runs under :mod:`tidekv.chaos.skewed_node`, whose HLC
  physical clock is the wall clock plus the offset in ``<root>/n<i>.clock`` (seconds);
  the monotonic clock (timers, Raft ticks) is left alone;
* a small tmpfs mounted on the data directory, which the disk-full fault fills with a
  file and empties at heal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

__all__ = ["Cluster", "Place"]


class Place(Protocol):
    kind: str

    def address(self, i: int) -> str: ...

    def wrap(self, i: int, cmd: list[str]) -> list[str]: ...


class Cluster:
    def __init__(
        self,
        root: Path,
        n: int,
        place: Place,
        *,
        engine: str = "lsm",
        tick_ms: int = 50,
        clocks: bool = False,
        disk_mb: int = 0,
    ) -> None:
        self.root = root
        self.n = n
        self.place = place
        self.engine = engine
        self.tick_ms = tick_ms
        self.clocks = clocks
        self.disk_mb = disk_mb
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self.mounted: list[Path] = []
        self.http = httpx.Client(timeout=2.0)
        self.restarts = 0

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.n + 1))

    def url(self, i: int) -> str:
        return f"http://{self.place.address(i)}"

    def data_dir(self, i: int) -> Path:
        return self.root / f"n{i}"

    def clock_file(self, i: int) -> Path:
        return self.root / f"n{i}.clock"

    def peers_spec(self) -> str:
        return ",".join(f"{i}={self.place.address(i)}" for i in self.ids)

    # -- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Fresh data directories (a previous run's in the same place are removed)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        for i in self.ids:
            d = self.data_dir(i)
            d.mkdir(parents=True, exist_ok=True)
            if self.disk_mb:
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m", "tmpfs", str(d)],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
                self.mounted.append(d)
            if self.clocks:
                self.clock_file(i).write_text("0\n")

    def start(self, i: int) -> None:
        assert not self.alive(i)
        cmd = [
            sys.executable,
            "-m",
            "tidekv.chaos.skewed_node" if self.clocks else "tidekv",
            "serve",
            "--id",
            str(i),
            "--data-dir",
            str(self.data_dir(i) / "data"),
            "--address",
            self.place.address(i),
            "--peers",
            self.peers_spec(),
            "--engine",
            self.engine,
            "--tick-ms",
            str(self.tick_ms),
            # the leader nemeses (kill-, pause-, partition-leader) aim at the one data
            # group's leader: an unsharded cluster, whatever the default
            "--shards",
            "1",
            "-v",
        ]
        env = {**os.environ}
        if self.clocks:
            env["TIDE_CHAOS_CLOCK_FILE"] = str(self.clock_file(i))
        with open(self.root / f"n{i}.log", "ab") as log:
            log.write(f"=== start at {time.time():.3f}\n".encode())
            log.flush()
            self.procs[i] = subprocess.Popen(
                self.place.wrap(i, cmd),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.paused.discard(i)

    def start_all(self) -> None:
        for i in self.ids:
            self.start(i)

    def alive(self, i: int) -> bool:
        return i in self.procs and self.procs[i].poll() is None

    def kill(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGKILL)
            self.procs[i].wait(10)
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def restart_dead(self) -> list[int]:
        """Start every node that is not running (killed, or exited on its own)."""
        started = []
        for i in self.ids:
            if not self.alive(i):
                self.start(i)
                self.restarts += 1
                started.append(i)
        return started

    def exited_on_their_own(self, killed: set[int]) -> dict[int, int]:
        return {
            i: p.returncode
            for i, p in self.procs.items()
            if p.poll() is not None and i not in killed
        }

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def close(self) -> None:
        self.stop_all()
        self.http.close()
        for d in self.mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)
        self.mounted = []

    # -- clocks and disks -------------------------------------------------------------------

    def set_clock(self, i: int, offset_s: float) -> None:
        if not self.clocks:
            raise RuntimeError("clock faults need the nodes started with clocks=True")
        tmp = self.clock_file(i).with_suffix(".tmp")
        tmp.write_text(f"{offset_s:.3f}\n")
        tmp.replace(self.clock_file(i))

    def fill_disk(self, i: int) -> int:
        """Fill node ``i``'s file system; the bytes written."""
        path = self.data_dir(i) / "chaos-filler"
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * (1 << 20)
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError:
                    if len(chunk) <= 512:
                        break
                    chunk = chunk[: len(chunk) // 8]
        finally:
            os.close(fd)
        return written

    def empty_disk(self, i: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir(i) / "chaos-filler").unlink()

    # -- views ---------------------------------------------------------------------------

    def cluster_info(self, i: int) -> dict[str, Any] | None:
        if i in self.paused:
            return None
        try:
            r = self.http.get(self.url(i) + "/v1/cluster", timeout=1.0)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def leader(self) -> int | None:
        """The leader according to a live node that is the leader itself (or ``None``)."""
        for i in self.ids:
            info = self.cluster_info(i)
            if (
                info
                and info["shards"]
                and info["shards"][0].get("leader") == i == info.get("node_id")
            ):
                return i
        for i in self.ids:
            info = self.cluster_info(i)
            lead = info["shards"][0].get("leader") if info and info["shards"] else None
            if lead:
                return int(lead)
        return None

    def wait_leader(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if self.http.get(self.url(lead) + "/ready", timeout=1.0).status_code == 200:
                        return lead
            time.sleep(0.1)
        raise RuntimeError(f"no leader within {timeout:.0f} s (logs in {self.root})")

    def log_tail(self, i: int, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.root / f"n{i}.log").read_text(errors="replace")[-chars:]
        return ""

    def wipe(self) -> None:
        for i in self.ids:
            shutil.rmtree(self.data_dir(i) / "data", ignore_errors=True)
