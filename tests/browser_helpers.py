"""Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol (shared by tests/viz and
tests/notebooks; pytest runs with --import-mode=importlib, so test files put tests/ on sys.path to import it)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

NO_CHROMIUM = "no Chromium found (apt-get install chromium)"
"""The skip reason of a browser test on a machine without Chromium (see :func:`skipped_without_chromium`)."""
SKIPPED_WITHOUT_CHROMIUM = ("browser tests skipped: chromium not found "
                            "(install Debian's chromium to run them: make browser)")
"""The one line tests/conftest.py prints at the end of a run whose browser tests were skipped for that reason."""


def skipped_without_chromium(reports: list[Any]) -> int:
    """How many of pytest's skipped ``reports`` are browser tests skipped because no Chromium was found."""
    def reason(report: Any) -> str:
        longrepr = report.longrepr
        return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)

    return sum("browser" in report.keywords and NO_CHROMIUM in reason(report) for report in reports)


def require_browser(reason: str) -> None:
    """Skip, or fail when CI demands the browser tests (ATTNLAB_REQUIRE_BROWSER)."""
    if os.environ.get("ATTNLAB_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (ATTNLAB_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    for name in (os.environ.get("ATTNLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """The few Chrome DevTools Protocol calls the tests need, over one page's websocket; ``context`` selects an
    execution context (a frame's isolated world) for ``js`` and ``wait_for``."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, /, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send ``method`` with ``params`` and return its result; with ``session``, to that attached target's
        session (the flat protocol)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, expression: str, context: int | None = None) -> Any:
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if context is not None:
            params["contextId"] = context
        result = self.call("Runtime.evaluate", **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in test expression: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, context: int | None = None, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"  # mid-navigation
        while not self.js(guarded, context):
            if time.monotonic() > end:
                raise TimeoutError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def move_to(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def _centre(self, selector: str) -> list[float]:
        return self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                       " return [r.x + r.width / 2, r.y + r.height / 2]; })()")

    def hover(self, selector: str) -> None:
        self.move_to(*self._centre(selector))

    def click(self, selector: str) -> None:
        self.hover(selector)
        x, y = self._centre(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def errors(self) -> list[str]:
        """JavaScript exceptions, console errors, error log entries and dialogs seen so far."""
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params.get("exceptionDetails")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", ""))
            elif method == "Page.javascriptDialogOpening":
                found.append("dialog: " + params.get("message", ""))
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


@contextlib.contextmanager
def launch_devtools(profile: Path, log_path: Path, extra_flags: Sequence[str] = ()) -> Iterator[DevTools]:
    """Headless Chromium on a fresh ``profile``, its output in ``log_path``, and a :class:`DevTools` connection to
    its first page with the Page, Runtime, Log and Network domains on; skips (or fails, see
    :func:`require_browser`) when Chromium or websocket-client is missing. The browser is stopped on exit."""
    binary = find_chromium()
    if binary is None:
        require_browser(NO_CHROMIUM)
    try:
        import websocket  # noqa: F401
    except ImportError:
        require_browser("websocket-client is not installed (pip install attnlab[test])")
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync", *extra_flags,
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file, end = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"Chromium did not start (exit code {proc.poll()}); see {log.name}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class StartTags(HTMLParser):
    """The start tags of an HTML fragment, with their (unescaped) attributes, as a browser's tokenizer sees them."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
