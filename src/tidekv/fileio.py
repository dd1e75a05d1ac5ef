"""Small durable-file helpers shared by the hash engine and the node's WAL."""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """fsync a directory, so files created, renamed or deleted in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (it may write fewer)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
