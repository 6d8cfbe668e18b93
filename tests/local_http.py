"""A local HTTP server on 127.0.0.1 (port 0) for download tests; it can make chosen paths fail."""

from __future__ import annotations

import contextlib
import functools
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FaultServer(ThreadingHTTPServer):
    """An HTTP server that records request paths and can make given paths fail.

    Attributes:
        faults: ``path -> fault`` (see :class:`FaultyHandler`); the path has no leading slash and no query.
        trickle_interval: seconds between the bytes of a ``"trickle"`` response.
        stall_after: bytes sent before a ``"stall"`` response goes silent.
        closing: set when the server shuts down, so that slow responses end at once.
    """

    daemon_threads = True

    def __init__(self, directory: Path):
        super().__init__(("127.0.0.1", 0), functools.partial(FaultyHandler, directory=str(directory)))
        self.requests: list[str] = []
        self.faults: dict[str, int | str] = {}
        self.trickle_interval = 0.2
        self.stall_after = 1000
        self.closing = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FaultyHandler(SimpleHTTPRequestHandler):
    """Serves a folder; ``server.faults[path]`` is one of

    * 404, 500: that HTTP error;
    * ``"truncate"``: a Content-Length 5000 bytes longer than the half body that is sent;
    * ``"corrupt"``: a flipped byte;
    * ``"trickle"``: the right Content-Length, then one byte every ``server.trickle_interval`` seconds;
    * ``"stall"``: the right Content-Length and the first ``server.stall_after`` bytes, then silence until the
      client hangs up or the server shuts down.
    """

    server: FaultServer

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.requests.append(self.path)
        path = urllib.parse.urlsplit(self.path).path.lstrip("/")
        fault = self.server.faults.get(path)
        if isinstance(fault, int):
            self.send_error(fault)
            return
        if fault in ("truncate", "corrupt", "trickle", "stall"):
            body = (Path(self.directory) / path).read_bytes()
            if fault == "corrupt":
                body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (5000 if fault == "truncate" else 0)))
            self.end_headers()
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client hung up
                if fault == "trickle":
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        if self.server.closing.wait(self.server.trickle_interval):
                            break
                elif fault == "stall":
                    self.wfile.write(body[: self.server.stall_after])
                    self.server.closing.wait(60)
                else:
                    self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (keep the test output clean)
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[FaultServer]:
    server = FaultServer(directory)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
        thread.join()
