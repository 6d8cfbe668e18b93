"""The viewer page as text: escaping, no network, CSP, data layout (the browser tests drive it for real)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from attnlab.core.errors import DataError
from attnlab.models.base import AttentionMaps
from attnlab.viz.html import decode_weights, html_document, json_for_script, write_html
from attnlab.viz.views import Example

HOSTILE = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"dq\" 'sq' `bt`", "a & b",
           "我爱你", "😀", "\u2028line", "{{JS}}"]


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def _scripts(page: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", page, re.S)


def test_json_for_script_escapes_markup_characters() -> None:
    text = json_for_script({"t": "</script><b>&\u2028"})
    assert not set("<>&\u2028") & set(text)
    assert json.loads(text) == {"t": "</script><b>&\u2028"}


def test_hostile_tokens_stay_data() -> None:
    n = len(HOSTILE)
    page = html_document(torch.softmax(torch.randn(2, 2, n, n), -1), query_tokens=HOSTILE, key_tokens=HOSTILE,
                         title="<i>title</i> & co")
    assert "<img" not in page and "<i>" not in page  # markup only in escaped form
    assert page.count("<script") == 2 and page.count("</script>") == 2  # data block and viewer, nothing injected
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in page
    assert "<title>&lt;i&gt;title&lt;/i&gt; &amp; co</title>" in page
    data = _data(page)
    assert data["views"][0]["queryTokens"] == HOSTILE and data["title"] == "<i>title</i> & co"
    assert len(_scripts(page)) == 1  # the placeholder-looking token was not expanded into a second script


def test_page_is_offline_and_uses_text_only_rendering() -> None:
    page = html_document(torch.eye(3), query_tokens=list("abc"))
    assert not re.search(r"https?://|//cdn|\bsrc=|@import|url\(", page)
    js = _scripts(page)[0]
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                   "setAttribute(\"style\""):
        assert banned not in js
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp


def test_views_from_attention_maps(tmp_path: Path) -> None:
    maps = AttentionMaps(encoder_self=torch.full((2, 1, 3, 4, 4), 0.25),
                         decoder_self=torch.tril(torch.ones(2, 1, 3, 2, 2)) / torch.tensor([[1.0], [2.0]]),
                         cross=torch.full((2, 1, 3, 2, 4), 1 / 3))
    path = write_html(maps, tmp_path / "sub" / "view.html", query_tokens=["x", "y"], key_tokens=list("abcd"))
    data = _data(path.read_text(encoding="utf-8"))
    views = data["views"]
    assert [v["kind"] for v in views] == ["encoder", "decoder", "cross"]
    assert views[0]["queryTokens"] == list("abcd") and views[1]["keyTokens"] == ["x", "y"]
    assert views[2]["queryTokens"] == ["x", "y"] and views[2]["keyTokens"] == list("abcd")
    assert views[2]["headNames"] == ["head 0", "head 1", "head 2"] and views[2]["layerNames"] == ["layer 0", "layer 1"]
    assert data["examples"] == [{"name": None, "prediction": None}] and {v["example"] for v in views} == {0}
    cross = views[2]["weights"]
    assert cross["dtype"] == "float16" and cross["shape"] == [2, 3, 2, 4]  # (L, H, Tq, Tk)
    assert decode_weights(cross)[1, 2, 0].tolist() == pytest.approx([1 / 3] * 4, abs=2.0 ** -12)
    assert decode_weights(views[1]["weights"])[0, 0].tolist() == [[1.0, 0.0], [0.5, 0.5]]  # exact in float16


def test_nan_weights_and_token_errors() -> None:
    w = torch.tensor([[float("nan"), 1.0], [0.5, 0.5]])
    assert decode_weights(_data(html_document(w))["views"][0]["weights"]).tolist() == [[[[0.0, 1.0], [0.5, 0.5]]]]
    with pytest.raises(DataError, match="3 query and 3 key tokens"):
        html_document(w, query_tokens=list("abc"))


def test_many_examples_stay_data_and_one_script() -> None:
    examples = [Example(torch.eye(3), query_tokens=HOSTILE[:3], name=HOSTILE[0], prediction=HOSTILE[1]),
                Example(torch.eye(2), query_tokens=HOSTILE[3:5], name="{{JS}}", prediction=None)]
    page = html_document(examples, title=HOSTILE[1])
    assert "<img" not in page and page.count("<script") == 2 and len(_scripts(page)) == 1
    data = _data(page)
    assert data["examples"] == [{"name": HOSTILE[0], "prediction": HOSTILE[1]}, {"name": "{{JS}}", "prediction": None}]
    assert [v["queryTokens"] for v in data["views"]] == [HOSTILE[:3], HOSTILE[3:5]]
