"""Versions: the immutable record of one change to one key, and its content-derived id.

A :class:`Version` names its key, its parent versions (the heads it replaced), its HLC
time, the site that made it, the author, and the digest / size / content type of its
value (a tombstone has no value). Its ``id`` is a hash over a canonical encoding of all
of that (see :func:`compute_version_id`), so the same change gets the same id on every
site and in every Python run, and any different change gets a different id.

Also here: :func:`validate_json` (a JSON document must parse before it is stored).
Pure: hashing and (de)serialisation only, no I/O.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from tidekv.errors import InvalidInput, InvalidJSON, InvalidVersionId
from tidekv.versioning.hlc import HLCTimestamp

__all__ = [
    "BYTES_CONTENT_TYPE",
    "CONTENT_TYPE_CODES",
    "JSON_CONTENT_TYPE",
    "RECORD_FORMAT",
    "TEXT_CONTENT_TYPE",
    "VERSION_ID_LENGTH",
    "EncodedVersion",
    "Version",
    "canonical_version_bytes",
    "check_version_id",
    "compute_version_id",
    "id_tail",
    "is_version_id",
    "make_version",
    "trusted_id_bytes",
    "trusted_version_id",
    "validate_json",
    "value_digest",
]

JSON_CONTENT_TYPE = "application/json"
BYTES_CONTENT_TYPE = "application/octet-stream"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
CONTENT_TYPE_CODES: tuple[str, ...] = (BYTES_CONTENT_TYPE, JSON_CONTENT_TYPE, TEXT_CONTENT_TYPE)
"""Content types a record may hold as their index in this tuple instead of the text
(the store's records do). Persisted: only ever append."""

VERSION_ID_LENGTH = 40
"""Hex characters shown of the 256-bit hash: 160 bits."""

_ID_DOMAIN = b"tidekv.version-id\x00"  # domain separation: these bytes hash nothing else
_ID_FORMAT = 1  # bump when the canonical encoding changes (old ids stay valid as strings)
_ID_HEAD = _ID_DOMAIN + bytes([_ID_FORMAT])
RECORD_FORMAT = 1  # the first element of an encoded Version record
_U32 = struct.Struct(">I")
_ID_RE = re.compile(r"[0-9a-f]{40}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def is_version_id(text: str) -> bool:
    """True when ``text`` is 40 lowercase hex characters."""
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def check_version_id(text: str) -> str:
    """Return ``text`` if it is a version id, else raise :class:`InvalidVersionId` that
    says what is wrong with it."""
    if is_version_id(text):
        return text
    if not isinstance(text, str):
        raise InvalidVersionId(f"a version id is a string, got {type(text).__name__}")
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(text) != VERSION_ID_LENGTH:
        raise InvalidVersionId(
            f"version id {shown!r} has {len(text)} characters; a version id is "
            f"{VERSION_ID_LENGTH} lowercase hex characters",
            version=shown,
        )
    for i, ch in enumerate(text):
        if ch not in "0123456789abcdef":
            what = "an uppercase" if ch in "ABCDEF" else "a non-hex"
            raise InvalidVersionId(
                f"version id {shown!r} has {what} character {ch!r} at position {i}; "
                f"a version id is {VERSION_ID_LENGTH} lowercase hex characters",
                version=shown,
            )
    raise AssertionError("unreachable")  # pragma: no cover


def value_digest(value: bytes) -> str:
    """The hex SHA-256 of a value."""
    return hashlib.sha256(value).hexdigest()


def _utf8(name: str, text: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{name} must be a string, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{name} is not valid Unicode text: {exc.reason}") from exc


def _field(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def canonical_version_bytes(
    key: str,
    parents: Sequence[str],
    digest: str,
    hlc: HLCTimestamp,
    origin: str,
    *,
    deleted: bool,
    content_type: str,
    author: str,
) -> bytes:
    """The exact bytes a version id hashes.

    Layout (every string UTF-8 with a 4-byte big-endian length before it, so no two
    different inputs can produce the same bytes)::

        "tidekv.version-id\\0"   domain tag
        0x01                    format version
        key
        u32 number of parents, then each parent (sorted, duplicates removed)
        digest
        hlc                     10 bytes (HLCTimestamp.encode)
        origin
        0x00 | 0x01             deleted
        content_type
        author
    """
    unique = sorted(set(parents))
    try:  # the hot path: one pass, no helper calls
        k, d, o = key.encode(), digest.encode(), origin.encode()
        c, a = content_type.encode(), author.encode()
        ps = [p.encode() for p in unique]
    except (AttributeError, UnicodeEncodeError):
        # not str, or not encodable: let the checking helpers name the culprit
        for name, text in (
            ("key", key),
            ("digest", digest),
            ("origin", origin),
            ("content_type", content_type),
            ("author", author),
        ):
            _utf8(name, text)
        for p in unique:
            _utf8("parent", p)
        raise AssertionError("unreachable") from None  # pragma: no cover
    pack = _U32.pack
    parts = [_ID_HEAD, pack(len(k)), k, pack(len(ps))]
    for pb in ps:
        parts.append(pack(len(pb)))
        parts.append(pb)
    parts += (
        pack(len(d)),
        d,
        hlc.encode(),
        pack(len(o)),
        o,
        b"\x01" if deleted else b"\x00",
        pack(len(c)),
        c,
        pack(len(a)),
        a,
    )
    return b"".join(parts)


def compute_version_id(
    key: str,
    parents: Sequence[str],
    digest: str,
    hlc: HLCTimestamp,
    origin: str,
    *,
    deleted: bool,
    content_type: str,
    author: str,
) -> str:
    """The first 40 hex characters of SHA-256 over :func:`canonical_version_bytes`.

    Parents are a set: their order and repetitions do not change the id."""
    data = canonical_version_bytes(
        key,
        parents,
        digest,
        hlc,
        origin,
        deleted=deleted,
        content_type=content_type,
        author=author,
    )
    return hashlib.sha256(data).hexdigest()[:VERSION_ID_LENGTH]


_LP40 = _U32.pack(40)  # the length prefix of a parent id (always 40 hex chars)
_LP64 = _U32.pack(64)  # ... and of a value digest (64 hex chars)
_LP0 = _U32.pack(0)
_ONE_PARENT = _U32.pack(1) + _LP40
_NO_PARENTS_VALUE = _LP0 + _LP64  # no parents, then a value digest follows
_NO_PARENTS_TOMBSTONE = _LP0 + _LP0
_HLC10 = struct.Struct(">QH")  # HLCTimestamp.encode, without building a time stamp
_sha256 = hashlib.sha256
_hexlify = binascii.hexlify  # bytes -> hex bytes in one call (cheaper than .hexdigest())
_tails: dict[tuple[str, bool, str, str], bytes] = {}
_TAILS_MAX = 1024


def id_tail(origin: str, deleted: bool, content_type: str, author: str) -> bytes:
    """The end of the canonical bytes of a version id (origin, tombstone flag, content
    type, author): it repeats from write to write, so it is memoised (bounded) and a
    write path may keep it. Every string must be encodable."""
    tk = (origin, deleted, content_type, author)
    tail = _tails.get(tk)
    if tail is None:
        tail = _tail(origin, deleted, content_type, author)
        if len(_tails) < _TAILS_MAX:
            _tails[tk] = tail
    return tail


def _py_id_bytes(
    kb: bytes,
    parents: tuple[str, ...],
    value: bytes | None,
    wall: int,
    logical: int,
    tail: bytes,
) -> bytes:
    """The version id as its 20 raw bytes (``.hex()`` is the id), over the same
    canonical bytes as :func:`compute_version_id`, for the store's write path: ``kb``
    is the key's UTF-8; ``parents`` sorted, unique, valid ids; ``value`` the value
    (``None`` for a tombstone, whose ``tail`` must say deleted); ``tail`` from
    :func:`id_tail`; ``wall``/``logical`` in range. One SHA-256 of the value, one over
    the bytes joined once. Property-tested to equal :func:`compute_version_id`.
    :data:`trusted_id_bytes` is this function, or its C twin when it was built."""
    n = len(parents)
    if n == 0:
        pb = _NO_PARENTS_TOMBSTONE if value is None else _NO_PARENTS_VALUE
    else:
        if n == 1:
            pb = _ONE_PARENT + parents[0].encode()
        else:
            pb = _U32.pack(n) + b"".join([_LP40 + p.encode() for p in parents])
        pb += _LP0 if value is None else _LP64
    return _sha256(
        b"".join(
            (
                _ID_HEAD,
                _U32.pack(len(kb)),
                kb,
                pb,
                b"" if value is None else _hexlify(_sha256(value).digest()),
                _HLC10.pack(wall, logical),
                tail,
            )
        )
    ).digest()[:20]


try:  # the C twin of _py_id_bytes (setup.py builds it where a C compiler is found)
    from tidekv.versioning._idhash import id_bytes as _c_id_bytes
except ImportError:  # pragma: no cover - the build is optional
    _c_id_bytes = None

trusted_id_bytes: Callable[[bytes, tuple[str, ...], bytes | None, int, int, bytes], bytes] = (
    _c_id_bytes or _py_id_bytes
)
"""``trusted_id_bytes(kb, parents, value, wall, logical, tail)``: the raw id, see
:func:`_py_id_bytes` (in C when the extension is built: the same bytes, less call
overhead; hashlib's SHA-256 costs ~0.45 µs per short digest)."""


def trusted_version_id(
    key: str,
    parents: tuple[str, ...],
    digest: bytes,
    wall: int,
    logical: int,
    origin: str,
    deleted: bool,
    content_type: str,
    author: str,
) -> str:
    """:func:`compute_version_id` over the same canonical bytes, with the input checks
    left out: ``parents`` are sorted, unique, valid version ids; ``digest`` is the raw
    32-byte SHA-256 of the value, or b"" for a tombstone; every string is encodable;
    ``wall``/``logical`` are in range (the tail is memoised, see :func:`id_tail`).
    Property-tested to equal :func:`compute_version_id`."""
    kb = key.encode()
    n = len(parents)
    if n == 0:
        pb = _LP0
    elif n == 1:
        pb = _ONE_PARENT + parents[0].encode()
    else:
        pb = _U32.pack(n) + b"".join([_LP40 + p.encode() for p in parents])
    return (
        _sha256(
            b"".join(
                (
                    _ID_HEAD,
                    _U32.pack(len(kb)),
                    kb,
                    pb,
                    _LP64 + _hexlify(digest) if digest else _LP0,
                    _HLC10.pack(wall, logical),
                    id_tail(origin, deleted, content_type, author),
                )
            )
        )
        .digest()[:20]
        .hex()
    )


def _tail(origin: str, deleted: bool, content_type: str, author: str) -> bytes:
    o, c, a = origin.encode(), content_type.encode(), author.encode()
    pack = _U32.pack
    flag = b"\x01" if deleted else b"\x00"
    return b"".join((pack(len(o)), o, flag, pack(len(c)), c, pack(len(a)), a))


class EncodedVersion(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The wire/disk layout of a Version: a msgpack array in this field order; ids and
    the digest as raw bytes (20 and 32), not hex. A storage record may extend it with
    more fields (they follow these in the array)."""

    format: int
    id: bytes
    key: str
    parents: list[bytes]
    wall: int
    logical: int
    origin: str
    author: str
    content_type: int | str  # Version.encode writes the text; a code of CONTENT_TYPE_CODES
    digest: bytes
    size: int
    deleted: bool

    @property
    def content_type_text(self) -> str:
        c = self.content_type
        return c if type(c) is str else CONTENT_TYPE_CODES[c]  # type: ignore[index]

    def trusted_version(self, digest: bytes | None = None) -> Version:
        """The :class:`Version`, without the constructor's checks: only for records this
        package wrote itself (a store reading its own engine). ``digest``: the value's
        digest, for records that leave it out because they hold the value."""
        return Version._trusted(
            self.id.hex(),
            self.key,
            tuple([p.hex() for p in self.parents]),
            HLCTimestamp.trusted(self.wall, self.logical),
            self.origin,
            self.author,
            self.content_type_text,
            (self.digest if digest is None else digest).hex(),
            self.size,
            self.deleted,
        )


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(EncodedVersion)


@dataclass(frozen=True, slots=True)
class Version:
    """One immutable change to one key. Construct with :func:`make_version`.

    The constructor checks the shape (id and parent ids well formed, parents sorted and
    unique, tombstone fields consistent); it does not recompute the id — use
    :meth:`recompute_id` to check integrity.
    """

    id: str  # 40 lowercase hex chars
    key: str
    parents: tuple[str, ...]  # sorted, no duplicates
    hlc: HLCTimestamp
    origin: str  # site/node id that created it
    author: str  # "" when unknown
    content_type: str
    digest: str  # hex sha256 of the value bytes ("" for a tombstone)
    size: int  # value length in bytes (0 for a tombstone)
    deleted: bool  # tombstone

    def __post_init__(self) -> None:
        check_version_id(self.id)
        if not isinstance(self.parents, tuple):
            raise InvalidInput("Version.parents must be a tuple")
        for p in self.parents:
            check_version_id(p)
        if list(self.parents) != sorted(set(self.parents)):
            raise InvalidInput("Version.parents must be sorted and without duplicates")
        if self.id in self.parents:
            raise InvalidInput(f"version {self.id} cannot be its own parent")
        if not isinstance(self.hlc, HLCTimestamp):
            raise InvalidInput("Version.hlc must be an HLCTimestamp")
        for name in ("key", "origin", "author", "content_type", "digest"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"Version.{name} must be a string")
        if type(self.deleted) is not bool:
            raise InvalidInput("Version.deleted must be a bool")
        if type(self.size) is not int or self.size < 0:
            raise InvalidInput(f"Version.size must be a non-negative int, got {self.size!r}")
        if self.deleted:
            if self.digest or self.size:
                raise InvalidInput("a tombstone version has digest '' and size 0")
        elif _DIGEST_RE.fullmatch(self.digest) is None:
            raise InvalidInput(f"Version.digest must be 64 lowercase hex chars: {self.digest!r}")

    @classmethod
    def _trusted(
        cls,
        id: str,
        key: str,
        parents: tuple[str, ...],
        hlc: HLCTimestamp,
        origin: str,
        author: str,
        content_type: str,
        digest: str,
        size: int,
        deleted: bool,
    ) -> Version:
        """Build without ``__post_init__`` checks, for fields the caller just computed."""
        v = object.__new__(cls)
        set_ = object.__setattr__
        set_(v, "id", id)
        set_(v, "key", key)
        set_(v, "parents", parents)
        set_(v, "hlc", hlc)
        set_(v, "origin", origin)
        set_(v, "author", author)
        set_(v, "content_type", content_type)
        set_(v, "digest", digest)
        set_(v, "size", size)
        set_(v, "deleted", deleted)
        return v

    def recompute_id(self) -> str:
        """The id these fields hash to; equals ``id`` unless the record was tampered with."""
        return compute_version_id(
            self.key,
            self.parents,
            self.digest,
            self.hlc,
            self.origin,
            deleted=self.deleted,
            content_type=self.content_type,
            author=self.author,
        )

    def encode(self) -> bytes:
        """A compact msgpack record; :meth:`decode` gives back an equal Version."""
        return _ENCODER.encode(
            EncodedVersion(
                RECORD_FORMAT,
                bytes.fromhex(self.id),
                self.key,
                [bytes.fromhex(p) for p in self.parents],
                self.hlc.wall,
                self.hlc.logical,
                self.origin,
                self.author,
                self.content_type,
                bytes.fromhex(self.digest),
                self.size,
                self.deleted,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Version:
        """The inverse of :meth:`encode`; :class:`InvalidInput` on bytes it did not make."""
        try:
            r = _DECODER.decode(data)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"not an encoded version record: {exc}") from exc
        if r.format != RECORD_FORMAT:
            raise InvalidInput(f"unknown version record format {r.format}")
        return cls(
            id=r.id.hex(),
            key=r.key,
            parents=tuple(p.hex() for p in r.parents),
            hlc=HLCTimestamp(r.wall, r.logical),
            origin=r.origin,
            author=r.author,
            content_type=r.content_type_text,
            digest=r.digest.hex(),
            size=r.size,
            deleted=r.deleted,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields, as the HTTP API's history entries show them."""
        return {
            "version": self.id,
            "key": self.key,
            "parents": list(self.parents),
            "hlc": str(self.hlc),
            "time": self.hlc.rfc3339(),
            "origin": self.origin,
            "author": self.author,
            "deleted": self.deleted,
            "size": self.size,
            "content_type": self.content_type,
            "digest": self.digest,
        }


def make_version(
    key: str,
    parents: Sequence[str],
    value: bytes | None,
    hlc: HLCTimestamp,
    origin: str,
    *,
    author: str = "",
    content_type: str = BYTES_CONTENT_TYPE,
) -> Version:
    """A new version of ``key``; ``value=None`` makes a tombstone (deleted, digest "",
    size 0). Parents are sorted and de-duplicated; each must be a version id."""
    if isinstance(parents, str):
        raise InvalidInput("parents must be a sequence of version ids, not one string")
    unique = tuple(sorted({check_version_id(p) for p in parents}))
    if not isinstance(hlc, HLCTimestamp):
        raise InvalidInput("hlc must be an HLCTimestamp")
    if value is None:
        digest, size, deleted = "", 0, True
    else:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidInput(f"a value is bytes, got {type(value).__name__}")
        data = bytes(value)
        digest, size, deleted = value_digest(data), len(data), False
    vid = compute_version_id(
        key,
        unique,
        digest,
        hlc,
        origin,
        deleted=deleted,
        content_type=content_type,
        author=author,
    )
    # every field was checked or computed above: skip the constructor's re-validation
    return Version._trusted(
        vid, key, unique, hlc, origin, author, content_type, digest, size, deleted
    )


def validate_json(value: bytes) -> object:
    """Parse a JSON document (RFC 8259, UTF-8) and return it; :class:`InvalidJSON` with the
    parse error and its byte position when it is not one."""
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"invalid JSON: {exc}") from exc
