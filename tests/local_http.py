"""A local HTTP server on 127.0.0.1 (port 0) for download tests; it can make chosen paths fail."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FaultServer(ThreadingHTTPServer):
    """An HTTP server that records request paths and can make given paths fail."""

    daemon_threads = True

    def __init__(self, directory: Path):
        super().__init__(("127.0.0.1", 0), functools.partial(FaultyHandler, directory=str(directory)))
        self.requests: list[str] = []
        self.faults: dict[str, int | str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FaultyHandler(SimpleHTTPRequestHandler):
    """Serves a folder; ``server.faults[path]`` is 404, 500, "truncate" (short body) or "corrupt" (a flipped byte)."""

    server: FaultServer

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.requests.append(self.path)
        fault = self.server.faults.get(self.path.lstrip("/"))
        if isinstance(fault, int):
            self.send_error(fault)
            return
        if fault in ("truncate", "corrupt"):
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            if fault == "corrupt":
                body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (5000 if fault == "truncate" else 0)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
            self.close_connection = True
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
        server.shutdown()
        server.server_close()
        thread.join()
