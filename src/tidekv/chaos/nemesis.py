"""The nemesis: applies the schedule's faults to the running cluster, heals each one,
and notices nodes that exit on their own (and starts them again, noting it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from tidekv.chaos.cluster import Cluster
from tidekv.chaos.net import Netns
from tidekv.chaos.report import AppliedFault
from tidekv.chaos.schedule import Fault

__all__ = ["Nemesis"]


class Nemesis(threading.Thread):
    def __init__(
        self,
        cluster: Cluster,
        net: Netns | None,
        schedule: list[Fault],
        now: Callable[[], float],
        log: Callable[[str], None],
    ) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.cluster = cluster
        self.net = net
        self.schedule = schedule
        self.now = now
        self.log = log
        self.applied: list[AppliedFault] = []
        self.crashes: list[AppliedFault] = []
        self.killed: set[int] = set()
        self.hold: set[int] = set()
        self.active: str = ""
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            for f in self.schedule:
                if not self._wait_until(f.start):
                    return
                self._one(f)
        except BaseException as exc:  # reported by the runner, never swallowed
            self.error = exc
        finally:
            self.heal_all()

    def _wait_until(self, t: float) -> bool:
        while self.now() < t:
            if self._halt.wait(min(0.25, max(0.0, t - self.now()))):
                return False
            self._watch()
        return True

    def _watch(self) -> None:
        if self._halt.is_set():
            return
        for i, code in self.cluster.exited_on_their_own(self.killed).items():
            t = self.now()
            tail = self.cluster.log_tail(i, 600).strip().splitlines()
            last = tail[-1][:200] if tail else ""
            during = f" during {self.active}" if self.active else ""
            if "No space left on device" in self.cluster.log_tail(i, 4000):
                during = " on a full disk (ENOSPC)"
            rec = AppliedFault("crash", t, t, f"n{i} exited with code {code}{during}", last)
            self.crashes.append(rec)
            self.log(f"  {t:6.1f} n{i} exited on its own (code {code}){during}: {last}")
            if i in self.hold:  # its disk is full: start it again once that heals
                self.killed.add(i)
                continue
            self.cluster.start(i)
            self.cluster.restarts += 1

    def _resolve(self, f: Fault) -> int:
        if f.node:
            return f.node
        lead = self.cluster.leader()
        return lead if lead is not None else 1

    def _one(self, f: Fault) -> None:
        c, net = self.cluster, self.net
        start = self.now()
        node = self._resolve(f)
        what = f.describe().split(") ", 1)[1]
        note = ""
        self.active = f.kind
        heal: Callable[[], None]
        if f.kind.startswith("partition") or f.kind == "slow-net":
            assert net is not None, "network faults need namespaces"
            if f.kind == "partition-leader":
                groups: tuple[tuple[int, ...], ...] = (
                    (node,),
                    tuple(i for i in c.ids if i != node),
                )
                what = f"partition-leader n{node} | rest"
                net.partition(groups)
            elif f.kind == "partition-oneway":
                net.drop_from(node, c.ids)
                what = f"partition-oneway n{node} hears no one (it still sends)"
            elif f.kind == "slow-net":
                what = f"slow-net n{node} ({net.slow(node, f.amount)})"
            else:
                net.partition(f.groups)
            heal = net.heal
        elif f.kind in ("kill", "kill-leader"):
            c.kill(node)
            self.killed.add(node)
            what = f"{f.kind} n{node}"

            def heal() -> None:
                c.start(node)
                self.killed.discard(node)
        elif f.kind in ("pause", "pause-leader"):
            c.pause(node)
            what = f"{f.kind} n{node}"

            def heal() -> None:
                c.resume(node)
        elif f.kind == "clock-jump":
            c.set_clock(node, f.amount)

            def heal() -> None:
                c.set_clock(node, 0.0)
        elif f.kind == "disk-full":
            self.hold.add(node)
            n = c.fill_disk(node)
            note = f"{n >> 20} MiB written to fill it"
            what = f"disk-full n{node}"

            def heal() -> None:
                c.empty_disk(node)
                self.hold.discard(node)
                if node in self.killed and not c.alive(node):
                    c.start(node)
                self.killed.discard(node)
        else:
            raise ValueError(f"unknown fault kind {f.kind!r}")
        self.log(f"  {start:6.1f} + {what}")
        self._wait_until(f.end)
        heal()
        end = self.now()
        self.active = ""
        self.log(f"  {end:6.1f} - {f.kind} healed")
        self.applied.append(AppliedFault(f.kind, start, end, what, note))

    def heal_all(self) -> None:
        """Undo every fault (idempotent): the network, paused and killed nodes, clocks, disks."""
        c = self.cluster
        if self.net is not None:
            with contextlib.suppress(Exception):
                self.net.heal()
        for i in c.ids:
            c.resume(i)
            with contextlib.suppress(Exception):
                c.empty_disk(i)
            if c.clocks:
                with contextlib.suppress(Exception):
                    c.set_clock(i, 0.0)
        for i in list(self.killed):
            if not c.alive(i):
                c.start(i)
            self.killed.discard(i)
        self.hold.clear()
