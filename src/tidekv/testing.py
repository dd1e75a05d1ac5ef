"""Helpers for tests that need a real server: :class:`ServerThread` serves an app with
:func:`tidekv.http.server` (the lean HTTP/1.1 server ``tide serve`` uses) in a
background thread, and
:func:`local_server` does so for an embedded store behind a
:class:`~tidekv.localservice.LocalService`.

    with local_server(str(tmp_path), "lsm") as srv:
        httpx.get(srv.url + "/health")
        srv.store.revision
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import tidekv
from tidekv.http import create_app, server
from tidekv.localservice import LocalService
from tidekv.store import Store

__all__ = ["LocalServer", "ServerThread", "local_server"]


class ServerThread:
    """:func:`tidekv.http.server` on ``host:port`` (0: any free port) in a daemon thread;
    ``options`` go to it (e.g. ``keep_alive_timeout``)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._options = {"log_level": "error", **options}
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._server = srv = server(self.app, self.host, self.port, **self._options)

        def main() -> None:
            try:
                srv.run()
            except BaseException as exc:  # reported by start()
                self._error = exc

        self._thread = threading.Thread(target=main, name="tidekv-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not srv.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}: {self._error!r}")
            time.sleep(0.005)
        self.port = srv.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (open watch streams end) and wait for the thread."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the server did not stop")
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalServer(ServerThread):
    """A :class:`ServerThread` of an embedded store (``store``) and its ``service``."""

    def __init__(self, store: Store, service: LocalService, app: Any, host: str, port: int) -> None:
        super().__init__(app, host, port)
        self.store = store
        self.service = service


@contextlib.contextmanager
def local_server(
    path: str,
    engine: str = "lsm",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    app_options: dict[str, Any] | None = None,
    **store_options: Any,
) -> Iterator[LocalServer]:
    """Open the store in ``path``, serve it, and on exit stop the server and close the
    store (so a second ``local_server`` on the same path and port is a restart)."""
    store = tidekv.open(path, engine, **store_options)
    service = LocalService(store)
    srv = LocalServer(store, service, create_app(service, **(app_options or {})), host, port)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        service.close()
        store.close()
