"""The tutorial notebooks: committed without outputs, listed in their index, executed headless in fast mode.

Each notebook runs top to bottom with nbclient in a kernel of this interpreter (a kernel spec written for the
test, so another ``python3`` kernel installed elsewhere cannot be picked up), with ``ATTNLAB_NOTEBOOK_FAST=1``.
Any cell error fails its test. Notebooks 5 and 6 must display attnlab's inline views: a sandboxed ``<iframe
srcdoc>`` page with a PNG fallback and no URL anywhere. The browser test exports an executed notebook to one HTML
page (nbconvert's "basic" template, which links nothing, in a minimal page) and hovers two viewers on it in
headless Chromium; like ``tests/viz/test_browser.py`` it skips without Chromium unless ATTNLAB_REQUIRE_BROWSER
is set.

Run with ``make test-notebooks`` (``pytest -m notebooks``); ``make test`` leaves these out.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser_helpers import DevTools, StartTags, launch_devtools  # noqa: E402

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ORDER = ["01-qkv-masked-softmax.ipynb", "02-scoring-functions.ipynb", "03-multi-head-attention.ipynb",
         "04-seq2seq-bahdanau.ipynb", "05-transformer-real-corpus.ipynb", "06-sentiment-and-vit.ipynb"]
# The inline views each notebook must display, in order: a word of each one's text/plain.
VIEWS = {"05-transformer-real-corpus.ipynb": ["viewer", "viewer"],
         "06-sentiment-and-vit.ipynb": ["highlights", "ViT"]}
# Corpora a notebook reads (folders of the data directory); without them it is skipped, as the corpus tests are.
CORPORA = {"05-transformer-real-corpus.ipynb": ["tatoeba"],
           "06-sentiment-and-vit.ipynb": ["rotten-tomatoes", "fashion-mnist"]}
TIMEOUT = 360  # seconds for one notebook in fast mode (the six take about 80 s on 2 idle cores)
KERNEL = "attnlab-notebook-test"

EXTERNAL = re.compile(r"https?://|//cdn|require(?:\.min)?\.js|requirejs|<script[^>]*\bsrc\s*=", re.I)
PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------- the files


def test_the_six_notebooks_are_there_in_order() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ORDER


@pytest.mark.parametrize("name", ORDER)
def test_committed_without_outputs(name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:
        assert cell.outputs == [], f"{name}: cell {cell.id} has outputs; clear them before committing"
        assert cell.execution_count is None, f"{name}: cell {cell.id} has an execution count"
    assert "ATTNLAB_NOTEBOOK_FAST" in "".join(c.source for c in code), f"{name} does not read the fast-mode switch"


def test_readme_lists_every_notebook_in_order() -> None:
    text = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    positions = [text.find(f"[`{name}`]({name})") for name in ORDER]
    assert -1 not in positions, f"notebooks/README.md lacks {ORDER[positions.index(-1)]}"
    assert positions == sorted(positions)
    for needed in ("jupyter lab notebooks/", ".[notebooks", "ATTNLAB_NOTEBOOK_FAST=1", "make test-notebooks"):
        assert needed in text


# ------------------------------------------------------------------------------------------- execution


@contextmanager
def _environment(tmp: Path) -> Iterator[None]:
    """Fast mode, a kernel spec that runs this interpreter, and ``tmp`` as the temporary folder (where the notebooks
    write their training runs), for the kernels started inside the block."""
    spec = tmp / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "attnlab notebook test", "language": "python"}), encoding="utf-8")
    saved = {k: os.environ.get(k) for k in ("ATTNLAB_NOTEBOOK_FAST", "JUPYTER_PATH", "TMPDIR")}
    os.environ["ATTNLAB_NOTEBOOK_FAST"] = "1"
    os.environ["TMPDIR"] = str(tmp)
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(tmp), saved["JUPYTER_PATH"]) if p)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _folder_listing() -> list[str]:
    return sorted(str(p.relative_to(NOTEBOOKS)) for p in NOTEBOOKS.rglob("*")
                  if ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts)


_EXECUTED: dict[str, Any] = {}  # name -> the executed notebook, or the error it failed with


def _executed(name: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The notebook executed in fast mode (once per test session); fails on the first cell error."""
    if isinstance(_EXECUTED.get(name), BaseException):
        pytest.fail(f"{name} failed to execute in an earlier test: {_EXECUTED[name]}")
    if name in _EXECUTED:
        return _EXECUTED[name]
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from attnlab.data.download import default_data_dir

    missing = [c for c in CORPORA.get(name, []) if not (default_data_dir() / c).is_dir()]
    if missing:
        pytest.skip(f"{name} reads {', '.join(missing)} from {default_data_dir()}, which is not there")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))  # which interpreter ran it
    before = _folder_listing()
    start = time.monotonic()
    with _environment(tmp_path_factory.mktemp("jupyter")):
        client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=TIMEOUT,
                                         resources={"metadata": {"path": str(NOTEBOOKS)}})
        try:
            client.execute()  # raises CellExecutionError on the first failing cell (allow_errors is off)
        except Exception as exc:
            _EXECUTED[name] = exc  # the tests that read this notebook's outputs fail at once, without a rerun
            raise
    seconds = time.monotonic() - start
    probe = nb.cells.pop(0)
    assert "".join(o.get("text", "") for o in probe.outputs).strip() == sys.prefix, "the kernel is not this venv's"
    assert _folder_listing() == before, f"executing {name} wrote into notebooks/"
    print(f"{name}: executed in {seconds:.1f} s (fast mode)")
    _EXECUTED[name] = nb
    return nb


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_in_fast_mode(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    nb = _executed(name, tmp_path_factory)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} draws no figure"
    assert sum(o.output_type == "stream" for o in outputs) >= 3, f"{name} prints too little to read along"


# ------------------------------------------------------------------------------------------ inline views




def _inline_views(nb: Any) -> list[dict[str, Any]]:
    return [o.data for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "<iframe" in o.get("data", {}).get("text/html", "")]


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("name", list(VIEWS))
def test_inline_views_are_self_contained(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    views = _inline_views(_executed(name, tmp_path_factory))
    assert len(views) == len(VIEWS[name]), f"{name}: expected {len(VIEWS[name])} inline views, got {len(views)}"
    for data, word in zip(views, VIEWS[name], strict=True):
        assert word in data["text/plain"]
        fragment = data["text/html"]
        tags = StartTags(fragment).tags
        (frame,) = [attrs for tag, attrs in tags if tag == "iframe"]
        assert frame["sandbox"] == "allow-scripts"  # scripts run, but not with the notebook's origin
        page = frame["srcdoc"] or ""
        assert page.lstrip().lower().startswith("<!doctype html") and "<script" in page
        for text in (fragment, page):
            assert not EXTERNAL.search(text), f"{name}: an external URL or loader: {EXTERNAL.search(text)[0]!r}"
        for text in (fragment, page):
            assert all(str(attrs["src"]).startswith("data:") for _, attrs in StartTags(text).tags if "src" in attrs)
        assert base64.b64decode(data["image/png"])[:8] == PNG  # the fallback for front ends without HTML
        assert any(tag == "img" and str(attrs.get("src")).startswith("data:image/png;base64,")
                   for tag, attrs in tags), "no picture inside the HTML for sanitizing front ends"


# ------------------------------------------------------------------------------------------- the browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    # Sandboxed frames stay in the page's process, so the test reaches them through the page's own connection.
    isolation = ["--disable-site-isolation-trials", "--disable-features=IsolateSandboxedIframes,site-per-process"]
    with launch_devtools(tmp_path / "chromium-profile", tmp_path / "chromium.log", isolation) as tools:
        yield tools


def _export(nb: Any) -> str:
    """The executed notebook as one HTML page that links nothing: nbconvert's "basic" body in a minimal page."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>attnlab notebook</title></head>'
            f"<body>\n{body}\n</body></html>\n")


# What a viewer frame shows in its head view (the default): its tokens, the one selected (hovered or pinned), each
# key's weight from it, and the status line.
FRAME_STATE = ("({tokens: Array.from(document.querySelectorAll('#hv-q .hv-tok')).map(e => e.textContent),"
               " keys: Array.from(document.querySelectorAll('#hv-k .hv-tok')).map(e => e.textContent),"
               " selected: Array.from(document.querySelectorAll('#hv-q .hv-tok.selected')).map(e => e.dataset.index),"
               " keyWeights: Array.from(document.querySelectorAll('#hv-k .hv-tok'))"
               ".map(e => e.dataset.weight === undefined ? null : Number(e.dataset.weight)),"
               " status: document.getElementById('status').textContent})")


@pytest.mark.browser
@pytest.mark.timeout(TIMEOUT + 120)
def test_two_viewers_of_an_exported_notebook_respond_independently(
        browser: DevTools, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("nbconvert")
    page = _export(_executed("05-transformer-real-corpus.ipynb", tmp_path_factory))
    assert not EXTERNAL.search(page), f"the export links {EXTERNAL.search(page)[0]!r}"
    path = tmp_path / "notebook.html"
    path.write_text(page, encoding="utf-8")
    browser.call("Page.addScriptToEvaluateOnNewDocument",
                 source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
    browser.call("Page.navigate", url=path.as_uri())
    browser.wait_for("document.readyState === 'complete' && document.querySelectorAll('iframe').length === 2")

    # One isolated world per viewer frame: the test reads each frame's DOM without touching its scripts.
    frames = browser.call("Page.getFrameTree")["frameTree"].get("childFrames", [])
    assert len(frames) == 2, f"expected the two inline viewers as frames, got {len(frames)}"
    worlds = [browser.call("Page.createIsolatedWorld", frameId=f["frame"]["id"], worldName="attnlab-test")
              ["executionContextId"] for f in frames]
    for world in worlds:
        browser.wait_for("document.documentElement.dataset.ready === '1'", world)
    states = [browser.js(FRAME_STATE, w) for w in worlds]
    assert all(s["tokens"] and not s["selected"] and set(s["keyWeights"]) == {None} for s in states)
    assert states[0]["tokens"] != states[1]["tokens"]  # two sentences, two pages

    def hover(frame: int, index: int) -> None:
        """Move the real mouse over query token ``index`` of viewer ``frame``."""
        browser.js(f"document.querySelectorAll('iframe')[{frame}].scrollIntoView({{block: 'start'}})")
        outer = browser.js(f"(() => {{ const f = document.querySelectorAll('iframe')[{frame}];"
                           " const r = f.getBoundingClientRect(); return [r.x + f.clientLeft, r.y + f.clientTop]; })()")
        inner = browser.js(f"(() => {{ const r = document.querySelector(\"#hv-q .hv-tok[data-index='{index}']\")"
                           ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()",
                           worlds[frame])
        browser.move_to(outer[0] + inner[0], outer[1] + inner[1])

    # Hover token 1 in the first viewer: it selects, the second does not move.
    hover(0, 1)
    browser.wait_for("document.querySelector('#hv-q .hv-tok.selected') !== null", worlds[0])
    first, second = (browser.js(FRAME_STATE, w) for w in worlds)
    assert first["selected"] == ["1"] and second["selected"] == []
    assert first["status"] != states[0]["status"] and second["status"] == states[1]["status"]
    assert set(second["keyWeights"]) == {None}
    assert sum(first["keyWeights"]) == pytest.approx(1.0, abs=1e-3)  # that token's row of weights

    # Then token 0 in the second viewer: it follows its own mouse, over its own tokens.
    hover(1, 0)
    browser.wait_for("document.querySelector('#hv-q .hv-tok.selected') !== null", worlds[1])
    first_after, second = (browser.js(FRAME_STATE, w) for w in worlds)
    assert second["selected"] == ["0"] and second["status"] != states[1]["status"]
    assert len(second["keyWeights"]) == len(states[1]["keys"])
    assert sum(second["keyWeights"]) == pytest.approx(1.0, abs=1e-3)
    assert first_after["selected"] in ([], ["1"])  # left alone, or cleared when the mouse left it

    assert browser.js("window.__alerts") == []
    assert browser.errors() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:", "about:"))] == []
