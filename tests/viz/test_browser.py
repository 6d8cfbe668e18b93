"""The viewer in a real headless Chromium (Debian's package), driven over the Chrome DevTools Protocol.

Skips only when no Chromium is installed and ATTNLAB_REQUIRE_BROWSER is unset; CI sets it, so there a missing
browser (or websocket-client) is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from attnlab.models.base import AttentionMaps
from attnlab.viz.html import write_html

pytestmark = pytest.mark.browser

SRC = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"double\" 'single'", "我爱你",
       "😀🎉", "&amp;"]
TGT = ["I", "<b>love</b>", "you", "!"]


def _require(reason: str) -> None:
    if os.environ.get("ATTNLAB_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (ATTNLAB_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


def _find_chromium() -> str | None:
    for name in (os.environ.get("ATTNLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in test expression: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"  # mid-navigation
        while not self.js(guarded):
            if time.monotonic() > end:
                raise TimeoutError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def hover(self, selector: str) -> None:
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])

    def click(self, selector: str) -> None:
        self.hover(selector)
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def errors(self) -> list[str]:
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


@pytest.fixture(scope="module")
def devtools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    binary = _find_chromium()
    if binary is None:
        _require("no Chromium found (apt-get install chromium)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _require("websocket-client is not installed (pip install attnlab[test])")
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = (profile.parent / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
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


def _maps() -> AttentionMaps:
    """Known weights: cross query j attends 0.7 to source j + 1 in head 0 and uniformly in head 1."""
    cross = torch.full((1, 1, 2, len(TGT), len(SRC)), 1.0 / len(SRC))
    for j in range(len(TGT)):
        cross[0, 0, 0, j] = 0.3 / (len(SRC) - 1)
        cross[0, 0, 0, j, j + 1] = 0.7
    enc = torch.softmax(torch.randn(2, 1, 2, len(SRC), len(SRC), generator=torch.Generator().manual_seed(0)), -1)
    dec = torch.tril(torch.ones(1, 1, 2, len(TGT), len(TGT)))
    return AttentionMaps(encoder_self=enc, decoder_self=dec / dec.sum(-1, keepdim=True), cross=cross)


def _weights(tools: DevTools, selector: str) -> list[float | None]:
    return tools.js(f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
                    ".map(e => e.dataset.weight === undefined ? null : Number(e.dataset.weight))")


def test_viewer_in_headless_chromium(devtools: DevTools, tmp_path: Path) -> None:
    maps = _maps()
    page = write_html(maps, tmp_path / "viewer.html", query_tokens=TGT, key_tokens=SRC, title="<script>x</script>")
    devtools.call("Page.addScriptToEvaluateOnNewDocument",
                  source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
    devtools.call("Page.navigate", url=page.as_uri())
    devtools.wait_for("document.documentElement.dataset.ready === '1'")

    # Every token is text; nothing was injected.
    texts = devtools.js("Array.from(document.querySelectorAll('#queries .tok')).map(e => e.textContent)")
    assert texts == SRC  # first view: encoder self-attention over the source
    assert devtools.js("document.querySelectorAll('img, iframe, object, embed, b, [onerror]').length") == 0
    assert devtools.js("document.scripts.length") == 2
    assert devtools.js("document.title") == "<script>x</script>"
    assert devtools.js("document.getElementById('title').textContent") == "<script>x</script>"

    # Switch to cross-attention, head 0, then hover target token 1: source token 2 lights up most.
    devtools.js("(() => { const s = document.getElementById('view'); s.value = '2';"
                " s.dispatchEvent(new Event('change')); })()")
    assert devtools.js("Array.from(document.querySelectorAll('#keys .tok')).map(e => e.textContent)") == SRC
    assert devtools.js("Array.from(document.querySelectorAll('#queries .tok')).map(e => e.textContent)") == TGT
    devtools.js("(() => { const s = document.getElementById('head'); s.value = '0';"
                " s.dispatchEvent(new Event('change')); })()")
    devtools.hover("#queries .tok[data-index='1']")
    devtools.wait_for("document.querySelector('#queries .tok.selected') !== null")
    row = maps.cross[0, 0, 0, 1].tolist()
    assert _weights(devtools, "#keys .tok") == pytest.approx(row, abs=1e-4)
    assert devtools.js("document.querySelector('#keys .tok.top').dataset.index") == "2"
    lit = devtools.js("Array.from(document.querySelectorAll('#matrix .cell.hl')).map(c => [c.dataset.q, c.dataset.k])")
    assert lit == [["1", str(k)] for k in range(len(SRC))]
    assert "attends most to" in devtools.js("document.getElementById('status').textContent")

    # Hover a source token: what attends to it (its column).
    devtools.hover("#keys .tok[data-index='3']")
    devtools.wait_for("document.querySelector('#keys .tok.selected[data-index=\"3\"]') !== null")
    column = maps.cross[0, 0, 0, :, 3].tolist()
    assert _weights(devtools, "#queries .tok") == pytest.approx(column, abs=1e-4)
    assert devtools.js("document.querySelectorAll('#matrix .cell.hl').length") == len(TGT)

    # Click pins the selection; moving away keeps it. All heads: the matrix shows the mean over heads.
    devtools.click("#queries .tok[data-index='0']")
    devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=5)
    assert devtools.js("document.querySelector('#queries .tok.selected').dataset.index") == "0"
    devtools.js("(() => { const s = document.getElementById('head'); s.value = 'all';"
                " s.dispatchEvent(new Event('change')); })()")
    cells = devtools.js("Array.from(document.querySelectorAll('#matrix .cell')).map(c => Number(c.dataset.w))")
    assert cells == pytest.approx(maps.cross[0, 0].mean(0).flatten().tolist(), abs=2e-4)
    assert devtools.js("document.querySelectorAll('#keys .tok .stripes span').length") == 2 * len(SRC)

    shot = devtools.call("Page.captureScreenshot", format="png")["data"]
    png = tmp_path / "viewer.png"
    png.write_bytes(base64.b64decode(shot))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    if os.environ.get("ATTNLAB_SCREENSHOT_DIR"):  # keep a copy to look at
        shutil.copy(png, Path(os.environ["ATTNLAB_SCREENSHOT_DIR"]) / "viewer.png")

    assert devtools.js("window.__alerts") == []
    assert devtools.errors() == []
    assert [u for u in devtools.requests() if not u.startswith(("file:", "data:"))] == []


# ------------------------------------------------------------------------------------- inline in a notebook


def _session_call(tools: DevTools, session: str | None, method: str, **params: Any) -> dict[str, Any]:
    """``tools.call`` addressed to an attached target's session (flat protocol) when ``session`` is given."""
    if session is None:
        return tools.call(method, **params)
    tools.next_id += 1
    tools.ws.send(json.dumps({"id": tools.next_id, "method": method, "params": params, "sessionId": session}))
    while True:
        msg = json.loads(tools.ws.recv())
        if msg.get("id") == tools.next_id:
            if "error" in msg:
                raise RuntimeError(f"{method}: {msg['error']}")
            return msg.get("result", {})
        tools.events.append(msg)


class _Frame:
    """Evaluates JavaScript in one iframe: an isolated world of the page's own session when the frame shares the
    page's process, else the session Chromium attached for it (sandboxed iframes may get a process of their own)."""

    def __init__(self, tools: DevTools, session: str | None, context: int | None) -> None:
        self.tools, self.session, self.context = tools, session, context

    def js(self, expression: str) -> Any:
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if self.context is not None:
            params["contextId"] = self.context
        result = _session_call(self.tools, self.session, "Runtime.evaluate", **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in test expression: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        while not self.js(guarded):
            if time.monotonic() > end:
                raise TimeoutError(f"timed out waiting for {expression} in a frame")
            time.sleep(0.05)


def _frames_by_title(tools: DevTools) -> dict[str, _Frame]:
    """Every child frame of the page that runs a script, keyed by its document's title."""
    candidates = []
    for child in tools.call("Page.getFrameTree")["frameTree"].get("childFrames", []):
        try:
            world = tools.call("Page.createIsolatedWorld", frameId=child["frame"]["id"], worldName="attnlab-test")
        except RuntimeError:  # not in this process: reached through its own session below
            continue
        candidates.append(_Frame(tools, None, world["executionContextId"]))
    for event in list(tools.events):
        if event.get("method") == "Target.attachedToTarget" and event["params"]["targetInfo"]["type"] == "iframe":
            candidates.append(_Frame(tools, event["params"]["sessionId"], None))
    frames = {}
    for frame in candidates:
        try:
            if frame.session is not None:  # report the frame's errors too (Runtime replays earlier ones)
                for domain in ("Runtime", "Log"):
                    _session_call(tools, frame.session, f"{domain}.enable")
            frame.wait_for("document.readyState === 'complete'")
            frames[frame.js("document.title")] = frame
        except (RuntimeError, TimeoutError):  # a context that went away: the frame is found the other way
            continue
    return frames


def _click_in_frame(tools: DevTools, index: int, frame: _Frame, selector: str) -> None:
    """A real click (moved, pressed, released) on ``selector`` inside the ``index``-th iframe of the page."""
    tools.js(f"document.querySelectorAll('iframe')[{index}].scrollIntoView({{block: 'start'}})")
    origin = tools.js(f"(() => {{ const f = document.querySelectorAll('iframe')[{index}],"
                      " r = f.getBoundingClientRect(); return [r.x + f.clientLeft, r.y + f.clientTop]; })()")
    inner = frame.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                     " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    x, y = origin[0] + inner[0], origin[1] + inner[1]
    tools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    for kind in ("mousePressed", "mouseReleased"):
        tools.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def test_two_inline_bundles_in_one_page_work_independently(devtools: DevTools, tmp_path: Path) -> None:
    from attnlab.viz.notebook import inline

    maps = _maps()
    zh = ["甲", "乙", "丙", "丁"]
    known = torch.full((2, 4, 4), 0.1)  # (H, Tq, Tk): query i attends most to key (i + 1) % 4 in both heads
    for i in range(4):
        known[:, i, (i + 1) % 4] = 0.7
    first = inline(maps, query_tokens=TGT, key_tokens=SRC, title="first", height=700)
    second = inline(known, query_tokens=zh, title="second", lang="zh", height=700)
    # A notebook's output area: the two bundles' text/html one after the other in one document.
    bundles = [view._repr_mimebundle_()["text/html"] for view in (first, second)]
    page = tmp_path / "notebook.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>notebook</title></head><body>"
                    + "".join(f"<div class='output'>{b}</div>" for b in bundles) + "</body></html>", encoding="utf-8")
    _session_call(devtools, None, "Target.setAutoAttach", autoAttach=True, waitForDebuggerOnStart=False,
                  flatten=True)
    try:
        devtools.call("Page.addScriptToEvaluateOnNewDocument",
                      source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
        devtools.call("Page.navigate", url=page.as_uri())
        devtools.wait_for("document.readyState === 'complete' && document.querySelectorAll('iframe').length === 2")
        end = time.monotonic() + 20
        frames = _frames_by_title(devtools)
        while set(frames) != {"first", "second"} and time.monotonic() < end:  # attached sessions may come late
            time.sleep(0.2)
            frames = _frames_by_title(devtools)
        assert set(frames) == {"first", "second"}
        for frame in frames.values():
            frame.wait_for("document.documentElement.dataset.ready === '1'")
        one, two = frames["first"], frames["second"]

        # The notebook side: two wrappers with their own ids, the fallback pictures hidden where styles apply.
        ids = devtools.js("Array.from(document.querySelectorAll('.attnlab-inline')).map(e => e.id)")
        assert len(ids) == 2 and len(set(ids)) == 2
        assert devtools.js("Array.from(document.querySelectorAll('.attnlab-fallback'))"
                           ".map(e => getComputedStyle(e).display)") == ["none", "none"]
        assert devtools.js("document.querySelectorAll('body > .output > .attnlab-inline > iframe').length") == 2
        assert one.js("document.documentElement.lang") == "en" and two.js("document.documentElement.lang") == "zh-CN"
        assert one.js("Array.from(document.querySelectorAll('#queries .tok')).map(e => e.textContent)") == SRC
        assert two.js("document.getElementById('status').textContent") == "注意力：悬停或点击一个词元。"

        # Pin a token in the first viewer: only the first reacts.
        _click_in_frame(devtools, 0, one, "#queries .tok[data-index='1']")
        one.wait_for("document.querySelector('#queries .tok.selected') !== null")
        expected = maps.encoder_self[0, 0].mean(0)[1].tolist()  # layer 0, all heads (their mean), query 1
        weights = one.js("Array.from(document.querySelectorAll('#keys .tok')).map(e => Number(e.dataset.weight))")
        assert weights == pytest.approx(expected, abs=2e-4)
        assert two.js("document.querySelectorAll('.tok.selected, .tok[data-weight]').length") == 0

        # Then one in the second: it reacts in Chinese, and the first keeps its own pinned selection.
        _click_in_frame(devtools, 1, two, "#queries .tok[data-index='2']")
        two.wait_for("document.querySelector('#queries .tok.selected') !== null")
        assert two.js("document.querySelector('#queries .tok.selected').dataset.index") == "2"
        assert two.js("document.querySelector('#keys .tok.top').dataset.index") == "3"
        status = two.js("document.getElementById('status').textContent")
        assert status.startswith("查询\u201c丙\u201d最关注\u201c丁\u201d")
        assert one.js("document.querySelector('#queries .tok.selected').dataset.index") == "1"
        status = one.js("document.getElementById('status').textContent")
        assert status.startswith(f"query \u201c{SRC[1]}\u201d attends most to") and status.endswith(" \u00b7 pinned")
        assert one.js("document.querySelectorAll('img, iframe, [onerror]').length") == 0  # tokens stayed text

        assert devtools.js("window.__alerts") == []
        assert devtools.errors() == []
        assert [u for u in devtools.requests() if not u.startswith(("file:", "data:", "about:"))] == []
    finally:
        _session_call(devtools, None, "Target.setAutoAttach", autoAttach=False, waitForDebuggerOnStart=False)
