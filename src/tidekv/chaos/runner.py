"""One chaos run from start to report: cluster up, workload and nemesis, heal, checks.

The order: set up the network (namespaces, or loopback with only process faults when
namespaces are not permitted — printed), start the nodes, run the clients for
``duration`` seconds while the nemesis applies the schedule, heal everything, read a
final value of every key (linearizable, through the leader), read each key's history
and each node's state (``consistency=stale``), and check: linearizability per key
(against its recovered version chain; the WGL search cross-checks small keys), every
acknowledged write present, replicas converged, HLC order. Then the report.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tidekv.chaos.cluster import Cluster
from tidekv.chaos.history import ClientOp, acknowledged_versions, to_check_operations
from tidekv.chaos.nemesis import Nemesis
from tidekv.chaos.net import Loopback, Netns, probe
from tidekv.chaos.report import AppliedFault, Summary, render_markdown, summarize
from tidekv.chaos.schedule import ALL_KINDS, NETWORK_KINDS, ScheduleOptions, generate_schedule
from tidekv.chaos.verify import (
    check_registers,
    compare_replicas,
    hlc_violations,
    lost_writes,
    resolve_unknown,
)
from tidekv.chaos.workload import Workload, WorkloadOptions
from tidekv.check.linearizability import CheckResult, Verdict, check_history
from tidekv.check.versioned import VersionedResult

__all__ = ["RunOptions", "RunResult", "run"]


@dataclass
class RunOptions:
    nodes: int = 3
    duration: float = 60.0
    seed: int | None = None
    out: Path | None = None
    kinds: Sequence[str] | None = None  # None: every kind this machine can do
    network: str = "auto"  # auto | netns | loopback
    clients: int = 6
    keys: int = 10
    weak_reads: bool = False  # reads at consistency=stale (a broken setup, on purpose)
    read_consistency: str = "linearizable"  # or lease / follower (what the clients read at)
    engine: str = "lsm"
    tick_ms: int = 50
    timeout: float = 2.0
    fault_min: float = 2.0
    fault_max: float = 6.0
    quiet_min: float = 1.0
    quiet_max: float = 3.0
    max_steps: int = 2_000_000
    #: keys with at most this many operations are also checked by the WGL search
    cross_check_max: int = 2_000
    disk_mb: int = 256
    argv: Sequence[str] = ()


@dataclass
class RunResult:
    seed: int
    out: Path
    network: str
    summary: Summary
    anomalies: int
    linearizable: str
    lost: int
    acked: int
    converged: bool
    hlc_violations: int
    crashes: int
    #: exits not explained by a full disk (a node stops on ENOSPC: fail-stop, by design)
    unexpected_crashes: int
    report: Path
    plot: Path
    notes: list[str] = field(default_factory=list)
    faults: list[AppliedFault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.anomalies == 0
            and self.linearizable == Verdict.LINEARIZABLE.value
            and self.lost == 0
            and self.converged
            and self.hlc_violations == 0
            and self.unexpected_crashes == 0
        )


def _subnet(seed: int) -> tuple[int, int]:
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    rng = random.Random(seed ^ os.getpid())
    for _ in range(100):
        a, b = rng.randrange(200, 250), rng.randrange(1, 250)
        if f" 10.{a}.{b}." not in used:
            return a, b
    raise RuntimeError("no free 10.x.y.0/24 subnet")


def _free_base_port() -> int:
    from tidekv.chaos import ports

    return ports.free_base_port(12)


def _can_mount(root: Path) -> str | None:
    probe_dir = root / "mount-probe"
    probe_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe_dir)],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return f"cannot mount a tmpfs: {p.stderr.strip()}"
    subprocess.run(["umount", str(probe_dir)], capture_output=True)
    probe_dir.rmdir()
    return None


def _paged(http: httpx.Client, url: str, items: str, params: dict[str, str]) -> list[Any]:
    out: list[Any] = []
    cursor: str | None = None
    while True:
        q = dict(params)
        if cursor:
            q["before" if items == "versions" else "cursor"] = cursor
        r = http.get(url, params=q)
        r.raise_for_status()
        body = r.json()
        out += body[items]
        cursor = body.get("next")
        if not cursor:
            return out


def _get_ok(http: httpx.Client, url: str) -> None:
    http.get(url).raise_for_status()


def _eventually(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return fn()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"{what}: still failing after {timeout:.0f} s: {last!r}")


def run(opts: RunOptions, log: Callable[[str], None] = print) -> RunResult:
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1 << 31)
    out = opts.out or Path(tempfile.mkdtemp(prefix=f"tide-chaos-{seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    root = out / "nodes"
    log(f"tide chaos: seed {seed}, {opts.nodes} nodes, {opts.duration:g} s, output in {out}")
    notes: list[str] = []
    tag = f"{os.getpid():x}"[-5:]

    net: Netns | None = None
    place: Netns | Loopback
    why = None if opts.network == "loopback" else probe(tag)
    if opts.network == "netns" and why:
        raise RuntimeError(f"--network netns: {why}")
    if opts.network == "loopback" or why:
        place = Loopback(_free_base_port())
        msg = "network: loopback, process faults only" + (
            f" (namespaces not permitted: {why})" if why else ""
        )
    else:
        net = Netns(tag, _subnet(seed))
        place = net
        a, b = net.subnet
        msg = f"network: one namespace per node on bridge {net.bridge} (10.{a}.{b}.0/24)"
    log(msg)
    notes.append(msg)

    kinds = list(opts.kinds) if opts.kinds is not None else list(ALL_KINDS)
    dropped: dict[str, str] = {}
    for k in kinds:
        if k in NETWORK_KINDS and net is None:
            dropped[k] = "no network namespaces"
    disk_why = _can_mount(out) if "disk-full" in kinds else None
    if disk_why:
        dropped["disk-full"] = disk_why
    for k, reason in dropped.items():
        log(f"fault {k} skipped: {reason}")
        notes.append(f"fault {k} skipped: {reason}")
    kinds = [k for k in kinds if k not in dropped]
    use_disk = "disk-full" in kinds
    use_clock = "clock-jump" in kinds

    schedule = generate_schedule(
        seed,
        ScheduleOptions(
            opts.duration,
            opts.nodes,
            kinds,
            fault_min=opts.fault_min,
            fault_max=opts.fault_max,
            quiet_min=opts.quiet_min,
            quiet_max=opts.quiet_max,
        ),
    )
    log(f"schedule ({len(schedule)} faults):")
    for f in schedule:
        log(f"  {f.describe()}")

    cluster = Cluster(
        root,
        opts.nodes,
        place,
        engine=opts.engine,
        tick_ms=opts.tick_ms,
        clocks=use_clock,
        disk_mb=opts.disk_mb if use_disk else 0,
    )
    wl_opts = WorkloadOptions(
        keys=opts.keys,
        clients=opts.clients,
        timeout=opts.timeout,
        consistency="stale" if opts.weak_reads else opts.read_consistency,
    )
    if opts.weak_reads:
        notes.append("WEAKENED on purpose: reads use consistency=stale on any node")
    elif opts.read_consistency != "linearizable":
        notes.append(f"reads use consistency={opts.read_consistency}")
    nemesis: Nemesis | None = None
    try:
        if net is not None:
            net.setup(cluster.ids)
        cluster.prepare()
        cluster.start_all()
        lead = cluster.wait_leader(60)
        log(f"cluster up, leader n{lead}")
        t0 = time.monotonic()
        workload = Workload([cluster.url(i) for i in cluster.ids], wl_opts, seed, t0)
        nemesis = Nemesis(cluster, net, schedule, workload.now, log)
        nemesis.start()
        # a failed nemesis ends the run at once (its error is raised below)
        asyncio.run(
            workload.run(lambda: workload.now() >= opts.duration or nemesis.error is not None)
        )
        duration = workload.now()
        nemesis.stop()
        nemesis.join(60)
        if nemesis.error is not None:
            raise RuntimeError(f"the nemesis failed: {nemesis.error!r}") from nemesis.error
        nemesis.heal_all()
        restarted = cluster.restart_dead()
        if restarted:
            log(f"restarted after the run: {restarted}")
        lead = cluster.wait_leader(60)
        for i in cluster.ids:
            url = cluster.url(i) + "/ready"
            _eventually(functools.partial(_get_ok, cluster.http, url), 60, f"n{i} ready")
        log(f"healed, leader n{lead}; final reads and checks")
        ops = list(workload.ops)
        ops += _final_reads(workload, lead)
        histories: dict[str, list[Any]] = {}
        for k in workload.key_names:
            fetch = functools.partial(
                _paged,
                cluster.http,
                f"{cluster.url(lead)}/v1/kv/{k}/history",
                "versions",
                {"limit": "1000"},
            )
            histories[k] = _eventually(fetch, 30, f"history of {k}")
        convergence = _converge(cluster)
        ops, settled_failed, settled_applied = resolve_unknown(ops, histories)
        notes.append(
            f"unknown writes settled by the recovered histories: {settled_failed} did not "
            f"happen, {settled_applied} did (at an unknown time)"
        )
        with open(out / "history.jsonl", "w") as fh:
            for op in ops:
                fh.write(json.dumps(asdict(op)) + "\n")
        # the recovered version histories, so the check can be replayed offline
        (out / "versions.json").write_text(json.dumps(histories))
        log(f"checking {len(ops)} operations ({notes[-1]})")
        check, check_notes = _check(ops, histories, opts.max_steps, opts.cross_check_max, log)
        notes += check_notes
        acked = acknowledged_versions(ops)
        lost = lost_writes(acked, histories)
        hlc_bad = hlc_violations(histories)
        crashes = nemesis.crashes
    finally:
        if nemesis is not None:
            nemesis.stop()
            nemesis.join(30)
        cluster.close()
        if net is not None:
            net.teardown()

    bad_keys = check.bad_keys
    anomaly_text: list[str] = list(check.text)
    for key, vid, value in lost.missing:
        anomaly_text.append(f"lost: key {key!r} version {vid} (value {value}) was acknowledged")
    for key, diff in list(convergence.differences.items())[:20]:
        anomaly_text.append(f"diverged: key {key!r}: {diff}")
    for key, vid, parent in hlc_bad[:20]:
        anomaly_text.append(f"hlc: key {key!r} version {vid} is not after its parent {parent}")
    unexpected = sum(1 for c in crashes if "(ENOSPC)" not in c.what)
    checks = {
        "linearizable": check.verdict.value,
        "anomalies": len(bad_keys),
        "lost": lost.count,
        "acked": lost.acked,
        "converged": convergence.converged,
        "hlc_violations": len(hlc_bad),
        "crashes": f"{len(crashes)} ({unexpected} not on a full disk)",
    }
    faults = sorted(nemesis.applied + crashes, key=lambda f: f.start)
    summary = summarize(ops, nemesis.applied, duration, checks)
    plot = out / "timeline.png"
    from tidekv.chaos.plot import plot_timeline

    plot_timeline(
        plot, ops, faults, duration, f"tide chaos seed {seed}: {opts.nodes} nodes, {place.kind}"
    )
    command = "python -m tidekv.chaos " + " ".join(shlex.quote(a) for a in opts.argv)
    if "--seed" not in opts.argv:
        command += f" --seed {seed}"
    setup = [
        f"seed **{seed}**, {opts.nodes} nodes (engine {opts.engine}, tick {opts.tick_ms} ms), "
        f"{opts.clients} clients on {opts.keys} keys, {duration:.0f} s, "
        f"request timeout {opts.timeout:g} s",
        *notes,
        f"fault kinds: {', '.join(kinds) or 'none'}",
        f"nodes restarted: {cluster.restarts}",
    ]
    report = out / "report.md"
    report.write_text(
        render_markdown(
            summary,
            title=f"tide chaos run, seed {seed}",
            command=command,
            setup=setup,
            faults=faults,
            plot=plot.name,
            anomalies=anomaly_text,
        )
    )
    result = RunResult(
        seed,
        out,
        place.kind,
        summary,
        len(bad_keys),
        check.verdict.value,
        lost.count,
        lost.acked,
        convergence.converged,
        len(hlc_bad),
        len(crashes),
        unexpected,
        report,
        plot,
        notes,
        list(nemesis.applied),
    )
    log(
        f"{summary.total} operations ({summary.total_ok} ok); "
        f"linearizability: {check.verdict.value} "
        f"({len(bad_keys)} keys with anomalies); lost {lost.count} of {lost.acked} acknowledged; "
        f"converged: {convergence.converged}; HLC violations: {len(hlc_bad)}; "
        f"crashes: {len(crashes)}"
    )
    for line in anomaly_text[:3]:
        log(line)
    log(f"report: {report}")
    log(f"seed {seed}: {'PASS' if result.ok else 'FAIL'}")
    return result


@dataclass(frozen=True)
class _Check:
    verdict: Verdict
    bad_keys: list[str]
    text: list[str]


def _check(
    ops: Sequence[ClientOp],
    histories: dict[str, list[Any]],
    max_steps: int,
    cross_check_max: int,
    log: Callable[[str], None],
) -> tuple[_Check, list[str]]:
    """Each key against its recovered version chain; small keys also by the WGL search.

    The version check is exact given the chain: when it passes, the WGL search must too
    (a disagreement is a checker bug, reported as an anomaly). When it fails and the
    search passes, the clients' view has some linearization, but not the one the
    servers recorded — also reported, with both verdicts.
    """
    t = time.monotonic()
    results: dict[str, VersionedResult] = check_registers(ops, histories)
    t_versioned = time.monotonic() - t
    by_key: dict[str, list[ClientOp]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    small = [k for k, kops in by_key.items() if len(kops) <= cross_check_max]
    t = time.monotonic()
    wgl: dict[str, Any] = {}
    for k in small:
        res = check_history(to_check_operations(by_key[k]), max_steps=max_steps)
        wgl[k] = res.keys[0] if res.keys else None
    t_wgl = time.monotonic() - t
    bad = [k for k, r in results.items() if not r.ok]
    text = [str(results[k]) for k in bad]
    for k, kr in wgl.items():
        if kr is None or kr.verdict is Verdict.UNKNOWN:
            continue
        agrees = (kr.verdict is Verdict.LINEARIZABLE) == results[k].ok
        if not agrees:
            which = "CHECKER BUG: " if results[k].ok else ""
            text.append(
                f"{which}the checkers disagree on key {k!r}: in chain order "
                f"{'linearizable' if results[k].ok else 'not linearizable'}, WGL search "
                f"{kr.verdict.value}\n{CheckResult(kr.verdict, (kr,))}"
            )
            if k not in bad:
                bad.append(k)
    verdict = Verdict.NOT_LINEARIZABLE if bad else Verdict.LINEARIZABLE
    msg = (
        f"linearizability: {verdict.value}; version-order check of {len(results)} keys "
        f"in {t_versioned:.2f} s, WGL cross-check of {len(wgl)} keys "
        f"(<= {cross_check_max} operations) in {t_wgl:.2f} s"
    )
    log(msg)
    return _Check(verdict, bad, text), [msg]


def _final_reads(workload: Workload, lead: int) -> list[ClientOp]:
    async def go() -> list[ClientOp]:
        async with httpx.AsyncClient(timeout=10.0) as http:
            out = []
            strict = WorkloadOptions(**{**asdict(workload.opts), "consistency": "linearizable"})
            final = Workload(
                workload.urls, strict, workload.seed, workload.t0, versions=workload.versions
            )
            for key in workload.key_names:
                for _ in range(20):
                    op = await final.read_once(http, -1, lead, key)
                    if op.outcome == "ok":
                        out.append(op)
                        break
                    await asyncio.sleep(0.5)
            return out

    return asyncio.run(go())


def _converge(cluster: Cluster, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        states: dict[int, dict[str, str]] = {}
        for i in cluster.ids:
            try:
                items = _paged(
                    cluster.http,
                    cluster.url(i) + "/v1/kv",
                    "items",
                    {"consistency": "stale", "limit": "1000"},
                )
            except httpx.HTTPError:
                continue
            states[i] = {str(it["key"]): str(it["version"]) for it in items}
        result = compare_replicas(states)
        if (result.converged and len(states) == cluster.n) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)
