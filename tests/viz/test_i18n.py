"""The pages' interface in English and Chinese: one table per language, complete, used, and the pages still safe."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import torch

from attnlab.cli.viz import Drawn, _draw, register
from attnlab.core.errors import ConfigError
from attnlab.models.base import AttentionMaps
from attnlab.viz import i18n
from attnlab.viz.highlight import _PAGE as HIGHLIGHT_TEMPLATE
from attnlab.viz.highlight import Highlight, highlight_html, write_highlight_html
from attnlab.viz.html import html_document, write_html
from attnlab.viz.image import _TEMPLATES as IMAGE_TEMPLATES
from attnlab.viz.image import caption_attention_html, vit_attention_html
from attnlab.viz.views import TITLES

PAGES = ("viewer", "highlight", "image")
ASSETS = {"viewer": "viewer.js", "highlight": "highlight.js", "image": "image.js"}
IMG_TAG = "<img src=x onerror=alert(1)>"


def _asset(name: str) -> str:
    return resources.files("attnlab.viz").joinpath("assets", name).read_text(encoding="utf-8")


def _templates(page: str) -> list[str]:
    return {"viewer": [_asset("viewer.html")], "highlight": [HIGHLIGHT_TEMPLATE],
            "image": list(IMAGE_TEMPLATES.values())}[page]


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attnlab-[a-z-]*data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def _markup(page: str) -> str:
    """The page without its two script elements: what a reader sees before any script runs."""
    return re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)


def _assert_csp_matches(page: str) -> None:
    js = re.findall(r"<script>(.*?)</script>", page, re.S)
    css = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(js) == 1 and len(css) == 1
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    for source, kind in ((js[0], "script"), (css[0], "style")):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp


def _image() -> torch.Tensor:
    return torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))  # 3 x 4 patches of 8 pixels


def _vit_attention() -> torch.Tensor:
    return torch.softmax(torch.randn(1, 2, 13, 13, generator=torch.Generator().manual_seed(1)), -1)


# ------------------------------------------------------------------------------------------- the tables


@pytest.mark.parametrize("page", PAGES)
def test_both_languages_have_the_same_strings_and_fields(page: str) -> None:
    en, zh = i18n.strings(page, "en"), i18n.strings(page, "zh")
    assert set(en) == set(zh)
    for key in en:
        assert sorted(re.findall(r"\{\d+\}", en[key])) == sorted(re.findall(r"\{\d+\}", zh[key])), key
        assert zh[key].strip(), key
    translated = [key for key in en if en[key] != zh[key]]
    assert len(translated) >= len(en) - 2  # only symbols ("p") may stay the same


@pytest.mark.parametrize("page", PAGES)
def test_every_string_the_page_uses_is_in_the_table_and_every_entry_is_used(page: str) -> None:
    table = i18n.strings(page, "en")
    first_args = re.findall(r"\btr\(([^,)]*)", _asset(ASSETS[page]))  # tr("key", ...) or tr(c ? "a" : "b", ...)
    in_script = {key for arg in first_args for key in re.findall(r'"([A-Za-z]+)"', arg.split("?")[-1])}
    in_templates = {key for template in _templates(page)
                    for key in re.findall(r"\{\{([a-z][A-Za-z]*)\}\}", template)}
    in_python = {"viewer": {"title"}, "highlight": {"title"}, "image": {"vitTitle", "captionTitle"}}[page]
    assert in_script and in_templates
    assert in_script | in_templates <= set(table)
    assert set(table) == in_script | in_templates | in_python


def test_kind_titles_and_default_names() -> None:
    assert i18n.KIND_TITLES["en"] == TITLES and set(i18n.KIND_TITLES["zh"]) == set(TITLES)
    assert i18n.name("layer 3", "zh") == "第 3 层" and i18n.name("head 0", "zh") == "头 0"
    assert i18n.name("mean of heads", "zh") == "各头平均"
    assert i18n.name("decoder.layers.0.self_attn", "zh") == "decoder.layers.0.self_attn"  # a module path stays
    assert i18n.name("layer 3", "en") == "layer 3" and i18n.name("layer 3x", "zh") == "layer 3x"
    assert i18n.html_lang("zh") == "zh-CN" and i18n.html_lang("en") == "en"


# ------------------------------------------------------------------------------------------- the pages


def test_viewer_in_chinese() -> None:
    maps = AttentionMaps(encoder_self=torch.full((1, 1, 2, 3, 3), 1 / 3), cross=torch.full((1, 1, 2, 2, 3), 1 / 3))
    page = html_document(maps, query_tokens=["我", IMG_TAG], key_tokens=list("abc"), lang="zh")
    assert page.startswith('<!DOCTYPE html>\n<html lang="zh-CN">')
    markup = _markup(page)
    for text in ("<label>注意力 <select", "<label>层 <select", "<label>头 <select", '<h2 id="q-label">查询</h2>',
                 '<h2 id="k-label">键</h2>', 'aria-label="注意力矩阵"', "悬停在上面一行（查询）的词元上",
                 "<title>注意力</title>"):
        assert text in markup
    for english in ("Hover a token", ">queries<", ">layer <", "attention matrix"):
        assert english not in markup
    data = _data(page)
    assert data["ui"] == i18n.strings("viewer", "zh") and data["title"] == "注意力"
    assert [v["title"] for v in data["views"]] == ["编码器自注意力", "交叉注意力"]
    assert data["views"][1]["layerNames"] == ["第 0 层"] and data["views"][1]["headNames"] == ["头 0", "头 1"]
    assert data["views"][1]["queryTokens"] == ["我", IMG_TAG]  # tokens are data, never translated
    assert IMG_TAG not in page and page.count("<script") == 2
    _assert_csp_matches(page)


def test_viewer_in_english_is_unchanged() -> None:
    page = html_document(torch.eye(3), query_tokens=list("abc"))
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    markup = _markup(page)
    for text in ('<label>attention <select id="view">', '<label>layer <select id="layer">',
                 '<label>head <select id="head">', '<h2 id="q-label">queries</h2>', '<h2 id="k-label">keys</h2>',
                 'aria-label="tokens"', 'aria-label="attention matrix"', "<title>attention</title>",
                 "Hover a token to see what it attends to (top row) or what attends to it (bottom row); click to "
                 "pin, click again or press Escape to release."):
        assert text in markup
    data = _data(page)
    assert data["title"] == "attention" and data["views"][0]["title"] == "attention"
    assert data["views"][0]["layerNames"] == ["layer 0"] and data["views"][0]["headNames"] == ["head 0"]
    ui = data["ui"]
    assert ui["queryMost"].format("a", "b", "0.500") == "query \u201ca\u201d attends most to \u201cb\u201d (0.500)"
    assert ui["idle"].format("attention") == "attention: hover or click a token."
    assert not re.search(r"[\u4e00-\u9fff]", page)  # no Chinese anywhere in an English page
    _assert_csp_matches(page)


def test_highlight_page_in_both_languages() -> None:
    items = [Highlight(["很", "好", IMG_TAG], [0.2, 0.7, 0.1], "正面", 0.8, true_label="正面", text="很好")]
    zh = highlight_html(items, lang="zh")
    assert '<html lang="zh-CN">' in zh and "<title>注意力高亮</title>" in zh
    for text in ("点击示例或用方向键切换", 'aria-label="示例"', "预测 <b id=\"pred-label\">", "&middot; 真实标签",
                 "<span>权重 0</span>", "（颜色按本示例的最大权重缩放）", "<caption>权重最高的词元</caption>",
                 "<th>词元</th><th>位置</th><th>权重</th>", "<h3>原文</h3>"):
        assert text in _markup(zh)
    assert _data(zh)["ui"] == i18n.strings("highlight", "zh")
    assert _data(zh)["examples"][0]["tokens"] == ["很", "好", IMG_TAG] and IMG_TAG not in zh
    _assert_csp_matches(zh)
    en = highlight_html(items)
    assert '<html lang="en">' in en and "<title>attention highlights</title>" in en
    for text in ("Click an example or use the arrow keys", "predicted <b", "&middot; true <b",
                 "<caption>top tokens by weight</caption>", "<th>token</th><th>position</th><th>weight</th>"):
        assert text in _markup(en)
    _assert_csp_matches(en)


def test_image_pages_in_both_languages() -> None:
    vit = vit_attention_html(_image(), _vit_attention(), patch_size=8, probabilities={"猫": 0.6, IMG_TAG: 0.4},
                             lang="zh")
    assert '<html lang="zh-CN">' in vit and "<title>ViT 注意力</title>" in vit
    for text in ("<label>层 <select", "<label>头 <select", "<label>叠加 <input", 'alt="输入图像"',
                 "默认显示类别词元", "<caption>各类别的概率</caption>", "<th>类别</th>"):
        assert text in _markup(vit)
    assert _data(vit)["ui"] == i18n.strings("image", "zh") and IMG_TAG not in vit
    _assert_csp_matches(vit)
    caption = caption_attention_html(_image(), ["一只", "狗"], torch.rand(2, 12), patch_size=8, lang="zh")
    assert '<html lang="zh-CN">' in caption and "<title>图像描述注意力</title>" in caption
    assert '<button id="play" type="button">播放</button>' in caption and "<h2>图像描述</h2>" in caption
    _assert_csp_matches(caption)
    en = caption_attention_html(_image(), ["a", "dog"], torch.rand(2, 12), patch_size=8)
    assert '<html lang="en">' in en and '<button id="play" type="button">play</button>' in en
    assert "Click a word, press \u2190 / \u2192 or play to step through the caption" in en
    assert "{{" not in _markup(en) and "{{" not in _markup(vit)  # every placeholder filled


def test_unknown_language_is_a_value_error_naming_the_choices(tmp_path: Path) -> None:
    item = Highlight(["a"], [1.0], "x", 1.0)
    calls = [lambda lang: html_document(torch.eye(2), lang=lang),
             lambda lang: write_html(torch.eye(2), tmp_path / "a.html", lang=lang),
             lambda lang: highlight_html(item, lang=lang),
             lambda lang: write_highlight_html(item, tmp_path / "b.html", lang=lang),
             lambda lang: vit_attention_html(_image(), _vit_attention(), patch_size=8, lang=lang),
             lambda lang: caption_attention_html(_image(), ["a"], torch.rand(1, 12), patch_size=8, lang=lang)]
    for call in calls:
        for bad in ("fr", "zh-CN", "", None, 1):
            with pytest.raises(ValueError, match=r"unknown lang .*use one of 'en', 'zh'") as info:
                call(bad)
            assert isinstance(info.value, ConfigError)
    assert not list(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_lang_option_is_parsed_and_passed_through(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["viz", "--checkpoint", "run", "--text", "hi", "--html", "a.html"]
    assert parser.parse_args(base).lang == "en"
    assert parser.parse_args([*base, "--lang", "zh"]).lang == "zh"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--lang", "fr"])
    capsys.readouterr()

    args = argparse.Namespace(text="我 爱", kind=None, layer=None, head=None, png=None, svg=None, pdf=None,
                              html=str(tmp_path / "v.html"), lang="zh")
    maps = AttentionMaps(encoder_self=torch.full((1, 1, 1, 2, 2), 0.5))
    assert _draw(Drawn(maps), args, None) == 0
    assert '<html lang="zh-CN">' in (tmp_path / "v.html").read_text(encoding="utf-8")
    args.html = str(tmp_path / "h.html")
    assert _draw(Drawn([], highlight=Highlight(["我", "爱"], [0.3, 0.7], "正面", 0.9)), args, None) == 0
    page = (tmp_path / "h.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in page and "权重最高的词元" in page
