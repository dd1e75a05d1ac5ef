"""The timeline PNG of a chaos run: faults, throughput and latency on one time axis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tidekv.chaos.history import FAIL, INFO, OK, ClientOp
from tidekv.chaos.report import AppliedFault, throughput

__all__ = ["plot_timeline"]

_COLOURS = {OK: "tab:green", FAIL: "tab:red", INFO: "tab:orange"}


def plot_timeline(
    path: Path, ops: Sequence[ClientOp], faults: Sequence[AppliedFault], duration: float, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_f, ax_t, ax_l) = plt.subplots(
        3, 1, sharex=True, figsize=(12, 7), gridspec_kw={"height_ratios": [1.2, 2, 2]}
    )
    kinds = sorted({f.kind for f in faults})
    cmap = plt.get_cmap("tab10")
    for row, kind in enumerate(kinds):
        spans = [(f.start, max(f.end - f.start, 0.05)) for f in faults if f.kind == kind]
        ax_f.broken_barh(spans, (row - 0.4, 0.8), color=cmap(row % 10))
    ax_f.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax_f.set_ylim(-0.6, max(len(kinds), 1) - 0.4)
    ax_f.set_title(title, fontsize=10)

    tp = throughput(ops, duration)
    xs = [i + 0.5 for i in range(len(tp[OK]))]
    for outcome, label in ((OK, "ok"), (FAIL, "failed"), (INFO, "unknown")):
        ax_t.plot(xs, tp[outcome], label=label, color=_COLOURS[outcome], lw=1.2)
    ax_t.set_ylabel("ops / s")
    ax_t.legend(loc="upper right", fontsize=8)

    for outcome in (OK, FAIL, INFO):
        sel = [op for op in ops if op.outcome == outcome]
        ax_l.scatter(
            [op.invoke for op in sel],
            [max(op.latency * 1000.0, 0.1) for op in sel],
            s=2,
            color=_COLOURS[outcome],
            alpha=0.5,
        )
    ax_l.set_yscale("log")
    ax_l.set_ylabel("latency ms")
    ax_l.set_xlabel("seconds since the workload began")
    for ax in (ax_t, ax_l):
        for f in faults:
            ax.axvspan(f.start, f.end, color="grey", alpha=0.12, lw=0)
    ax_l.set_xlim(0, duration)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
