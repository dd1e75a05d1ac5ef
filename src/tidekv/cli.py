"""The ``tide`` command line.

Exit codes: 0 success, 1 not found (or another refused operation such as a failed
precondition), 2 bad input. Errors are one line on stderr, never a traceback
(set ``TIDE_DEBUG=1`` to see one for an unexpected failure).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import tidekv
from tidekv.errors import InvalidInput, TideError
from tidekv.store import Item, Store
from tidekv.versioning import is_json_type

app = typer.Typer(
    name="tide",
    help="tidekv: a distributed, versioned key-value and document store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# piped output is not folded at 80 columns (scripts grep it)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_PATH = "./tide-data"

PathOpt = Annotated[
    str,
    typer.Option("--path", "-p", envvar="TIDE_PATH", help="Directory of the embedded store."),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        "-e",
        envvar="TIDE_ENGINE",
        help="Storage engine for a new store: lsm, btree, hash (an existing store keeps its own).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

T = TypeVar("T")


def fail(exc: TideError) -> NoReturn:
    err.print(f"error: {exc.message}", markup=False)
    raise typer.Exit(exc.exit_code)


def with_store(path: str, engine: str | None, fn: Callable[[Store], T]) -> T:
    try:
        with tidekv.open(path, engine) as store:
            return fn(store)
    except TideError as exc:
        fail(exc)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def item_to_dict(item: Item) -> dict[str, Any]:
    d: dict[str, Any] = {
        "key": item.key,
        "version": item.version,
        "revision": item.revision,
        "content_type": item.content_type,
        "hlc": str(item.hlc),
    }
    if item.siblings > 1:
        d["siblings"] = item.siblings
    if is_json_type(item.content_type):
        d["value"] = item.json()
    else:
        d["value_b64"] = base64.b64encode(item.value).decode()
    return d


def preview(item: Item, width: int = 60) -> str:
    if is_json_type(item.content_type) or item.content_type.startswith("text/"):
        text = item.value.decode(errors="replace")
    else:
        try:
            text = item.value.decode()
        except UnicodeDecodeError:
            return f"<{len(item.value)} bytes>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_as_of(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


# -- commands -----------------------------------------------------------------------


@app.command()
def put(
    key: Annotated[str, typer.Argument(help="The key.")],
    value: Annotated[
        str | None, typer.Argument(help="The value ('-' reads standard input).")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Read the value from a file.")
    ] = None,
    json_doc: Annotated[
        bool, typer.Option("--json-doc", "-j", help="Store the value as a JSON document.")
    ] = False,
    content_type: Annotated[
        str | None, typer.Option("--content-type", "-t", help="Content type of the value.")
    ] = None,
    if_match: Annotated[
        str | None,
        typer.Option("--if-match", help="Write only if this version is the sole current head."),
    ] = None,
    if_absent: Annotated[
        bool, typer.Option("--if-absent", help="Write only if the key is absent.")
    ] = False,
    author: Annotated[str | None, typer.Option("--author", help="Author of the change.")] = None,
    path: PathOpt = DEFAULT_PATH,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a new version of KEY."""
    if (value is None) == (file is None):
        fail(InvalidInput("give the value as an argument or with --file (not both)"))
    if file is not None:
        try:
            with open(file, "rb") as f:
                data = f.read()
        except OSError as exc:
            fail(InvalidInput(f"cannot read {file}: {exc.strerror}"))
    elif value == "-":
        data = sys.stdin.buffer.read()
    else:
        assert value is not None
        data = value.encode()
    ctype = "application/json" if json_doc else content_type
    if ctype is None and value is not None and file is None and value != "-":
        ctype = "text/plain; charset=utf-8"
    res = with_store(
        path,
        engine,
        lambda s: s.put(
            key,
            data,
            content_type=ctype,
            if_match=if_match,
            if_none_match=if_absent,
            author=author,
        ),
    )
    if as_json:
        emit_json(res.to_dict())
    else:
        out.print(f"{res.key}  version {res.version}  revision {res.revision}", markup=False)


@app.command()
def get(
    key: Annotated[str, typer.Argument(help="The key.")],
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Read this version.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Read the value at a revision number or an RFC 3339 time."),
    ] = None,
    path: PathOpt = DEFAULT_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Print the value of KEY."""
    item = with_store(path, None, lambda s: s.get(key, version=version, as_of=parse_as_of(as_of)))
    if as_json:
        emit_json(item_to_dict(item))
        return
    sys.stdout.buffer.write(item.value)
    if item.value and not item.value.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@app.command("del")
def delete(
    key: Annotated[str, typer.Argument(help="The key.")],
    if_match: Annotated[
        str | None,
        typer.Option("--if-match", help="Delete only if this version is the sole current head."),
    ] = None,
    path: PathOpt = DEFAULT_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Delete KEY (writes a tombstone version; the history is kept)."""
    res = with_store(path, None, lambda s: s.delete(key, if_match=if_match))
    if as_json:
        emit_json(res.to_dict())
    else:
        out.print(
            f"{res.key}  deleted  version {res.version}  revision {res.revision}", markup=False
        )


@app.command("ls")
def list_keys(
    prefix: Annotated[str | None, typer.Argument(help="Only keys with this prefix.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First key (inclusive).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Last key (exclusive).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="At most this many.")] = 100,
    path: PathOpt = DEFAULT_PATH,
    as_json: JsonOpt = False,
) -> None:
    """List keys with their current version and value."""
    items = with_store(
        path, None, lambda s: list(s.scan(prefix, start=start, end=end, limit=limit))
    )
    if as_json:
        emit_json({"items": [item_to_dict(i) for i in items]})
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("key", "version", "rev", "type", "size", "value"):
        table.add_column(col, overflow="fold")
    for i in items:
        table.add_row(
            i.key, i.version[:12], str(i.revision), i.content_type, str(len(i.value)), preview(i)
        )
    out.print(table)


@app.command()
def history(
    key: Annotated[str, typer.Argument(help="The key.")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1)] = None,
    path: PathOpt = DEFAULT_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Show the versions of KEY, newest first."""
    versions = with_store(path, None, lambda s: s.history(key, limit=limit))
    if as_json:
        emit_json({"key": key, "versions": [v.to_dict() for v in versions]})
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("version", "parents", "time", "rev", "origin", "author", "size", ""):
        table.add_column(col, overflow="fold", no_wrap=col in ("version", "time"))
    for vi in versions:
        v = vi.version
        table.add_row(
            v.id[:12],
            ",".join(p[:12] for p in v.parents) or "-",
            v.hlc.to_datetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            str(vi.revision),
            v.origin,
            v.author or "-",
            str(v.size),
            "deleted" if v.deleted else "",
        )
    out.print(table)


@app.command()
def diff(
    key: Annotated[str, typer.Argument(help="The key.")],
    from_version: Annotated[str, typer.Argument(metavar="FROM", help="The older version.")],
    to_version: Annotated[
        str | None, typer.Argument(metavar="[TO]", help="The newer version (default: current).")
    ] = None,
    path: PathOpt = DEFAULT_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Show what changed in KEY between two versions."""
    d = with_store(path, None, lambda s: s.diff(key, from_version, to_version))
    if as_json:
        emit_json(d.to_dict())
        return
    if (
        d.format == "text"
        and isinstance(d.changes, list)
        and all(isinstance(c, str) for c in d.changes)
    ):
        for line in d.changes:
            out.print(line, markup=False)
    else:
        out.print(json.dumps(d.changes, indent=2, ensure_ascii=False), markup=False)


@app.command()
def rollback(
    key: Annotated[str, typer.Argument(help="The key.")],
    version: Annotated[str, typer.Argument(help="The version whose content to restore.")],
    path: PathOpt = DEFAULT_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Write a new version of KEY with the content of VERSION."""
    res = with_store(path, None, lambda s: s.rollback(key, version))
    if as_json:
        emit_json(res.to_dict())
    else:
        out.print(
            f"{res.key}  rolled back to {version[:12]}  version {res.version}  "
            f"revision {res.revision}",
            markup=False,
        )


def main() -> None:
    """Console-script entry point: run the app, mapping every failure to an exit code."""
    try:
        rc = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted", markup=False)
        sys.exit(130)
    except TideError as exc:
        err.print(f"error: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        usage_message = getattr(exc, "format_message", None)
        if callable(usage_message):  # a usage error of the command-line parser
            err.print(f"error: {usage_message()}", markup=False)
            sys.exit(2)
        if os.environ.get("TIDE_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
