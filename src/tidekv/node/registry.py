"""What a sharded node remembers about its replicas, and the cluster metadata it was sent.

``replicas.json`` in the data directory: the replica id (:mod:`tidekv.sharding.replicas`:
node and incarnation) of every data group this node hosts, and per group the highest
incarnation retired here (the *tombstone*). A group's Raft id must never name two
incarnations, so a replica is opened again after a restart under the id it was created
with, and a message for an incarnation at or below the tombstone never brings a replica
back (docs/sharding.md, "Joining and leaving"). The file is rewritten whole (atomically,
fsync-ed) on every change: a replica's creation or retirement, a few per move.

``cluster.state``: the newest :class:`~tidekv.sharding.metadata.ClusterState` the
metadata leader pushed to this node (``encode_state``), so a node outside the metadata
group restarts with the live shard map and address book, not the creation state.
"""

from __future__ import annotations

import json
import os

from tidekv.fileio import fsync_dir
from tidekv.sharding.metadata import ClusterState, decode_state, encode_state
from tidekv.sharding.replicas import incarnation_of

REGISTRY_FILE = "replicas.json"
STATE_FILE = "cluster.state"


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


class ReplicaRegistry:
    """The replicas of one node (group -> replica id) and the tombstones (group -> the
    highest incarnation retired here)."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, REGISTRY_FILE)
        self.live: dict[int, int] = {}
        self.tombstones: dict[int, int] = {}
        self.existed = False
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return
        self.existed = True
        self.live = {int(g): int(r) for g, r in raw.get("replicas", {}).items()}
        self.tombstones = {int(g): int(i) for g, i in raw.get("tombstones", {}).items()}

    def save(self) -> None:
        body = {
            "format": 1,
            "replicas": {str(g): r for g, r in sorted(self.live.items())},
            "tombstones": {str(g): i for g, i in sorted(self.tombstones.items())},
        }
        _write_atomic(self.path, json.dumps(body).encode())
        self.existed = True

    def may_create(self, group: int, rid: int) -> bool:
        """A replica ``rid`` of ``group`` may be created here: newer than every
        incarnation retired here."""
        return incarnation_of(rid) > self.tombstones.get(group, -1)

    def add(self, group: int, rid: int) -> None:
        self.live[group] = rid
        self.save()

    def retire(self, group: int, rid: int) -> None:
        """``rid`` is gone for good (whether or not it was hosted here)."""
        changed = False
        if self.live.get(group) == rid:
            del self.live[group]
            changed = True
        if incarnation_of(rid) > self.tombstones.get(group, -1):
            self.tombstones[group] = incarnation_of(rid)
            changed = True
        if changed:
            self.save()


def load_pushed_state(data_dir: str) -> ClusterState | None:
    try:
        with open(os.path.join(data_dir, STATE_FILE), "rb") as f:
            return decode_state(f.read())
    except FileNotFoundError:
        return None
    except Exception:  # a damaged copy: the metadata leader sends a fresh one soon
        return None


def save_pushed_state(data_dir: str, state: ClusterState) -> None:
    _write_atomic(os.path.join(data_dir, STATE_FILE), encode_state(state))
