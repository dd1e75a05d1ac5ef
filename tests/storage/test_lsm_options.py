"""The lsm options for many engines in one process (a sharded node hosts S + 1): one block
cache per size shared by every engine, a memtable limit across engines, and the options a
sharded node gives its groups' engines."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tidekv.node.server import group_engine_options
from tidekv.storage import open_engine
from tidekv.storage.lsm import _shared_cache

VALUE = b"x" * 1000


def sst_files(path: Path) -> list[str]:
    return [f for f in os.listdir(path) if f.endswith(".sst")]


def test_engines_opened_with_the_same_cache_size_share_one_block_cache(tmp_path: Path) -> None:
    mb = 3  # a size no other test uses: the cache is the process's
    cache = _shared_cache(mb)
    used = [cache.get_usage()]
    for i in (0, 1):
        e = open_engine("lsm", str(tmp_path / f"e{i}"), block_cache_mb=mb)
        e.write_batch([(b"%d-%05d" % (i, k), VALUE) for k in range(2000)], sync=False)
        e.close()  # flushes the memtable: the new table file's index and filter are cached
        used.append(cache.get_usage())
    assert used[0] < used[1] < used[2], used  # both engines' blocks are in this one cache


def test_a_memtable_limit_across_engines_flushes_early(tmp_path: Path) -> None:
    """64 MB memtables: 3 MB of writes stay in memory, unless the engines share a 1 MB
    limit (RocksDB's WriteBufferManager), which flushes the memtable written to."""
    free = open_engine("lsm", str(tmp_path / "free"), write_buffer_mb=64)
    limited = [
        open_engine("lsm", str(tmp_path / f"lim{i}"), write_buffer_mb=64, write_buffer_total_mb=1)
        for i in (0, 1)
    ]
    try:
        for e in (free, limited[0]):
            for n in range(30):  # 3 MB in batches of 100 KB
                e.write_batch([(b"k%03d%03d" % (n, i), VALUE) for i in range(100)], sync=False)
        deadline = time.monotonic() + 60  # the flush runs in RocksDB's background threads
        while not sst_files(tmp_path / "lim0") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sst_files(tmp_path / "lim0")
        assert sst_files(tmp_path / "free") == []
        assert limited[0].get(b"k029099") == VALUE
    finally:
        for e in (free, *limited):
            e.close()


@pytest.mark.parametrize("engine", ["lsm", "btree", "hash"])
@pytest.mark.parametrize("shards", [1, 2, 64, 4096])
def test_a_sharded_nodes_engine_options_open_a_working_engine(
    tmp_path: Path, engine: str, shards: int
) -> None:
    opts = group_engine_options(engine, shards)
    if shards == 1:
        assert opts == {}  # an unsharded node's one engine: the engine's defaults
    e = open_engine(engine, str(tmp_path / "e"), **opts)
    try:
        e.write_batch([(b"k%04d" % i, VALUE) for i in range(500)], sync=True)
        assert e.get(b"k0499") == VALUE
    finally:
        e.close()
    if engine == "lsm" and shards > 1:
        assert 4 <= opts["write_buffer_mb"] <= 64 // 2 and opts["write_buffer_total_mb"] == 256
    if engine == "btree" and shards > 1:
        assert opts["map_size"] >= 256 << 20
