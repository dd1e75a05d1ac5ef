"""What changed between two values: JSON Patch, a line diff, or a bytes summary.

:func:`diff_values` picks the format from the two content types:

- ``"json-patch"`` when both are JSON (``application/json`` or ``*/*+json``): an RFC 6902
  JSON Patch (a list of operations) made by the ``jsonpatch`` library and checked by
  applying it; if the library's patch does not reproduce the new document exactly
  (type-strict: ``1``, ``1.0`` and ``true`` differ), a whole-document replace is used.
- ``"text"`` when both are ``text/*`` (or JSON that could not be patched, or one of each)
  and decode as UTF-8: hunks of a unified line diff
  (3 lines of context), each ``{"old_start", "old_lines", "new_start", "new_lines",
  "lines": [{"op": " " | "-" | "+", "line": ...}]}``. Starts are 1-based (0 when a side
  has no lines, as in ``diff -u``); each ``line`` keeps its ``"\\n"``, so applying the
  hunks to the old text gives the new text exactly. ``application/octet-stream`` is
  never sniffed as text: the format follows what the writer declared.
- ``"bytes"`` otherwise: ``{"old": {"size", "digest"} | null, "new": ..., "equal"}``.

``None`` (a tombstone, or no version) takes the format of the other side: for JSON it
counts as ``null`` (so a creation is ``[{"op": "replace", "path": "", "value": doc}]``
and a deletion replaces the document with ``null``); for text it is the empty text (all
lines added or removed); in a bytes summary it is ``null``. Two ``None`` give an equal
bytes summary. A JSON-typed value that does not parse falls back to text or bytes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import jsonpatch

from tidekv.errors import InvalidJSON
from tidekv.versioning.version import validate_json, value_digest

__all__ = ["Diff", "diff_values", "is_json_type", "is_text_type"]


@dataclass(frozen=True, slots=True)
class Diff:
    format: str  # "json-patch" | "text" | "bytes"
    changes: object  # JSON-ready

    def to_dict(self) -> dict[str, object]:
        return {"format": self.format, "changes": self.changes}


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str) -> bool:
    """``application/json`` or a structured ``+json`` type, parameters ignored."""
    mt = _media_type(content_type)
    return mt == "application/json" or (mt.endswith("+json") and "/" in mt)


def is_text_type(content_type: str) -> bool:
    """Any ``text/*`` type, parameters ignored."""
    return _media_type(content_type).startswith("text/")


_ABSENT = object()


def diff_values(
    old: bytes | None, old_content_type: str, new: bytes | None, new_content_type: str
) -> Diff:
    """The changes from ``old`` to ``new`` (``None`` = deleted / absent); see the module."""
    if old is None and new is None:
        return _bytes_diff(old, new)
    types = [ct for ct, v in ((old_content_type, old), (new_content_type, new)) if v is not None]
    if all(is_json_type(ct) for ct in types):
        docs = [_ABSENT if v is None else _parse(v) for v in (old, new)]
        if all(d is not _FAILED for d in docs):
            return Diff("json-patch", _json_patch(_none(docs[0]), _none(docs[1])))
    if all(is_json_type(ct) or is_text_type(ct) for ct in types):
        texts = [_text(v) for v in (old, new)]
        if all(t is not None for t in texts):
            return Diff("text", _text_hunks(texts[0] or "", texts[1] or ""))
    return _bytes_diff(old, new)


_FAILED = object()


def _parse(value: bytes) -> object:
    try:
        return validate_json(value)
    except InvalidJSON:
        return _FAILED


def _none(doc: object) -> Any:
    return None if doc is _ABSENT else doc


def _strict_equal(a: Any, b: Any) -> bool:
    """JSON equality that tells ``1``, ``1.0`` and ``true`` apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _json_patch(old: Any, new: Any) -> list[dict[str, Any]]:
    if _strict_equal(old, new):
        return []
    ops: list[dict[str, Any]]
    try:
        ops = list(jsonpatch.make_patch(old, new).patch)
        ok = _strict_equal(jsonpatch.apply_patch(old, ops), new)
    except Exception:  # any library failure falls back to a whole-document replace
        ok = False
    if not ok:
        ops = [{"op": "replace", "path": "", "value": new}]
    return ops


def _text(value: bytes | None) -> str | None:
    """The UTF-8 text of ``value`` ("" for None), or None when it is not UTF-8."""
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only, each keeping its "\\n"."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _text_hunks(old: str, new: str) -> list[dict[str, object]]:
    a, b = _lines(old), _lines(new)
    hunks: list[dict[str, object]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(3):
        lines: list[dict[str, str]] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend({"op": " ", "line": s} for s in a[i1:i2])
                continue
            lines.extend({"op": "-", "line": s} for s in a[i1:i2])
            lines.extend({"op": "+", "line": s} for s in b[j1:j2])
        first, last = group[0], group[-1]
        old_n, new_n = last[2] - first[1], last[4] - first[3]
        hunks.append(
            {
                "old_start": first[1] + 1 if old_n else first[1],
                "old_lines": old_n,
                "new_start": first[3] + 1 if new_n else first[3],
                "new_lines": new_n,
                "lines": lines,
            }
        )
    return hunks


def _summary(value: bytes | None) -> dict[str, object] | None:
    if value is None:
        return None
    return {"size": len(value), "digest": value_digest(value)}


def _bytes_diff(old: bytes | None, new: bytes | None) -> Diff:
    return Diff("bytes", {"old": _summary(old), "new": _summary(new), "equal": old == new})
