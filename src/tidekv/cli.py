"""The ``tide`` command line.

The key commands (put, get, del, ls, history, diff, rollback) work on the embedded store
in ``--path`` or, with ``--url`` (or ``$TIDE_URL``; several URLs comma-separated), on a
server through :class:`tidekv.Client`, with the same output and exit codes. ``watch``,
``status`` and ``cluster add|remove`` always talk to a server.

The embedded commands refuse a node's data directory (one with ``node.json``, made by
``tide serve``): writing an embedded store into it would keep the node from starting.

Exit codes: 0 success, 1 not found (or another refused operation such as a failed
precondition, or a server that cannot be reached: "error: cannot reach URL: connection
refused"), 2 bad input. Errors are one line on stderr, never a traceback
(set ``TIDE_DEBUG=1`` to see one for an unexpected failure).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import tidekv
from tidekv.errors import InvalidInput, TideError
from tidekv.node.config import NODE_FILE
from tidekv.store import Item, Store
from tidekv.versioning import is_json_type
from tidekv.wire import item_dict

if TYPE_CHECKING:
    from tidekv.client import Client

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
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        "-u",
        envvar="TIDE_URL",
        help="Server URL(s), comma-separated: talk to a server instead of the embedded store.",
    ),
]

T = TypeVar("T")


def fail(exc: TideError) -> NoReturn:
    err.print(f"error: {exc.message}", markup=False)
    raise typer.Exit(exc.exit_code)


def with_store(
    path: str, engine: str | None, fn: Callable[[Store | Client], T], url: str | None = None
) -> T:
    """``fn`` applied to the server at ``url`` when given, else to the embedded store."""
    try:
        if url:
            # one request per command: loading the shard map first would double it
            with tidekv.Client(url, route=False) as client:
                return fn(client)
        if os.path.exists(os.path.join(path, NODE_FILE)):
            raise InvalidInput(
                f"{path} is the data directory of a tidekv node (tide serve): "
                "talk to the node with --url (or set TIDE_URL)"
            )
        with tidekv.open(path, engine) as store:
            return fn(store)
    except TideError as exc:
        fail(exc)


def with_client(url: str | None, fn: Callable[[Client], T], timeout: float = 10.0) -> T:
    """``fn`` applied to the server at ``url`` (required)."""
    if not url:
        fail(InvalidInput("this command talks to a server: give --url or set TIDE_URL"))
    try:
        with tidekv.Client(url, timeout=timeout) as client:
            return fn(client)
    except TideError as exc:
        fail(exc)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def item_to_dict(item: Item) -> dict[str, Any]:
    """A key's value as ``--json`` prints it: the API's listing shape."""
    return item_dict(item)


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
    url: UrlOpt = None,
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
        url,
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
    url: UrlOpt = None,
) -> None:
    """Print the value of KEY."""
    item = with_store(
        path, None, lambda s: s.get(key, version=version, as_of=parse_as_of(as_of)), url
    )
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
    url: UrlOpt = None,
) -> None:
    """Delete KEY (writes a tombstone version; the history is kept)."""
    res = with_store(path, None, lambda s: s.delete(key, if_match=if_match), url)
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
    url: UrlOpt = None,
) -> None:
    """List keys with their current version and value."""
    items = with_store(
        path, None, lambda s: list(s.scan(prefix, start=start, end=end, limit=limit)), url
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
    url: UrlOpt = None,
) -> None:
    """Show the versions of KEY, newest first."""
    versions = with_store(path, None, lambda s: s.history(key, limit=limit), url)
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
    url: UrlOpt = None,
) -> None:
    """Show what changed in KEY between two versions."""
    d = with_store(path, None, lambda s: s.diff(key, from_version, to_version), url)
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
    url: UrlOpt = None,
) -> None:
    """Write a new version of KEY with the content of VERSION."""
    res = with_store(path, None, lambda s: s.rollback(key, version), url)
    if as_json:
        emit_json(res.to_dict())
    else:
        out.print(
            f"{res.key}  rolled back to {version[:12]}  version {res.version}  "
            f"revision {res.revision}",
            markup=False,
        )


@app.command()
def watch(
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Only keys starting with this.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Start after this cursor (default: from now on)."),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after this many events.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Print changes as they happen, one line each, until Ctrl-C.

    Lines are: CURSOR TYPE KEY VERSION [VALUE]; with --json, each event's JSON. A broken
    connection is resumed (on the next URL) from the last event printed."""

    def follow(client: Client) -> None:
        for seen, event in enumerate(client.watch(prefix, since=since), 1):
            if as_json:
                sys.stdout.write(json.dumps(event.data, ensure_ascii=False) + "\n")
            else:
                value = event.value
                shown = "" if value is None else "  " + _preview_bytes(value)
                sys.stdout.write(
                    f"{event.cursor}  {event.type:<6}  {event.key}  {event.version}{shown}\n"
                )
            sys.stdout.flush()
            if count is not None and seen >= count:
                return

    try:
        with_client(url, follow)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends


def _preview_bytes(value: bytes, width: int = 60) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return f"<{len(value)} bytes>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[dict[str, Any]], title: str) -> Table:
    """A table of dicts, one column per key any of them has (first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    table = Table(title=title, show_edge=False, header_style="bold", title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(col)) for col in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


@app.command()
def status(as_json: JsonOpt = False, url: UrlOpt = None) -> None:
    """Show the cluster: nodes, and per shard its leader, term, commit index and the
    replication of each member as the leader sees it (match index, lag = commit index -
    match, replication state, and whether it answered within the last election timeout).

    Any node answers (a follower forwards to the leader); without a leader, a node
    reports what it knows (leader "-")."""
    info = with_client(url, lambda c: c.cluster())
    if as_json:
        emit_json(info)
        return
    head = {k: v for k, v in info.items() if not isinstance(v, list | dict)}
    for k, v in head.items():
        out.print(f"{k}: {_cell(v)}", markup=False)
    for name, value in info.items():
        if isinstance(value, list) and all(isinstance(r, dict) for r in value):
            rows = [{k: v for k, v in r.items() if k != "progress"} for r in value]
            out.print(_table(rows, name))
            for row in value:
                if isinstance(row.get("progress"), dict):
                    out.print(_replication_table(row))
        elif isinstance(value, dict):
            out.print(f"{name}: {_cell(value)}", markup=False)


def _replication_table(shard: dict[str, Any]) -> Table:
    """One row per member of the shard from the leader's progress."""
    rows = []
    for nid, p in sorted(shard["progress"].items(), key=lambda kv: int(kv[0])):
        if not isinstance(p, dict):
            continue
        leader = str(shard.get("leader")) == str(nid)
        role = "leader" if leader else "learner" if p.get("learner") else "follower"
        rows.append(
            {
                "node": nid,
                "role": role,
                "match": p.get("match"),
                "lag": p.get("lag"),
                "replication": "-" if leader else p.get("state"),
                "active": "yes" if leader or p.get("active") else "no",
            }
        )
    return _table(rows, f"shard {shard.get('id')} replication")


cluster_app = typer.Typer(
    name="cluster", help="Change the cluster's membership.", no_args_is_help=True
)
app.add_typer(cluster_app)


ADD_NODE_TIMEOUT = 600.0


@cluster_app.command("add")
def cluster_add(
    node_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The new node's id.")],
    address: Annotated[str, typer.Argument(help="Its address (host:port).")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Join node ID at ADDRESS to the cluster."""
    # the leader waits for the new node to catch up (30 s at least) before it answers:
    # a shorter timeout would retry, i.e. ask again while the first add is still going on
    res = with_client(url, lambda c: c.add_node(node_id, address), timeout=ADD_NODE_TIMEOUT)
    if as_json:
        emit_json(res)
    else:
        out.print(f"node {node_id} ({address}) added", markup=False)


@cluster_app.command("remove")
def cluster_remove(
    node_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The node's id.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Decommission node ID (its replicas move first)."""
    res = with_client(url, lambda c: c.remove_node(node_id))
    if as_json:
        emit_json(res)
    else:
        out.print(f"node {node_id} {res.get('state', 'removed')}", markup=False)


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
