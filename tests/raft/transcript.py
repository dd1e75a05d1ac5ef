"""The interpreter of the scenario transcripts in ``tests/raft/testdata/*.txt``.

A transcript is a sequence of commands, each on a line starting with ``> ``, followed by
the output the command must produce. Lines starting with ``#`` are comments. Run with
``TIDE_REWRITE=1`` to regenerate the expected output in place (then read the diff!).
A new scenario is a new text file; every command is one small handler below.

Commands (node ids are ints; ``[x]`` optional)::

    add-nodes N [learners=4,5] [pre_vote=false] [check_quorum=false]
              [read_only=lease] [max_inflight=N] [max_size=N] [election=N] [seed=N]
                                      first use: a cluster of voters 1..N (+ learners);
                                      later: N fresh empty nodes (not members yet)
    campaign ID                       ID starts an election
    propose ID DATA                   propose DATA at ID
    propose-conf-change ID add-voter|add-learner|remove NODE
    transfer-leader ID TARGET         ask ID (leader, or forwarded) to hand over to TARGET
    read-index ID CTX                 linearizable read request CTX at ID
    read-states ID                    print and clear the ReadStates ID has received
    stabilize                         handle readies and deliver until quiet; prints traffic
    process-ready ID                  handle ID's Ready (persist, queue messages, apply)
    deliver-msgs ID [N]               step (the first N of) the messages queued for ID
    drop-msgs ID                      drop the messages queued for ID
    partition 1 2 / 3                 only nodes in the same group can talk
    isolate ID / heal                 cut ID off / restore every link
    tick ID [N]                       N ticks at ID (default 1)
    tick-election ID                  enough ticks for ID's election timeout to pass
    tick-heartbeat ID                 one heartbeat interval at ID
    status [ID...]                    role, term, lead, log positions (+ progress on leaders)
    log ID                            ID's log entries
    applied ID                        ID's applied payloads
    compact ID INDEX                  snapshot ID at applied INDEX and drop the log before it
    restart ID                        crash ID (keeps storage) and start it again
    report-unreachable ID PEER / report-snapshot ID PEER ok|fail
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tidekv.raft import ConfChange, ConfChangeType, ReadOnlyOption
from tidekv.raft.errors import ProposalDropped

from .harness import Cluster, fmt_msg

REWRITE = os.environ.get("TIDE_REWRITE") == "1"


class Interpreter:
    def __init__(self) -> None:
        self.c: Cluster | None = None
        self.handlers: dict[str, Callable[[list[str]], list[str]]] = {
            name.removeprefix("cmd_").replace("_", "-"): getattr(self, name)
            for name in dir(self)
            if name.startswith("cmd_")
        }

    @property
    def cluster(self) -> Cluster:
        if self.c is None:
            raise ValueError("add-nodes first")
        return self.c

    def run(self, line: str) -> list[str]:
        parts = line.split()
        handler = self.handlers.get(parts[0])
        if handler is None:
            raise ValueError(f"unknown command {parts[0]!r}")
        try:
            return handler(parts[1:])
        except ProposalDropped as e:
            return [f"error: {e.message}"]

    # -- setup ------------------------------------------------------------------------------

    def cmd_add_nodes(self, args: list[str]) -> list[str]:
        n = int(args[0])
        opts = dict(a.split("=", 1) for a in args[1:])
        if self.c is not None:
            first = max(self.c.nodes) + 1
            ids = list(range(first, first + n))
            for nid in ids:
                self.c.add_node(nid)
            return [f"added {', '.join(map(str, ids))} (empty, not members)"]
        learners = [int(x) for x in opts.pop("learners", "").split(",") if x]
        seed = int(opts.pop("seed", "0"))
        cfg: dict[str, object] = {}
        for k, v in opts.items():
            if k == "pre_vote":
                cfg["pre_vote"] = v == "true"
            elif k == "check_quorum":
                cfg["check_quorum"] = v == "true"
            elif k == "read_only":
                cfg["read_only_option"] = (
                    ReadOnlyOption.LEASE_BASED if v == "lease" else ReadOnlyOption.SAFE
                )
            elif k == "max_inflight":
                cfg["max_inflight_msgs"] = int(v)
            elif k == "max_size":
                cfg["max_size_per_msg"] = int(v)
            elif k == "election":
                cfg["election_tick"] = int(v)
            else:
                raise ValueError(f"unknown option {k}")
        self.c = Cluster(range(1, n + 1), learners=learners, seed=seed, **cfg)
        return [self.c.status(i).split("\n")[0] for i in sorted(self.c.nodes)]

    # -- inputs -----------------------------------------------------------------------------

    def cmd_campaign(self, args: list[str]) -> list[str]:
        self.cluster.campaign(int(args[0]))
        return []

    def cmd_propose(self, args: list[str]) -> list[str]:
        self.cluster.propose(int(args[0]), " ".join(args[1:]).encode())
        return []

    def cmd_propose_conf_change(self, args: list[str]) -> list[str]:
        kinds = {
            "add-voter": ConfChangeType.ADD_VOTER,
            "add-learner": ConfChangeType.ADD_LEARNER,
            "remove": ConfChangeType.REMOVE_NODE,
        }
        self.cluster.conf_change(int(args[0]), ConfChange(kinds[args[1]], int(args[2])))
        return []

    def cmd_transfer_leader(self, args: list[str]) -> list[str]:
        self.cluster.nodes[int(args[0])].raw.transfer_leader(int(args[1]))
        return []

    def cmd_read_index(self, args: list[str]) -> list[str]:
        self.cluster.nodes[int(args[0])].raw.read_index(args[1].encode())
        return []

    def cmd_read_states(self, args: list[str]) -> list[str]:
        node = self.cluster.nodes[int(args[0])]
        out = [f"{rs.request_ctx.decode()} index={rs.index}" for rs in node.read_states]
        node.read_states.clear()
        return out or ["(none)"]

    def cmd_report_unreachable(self, args: list[str]) -> list[str]:
        self.cluster.nodes[int(args[0])].raw.report_unreachable(int(args[1]))
        return []

    def cmd_report_snapshot(self, args: list[str]) -> list[str]:
        self.cluster.nodes[int(args[0])].raw.report_snapshot(int(args[1]), args[2] == "ok")
        return []

    # -- network and driver -------------------------------------------------------------------

    def cmd_stabilize(self, args: list[str]) -> list[str]:
        return [fmt_msg(m) for m in self.cluster.stabilize()]

    def cmd_process_ready(self, args: list[str]) -> list[str]:
        c = self.cluster
        nid = int(args[0])
        before = {k: len(q) for k, q in c.queues.items()}
        handled = c.handle_ready(nid)
        if not handled:
            return ["(no ready)"]
        out = []
        for k in sorted(c.queues):
            out += [f"queued {fmt_msg(m)}" for m in c.queues[k][before.get(k, 0) :]]
        return out or ["(nothing sent)"]

    def cmd_deliver_msgs(self, args: list[str]) -> list[str]:
        count = int(args[1]) if len(args) > 1 else None
        return [fmt_msg(m) for m in self.cluster.deliver(int(args[0]), count)] or ["(none)"]

    def cmd_drop_msgs(self, args: list[str]) -> list[str]:
        return [f"dropped {fmt_msg(m)}" for m in self.cluster.drop(int(args[0]))] or ["(none)"]

    def cmd_partition(self, args: list[str]) -> list[str]:
        groups: list[list[int]] = [[]]
        for a in args:
            if a == "/":
                groups.append([])
            else:
                groups[-1].append(int(a))
        self.cluster.partition(*groups)
        return []

    def cmd_isolate(self, args: list[str]) -> list[str]:
        self.cluster.isolate(int(args[0]))
        return []

    def cmd_heal(self, args: list[str]) -> list[str]:
        self.cluster.heal()
        return []

    def cmd_tick(self, args: list[str]) -> list[str]:
        self.cluster.tick(int(args[0]), int(args[1]) if len(args) > 1 else 1)
        return []

    def cmd_tick_election(self, args: list[str]) -> list[str]:
        self.cluster.tick_election(int(args[0]))
        return []

    def cmd_tick_heartbeat(self, args: list[str]) -> list[str]:
        nid = int(args[0])
        self.cluster.tick(nid, self.cluster.nodes[nid].cfg.heartbeat_tick)
        return []

    def cmd_restart(self, args: list[str]) -> list[str]:
        self.cluster.restart(int(args[0]))
        return [self.cluster.status(int(args[0]))]

    def cmd_compact(self, args: list[str]) -> list[str]:
        nid = int(args[0])
        self.cluster.compact(nid, int(args[1]))
        return [self.cluster.log_of(nid)]

    # -- inspection ------------------------------------------------------------------------

    def cmd_status(self, args: list[str]) -> list[str]:
        ids = [int(a) for a in args] or sorted(self.cluster.nodes)
        out: list[str] = []
        for nid in ids:
            out += self.cluster.status(nid).split("\n")
        return out

    def cmd_log(self, args: list[str]) -> list[str]:
        return [self.cluster.log_of(int(a)) for a in args]

    def cmd_applied(self, args: list[str]) -> list[str]:
        out = []
        for a in args:
            data = self.cluster.applied_data(int(a))
            out.append(f"{a}: " + " ".join(d.decode() for d in data))
        return out


def run_transcript(path: Path) -> tuple[str, str]:
    """Run the file; returns (expected text, actual text) in the file's own layout."""
    text = path.read_text()
    it = Interpreter()
    out_lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("> "):
            out_lines.append(line)
            out_lines += it.run(line[2:].strip())
            out_lines.append("")
        elif line.startswith("#"):
            out_lines.append(line)
        elif not line.strip() and out_lines and out_lines[-1].startswith("#"):
            out_lines.append("")
    actual = "\n".join(out_lines).rstrip("\n") + "\n"
    return text, actual


def check_transcript(path: Path) -> None:
    expected, actual = run_transcript(path)
    if REWRITE:
        if expected != actual:
            path.write_text(actual)
        return
    if expected != actual:
        import difflib

        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), "expected", "actual"
            )
        )
        raise AssertionError(f"{path.name} differs (TIDE_REWRITE=1 regenerates):\n{diff}")
