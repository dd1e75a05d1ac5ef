"""On-disk formats of the hash engine: data records, hint files, the merge manifest.

Pure encoding and decoding (plus one sequential scanner that reads a file descriptor);
no engine state. The layouts are drawn in the docstring of :mod:`tidekv.storage.hash`.
All integers are little-endian.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from itertools import accumulate
from typing import NamedTuple

from tidekv.errors import CorruptionError

# -- data records -----------------------------------------------------------------------

#: crc32 u32 | seq u64 | flags u8 | key_len u32 | value_len u32
RECORD_HEADER = struct.Struct("<IQBII")
HEADER_SIZE = RECORD_HEADER.size  # 21
_BODY = struct.Struct("<QBII")  # the header without its crc
_CRC = struct.Struct("<I")

FLAG_TOMBSTONE = 0x01
"""The record deletes its key (``value_len`` is 0)."""
FLAG_COMMIT = 0x02
"""The record ends a write group: it and the uncommitted records before it are one batch."""
FLAG_SEAL = 0x04
"""The last record of a sealed segment (no key, no value, ``seq`` = the segment id)."""
_KNOWN_FLAGS = FLAG_TOMBSTONE | FLAG_COMMIT | FLAG_SEAL

MAX_RECORD_SIZE = 0xFFFFFFFF
"""A record (header + key + value) must fit the u32 ``size`` field of a hint entry."""


def encode_record(seq: int, flags: int, key: bytes, value: bytes) -> bytes:
    """One data record; the crc covers every byte after the crc field."""
    body = _BODY.pack(seq, flags, len(key), len(value))
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(body)))
    return b"".join((_CRC.pack(crc), body, key, value))


def seal_record(seg_id: int) -> bytes:
    return encode_record(seg_id, FLAG_SEAL, b"", b"")


def ends_with_seal(fd: int, size: int, seg_id: int) -> bool:
    """True when the data file ends with the seal record of segment ``seg_id``."""
    return size >= HEADER_SIZE and os.pread(fd, HEADER_SIZE, size - HEADER_SIZE) == seal_record(
        seg_id
    )


class Record(NamedTuple):
    seq: int
    flags: int
    key: bytes
    value: bytes


def decode_record(buf: bytes, where: str) -> Record:
    """Decode and verify one whole record (``buf`` is exactly its bytes).

    Raises :class:`CorruptionError` naming ``where`` when the record is short, its
    lengths disagree with ``len(buf)`` or its checksum does not match.
    """
    if len(buf) < HEADER_SIZE:
        raise CorruptionError(f"short record at {where}", where=where)
    crc, seq, flags, klen, vlen = RECORD_HEADER.unpack_from(buf)
    if HEADER_SIZE + klen + vlen != len(buf) or flags & ~_KNOWN_FLAGS:
        raise CorruptionError(f"bad record header at {where}", where=where)
    if zlib.crc32(memoryview(buf)[4:]) != crc:
        raise CorruptionError(f"checksum mismatch at {where}", where=where)
    k0 = HEADER_SIZE
    return Record(seq, flags, buf[k0 : k0 + klen], buf[k0 + klen :])


Entry = tuple[int, int, int, int, bytes]
"""Where one record sits: ``(seq, flags, offset, size, key)``; what the key directory
and the hint files are built from (a plain tuple: millions are made at open)."""


@dataclass
class ScanResult:
    """What a sequential scan of a data file found."""

    entries: list[Entry] = field(default_factory=list)
    """Records of complete write groups, in file order."""
    end: int = 0
    """Offset just past the last complete write group: everything after it is a torn tail."""
    problem: str | None = None
    """Why the scan stopped before the end of the file (``None``: the file is clean)."""
    bytes_read: int = 0
    sealed: bool = False
    """The file ends with a seal record (counted in ``end``)."""


def scan_data(fd: int, size: int, *, chunk: int = 4 << 20) -> ScanResult:
    """Read records from offset 0 until the end or the first bad one.

    A record is bad when its header is short or has unknown flags, when it runs past
    ``size``, or when its checksum fails; a seal record anywhere but last is bad too.
    Records after the last ``FLAG_COMMIT`` record belong to an incomplete batch and are
    not returned.
    """
    out = ScanResult()
    pending: list[Entry] = []
    buf = b""
    start = 0  # file offset of buf[0]

    def window(off: int, n: int) -> memoryview:
        nonlocal buf, start
        if off < start or off + n > start + len(buf):
            buf = os.pread(fd, max(n, chunk), off)
            start = off
            out.bytes_read += len(buf)
            if len(buf) < n:
                raise CorruptionError("data file shrank while scanning")
        return memoryview(buf)[off - start : off - start + n]

    off = 0
    while off < size:
        if off + HEADER_SIZE > size:
            out.problem = f"short header at offset {off}"
            break
        crc, seq, flags, klen, vlen = RECORD_HEADER.unpack(window(off, HEADER_SIZE))
        rec_size = HEADER_SIZE + klen + vlen
        if flags & ~_KNOWN_FLAGS or (flags & FLAG_TOMBSTONE and vlen):
            out.problem = f"bad header at offset {off}"
            break
        if off + rec_size > size:
            out.problem = f"short record at offset {off}"
            break
        rec = window(off, rec_size)
        if zlib.crc32(rec[4:]) != crc:
            out.problem = f"checksum mismatch at offset {off}"
            break
        if flags & FLAG_SEAL:
            if off + rec_size == size and not pending and rec_size == HEADER_SIZE:
                out.sealed = True
                out.end = size
            else:
                out.problem = f"misplaced seal record at offset {off}"
            break
        pending.append((seq, flags, off, rec_size, bytes(rec[HEADER_SIZE : HEADER_SIZE + klen])))
        off += rec_size
        if flags & FLAG_COMMIT:
            out.entries.extend(pending)
            pending.clear()
            out.end = off
    if pending and out.problem is None:
        out.problem = f"incomplete batch at offset {out.end}"
    return out


# -- hint files -------------------------------------------------------------------------

HINT_MAGIC = b"TKVHINT1"
#: one fixed-size entry per record: seq u64 | flags u8 | offset u64 | size u32 | key_len u32
HINT_ENTRY = struct.Struct("<QBQII")
#: data_size u64 | entry_count u64 | crc32 u32 (over every byte before the crc)
HINT_TRAILER = struct.Struct("<QQI")


class HintBuilder:
    """The hint of one segment, in two columns: fixed-size entries, then all the keys
    (so loading can unpack the entries with one ``struct.iter_unpack``)."""

    def __init__(self) -> None:
        self.fixed = bytearray()
        self.keys = bytearray()
        self.count = 0

    def add(self, seq: int, flags: int, offset: int, size: int, key: bytes) -> None:
        self.fixed += HINT_ENTRY.pack(seq, flags, offset, size, len(key))
        self.keys += key
        self.count += 1

    def finish(self, data_size: int) -> bytes:
        """The whole hint file for a data file of ``data_size`` bytes."""
        head = b"".join(
            (HINT_MAGIC, self.fixed, self.keys, struct.pack("<QQ", data_size, self.count))
        )
        return head + _CRC.pack(zlib.crc32(head))


def decode_hint(data: bytes, data_size: int) -> list[Entry] | None:
    """The entries of a hint file, or ``None`` when it is not valid for a data file of
    ``data_size`` bytes (bad magic, bad crc, other size, an entry outside the file)."""
    if len(data) < len(HINT_MAGIC) + HINT_TRAILER.size or not data.startswith(HINT_MAGIC):
        return None
    tpos = len(data) - HINT_TRAILER.size
    covered, count, crc = HINT_TRAILER.unpack_from(data, tpos)
    if covered != data_size or zlib.crc32(memoryview(data)[: len(data) - 4]) != crc:
        return None
    fixed_end = len(HINT_MAGIC) + count * HINT_ENTRY.size
    if fixed_end > tpos:
        return None
    fixed = list(HINT_ENTRY.iter_unpack(memoryview(data)[len(HINT_MAGIC) : fixed_end]))
    ends = list(accumulate(f[4] for f in fixed))
    if (ends[-1] if ends else 0) != tpos - fixed_end:
        return None
    if any(f[2] + f[3] > data_size or f[3] < HEADER_SIZE + f[4] for f in fixed):
        return None
    blob = data[fixed_end:tpos]
    return [
        (seq, flags, off, size, blob[end - klen : end])
        for (seq, flags, off, size, klen), end in zip(fixed, ends, strict=True)
    ]


# -- merge manifest ---------------------------------------------------------------------


def encode_manifest(inputs: list[int], outputs: list[int]) -> bytes:
    body = json.dumps({"inputs": inputs, "outputs": outputs}, sort_keys=True).encode()
    return body + b"\n" + b"%08x\n" % zlib.crc32(body)


def decode_manifest(data: bytes) -> tuple[list[int], list[int]]:
    """``(inputs, outputs)`` of a committed merge; :class:`CorruptionError` if damaged."""
    body, _, rest = data.partition(b"\n")
    try:
        ok = rest.strip() == b"%08x" % zlib.crc32(body)
        doc = json.loads(body) if ok else None
        inputs = [int(i) for i in doc["inputs"]] if doc else []
        outputs = [int(i) for i in doc["outputs"]] if doc else []
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CorruptionError("merge manifest is damaged; refusing to guess which files to keep")
    return inputs, outputs
