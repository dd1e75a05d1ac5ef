"""Child process of ``test_crash.py``: writes to an engine until it is killed.

Run as ``python crash_writer.py ENGINE PATH SEED SYNC NS BATCH``. The writes follow
:func:`plan` (so the parent knows every write, acknowledged or not) and, after each
call returns, one line ``<seq>\\n`` goes to stdout: the acknowledgement.

Keys, all under the namespace ``NS`` (one per round, so rounds share a directory):

* single put ``seq``:  ``NS p <seq>`` -> ``val <seq>``
* batch ``seq``: ``NS g <j>`` -> ``<seq>`` for every ``j < BATCH`` (the same keys each
  time, so a torn batch shows mixed values), plus ``NS m <seq>`` -> ``x`` and a delete
  of the previous batch's ``NS m`` marker (so exactly one marker is left).

A batch spans two keyspaces (``write_batch_multi``): the odd group keys and the markers
go to the keyspace :data:`SIDE`, the rest to the default keyspace, so a torn batch
across keyspaces shows as a torn batch too.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidekv.storage import KsOp


SIDE = "side"


@dataclass(frozen=True)
class Write:
    seq: int
    is_batch: bool


def writes(seed: int) -> Iterator[Write]:
    """The endless write sequence of the run with ``seed`` (seq numbers start at 1)."""
    rng = random.Random(seed)
    for seq in itertools.count(1):
        yield Write(seq, rng.random() < 0.5)


def plan(seed: int, count: int) -> list[Write]:
    """The first ``count`` writes of the run with ``seed``."""
    return list(itertools.islice(writes(seed), count))


def put_key(ns: bytes, seq: int) -> bytes:
    return ns + b" p %08d" % seq


def put_value(seq: int) -> bytes:
    return b"val %d" % seq


def group_key(ns: bytes, j: int) -> bytes:
    return ns + b" g %03d" % j


def marker_key(ns: bytes, seq: int) -> bytes:
    return ns + b" m %08d" % seq


def batch_value(seq: int) -> bytes:
    return b"%d" % seq


def main(argv: list[str]) -> None:
    name, path, seed, sync, ns, size = argv
    from tidekv.storage import open_engine

    engine = open_engine(name, path)
    dflt, side = engine.keyspace("default"), engine.keyspace(SIDE)
    namespace = ns.encode()
    do_sync = sync == "1"
    previous_batch = 0
    for write in writes(int(seed)):
        seq = write.seq
        if write.is_batch:
            ops: list[KsOp] = [
                (side if j % 2 else dflt, group_key(namespace, j), batch_value(seq))
                for j in range(int(size))
            ]
            if previous_batch:
                ops.append((side, marker_key(namespace, previous_batch), None))
            ops.append((side, marker_key(namespace, seq), b"x"))
            engine.write_batch_multi(ops, sync=do_sync)
            previous_batch = seq
        else:
            engine.put(put_key(namespace, seq), put_value(seq), sync=do_sync)
        os.write(1, b"%d\n" % seq)  # acknowledged: the call above has returned


if __name__ == "__main__":
    main(sys.argv[1:])
