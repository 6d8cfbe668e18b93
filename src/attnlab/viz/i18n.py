"""The interface strings of attnlab's pages, in English and simplified Chinese: one table per language.

Each page (``"viewer"``, ``"highlight"``, ``"image"``) has its own part of the table. A page gets its part in
two ways, both from here: fixed labels are filled into its HTML template (``{{camelCase}}`` placeholders,
HTML-escaped), and the whole part travels in the page's JSON data as ``ui``, where the script formats strings
with positional fields (``{0}``, ``{1}``: word order differs between languages) and puts them on the page with
``textContent`` only. Tokens, labels and titles are data and are never translated.

Chinese uses the terms of the Chinese edition of *Dive into Deep Learning* (d2l.ai/zh): 注意力, 查询, 键, 值,
词元 (token), 层, 头, 编码器/解码器, 自注意力, 交叉注意力.

This module imports nothing heavy: the CLI reads :data:`LANGS` to build ``--lang``.
"""

from __future__ import annotations

import re
from typing import Literal

Page = Literal["viewer", "highlight", "image"]

LANGS: dict[str, str] = {"en": "en", "zh": "zh-CN"}
"""The languages a page can be written in, each with the value of its ``<html lang>`` attribute."""

KIND_TITLES: dict[str, dict[str, str]] = {
    "en": {"encoder": "encoder self-attention", "decoder": "decoder self-attention", "cross": "cross-attention",
           "self": "self-attention", "attention": "attention"},
    "zh": {"encoder": "编码器自注意力", "decoder": "解码器自注意力", "cross": "交叉注意力", "self": "自注意力",
           "attention": "注意力"},
}
"""The name of each kind of attention (:attr:`attnlab.viz.views.AttentionView.kind`)."""

# Default layer and head names (attnlab.viz.views) and how each language writes them.
_NAMES = {
    "en": {"layer": "layer {0}", "head": "head {0}", "mean": "mean of heads"},
    "zh": {"layer": "第 {0} 层", "head": "头 {0}", "mean": "各头平均"},
}
_DEFAULT_NAME = re.compile(r"(layer|head) (\d+)")

_STRINGS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "viewer": {
            "title": "attention",
            "attention": "attention",
            "layer": "layer",
            "head": "head",
            "help": "Hover a token to see what it attends to (top row) or what attends to it (bottom row); "
                    "click to pin, click again or press Escape to release.",
            "tokensAria": "tokens",
            "queries": "queries",
            "keys": "keys",
            "queriesTarget": "queries (target)",
            "keysSource": "keys (source)",
            "matrixAria": "attention matrix",
            "allHeads": "all heads (overlay)",
            "queryN": "query {0}",
            "keyN": "key {0}",
            "meanHeads": "mean over heads",
            "matrixTitle": "matrix \u00b7 {0} \u00b7 {1}",
            "idle": "{0}: hover or click a token.",
            "queryMost": "query \u201c{0}\u201d attends most to \u201c{1}\u201d ({2})",
            "keyMost": "key \u201c{0}\u201d is attended most by \u201c{1}\u201d ({2})",
            "pinned": " \u00b7 pinned",
            "cell": "\u201c{0}\u201d \u2192 \u201c{1}\u201d: {2}",
        },
        "highlight": {
            "title": "attention highlights",
            "help": "Click an example or use the arrow keys to switch; hover a token for its exact weight.",
            "examplesAria": "examples",
            "predicted": "predicted",
            "trueLabel": "true",
            "weightZero": "weight 0",
            "scaleNote": "(colours scaled to this example's largest weight)",
            "topCaption": "top tokens by weight",
            "colToken": "token",
            "colPosition": "position",
            "colWeight": "weight",
            "textHeading": "text",
            "tokenTitle": "weight {0} \u00b7 {1}% of the largest \u00b7 position {2}",
            "exampleN": "example {0} of {1}",
        },
        "image": {
            "vitTitle": "ViT attention",
            "captionTitle": "caption attention",
            "overlay": "overlay",
            "imageAlt": "the input image",
            "scaleNote": "(colours scaled to the largest weight shown)",
            "layer": "layer",
            "head": "head",
            "vitHelp": "By default: where the class token looks. Hover a patch: what attends to it (its column, over "
                       "the patch queries); click to switch to where that patch looks (its row) and back.",
            "captionHelp": "Click a word, press \u2190 / \u2192 or play to step through the caption; the outline is "
                           "the word's box when known.",
            "predicted": "predicted",
            "classProbs": "class probabilities",
            "colClass": "class",
            "colP": "p",
            "captionHeading": "caption",
            "play": "play",
            "pause": "pause",
            "patchName": "patch {0} (row {1}, column {2})",
            "clsIdle": "class token: where it looks (row 0); hover a patch to see what attends to it",
            "patchTo": "{0}: what attends to it (its column, over the patch queries); click: where it looks",
            "patchFrom": "{0}: where it looks (its row); click: what attends to it",
            "rolloutAll": "rollout over all layers",
            "layerHead": "layer {0}, {1}",
            "meanHeads": "mean over heads",
            "layerN": "layer {0}",
            "headN": "head {0}",
            "optMean": "mean",
            "optRollout": "rollout",
            "statusVit": "{0} \u00b7 {1} \u00b7 largest: patch {2}",
            "more": "\u2026 {0} more",
            "wordStep": "word {0} of {1}: \u201c{2}\u201d",
            "boxNote": " \u00b7 box (top, left, bottom, right) = ({0})",
            "patchWeight": " \u00b7 {0}: weight {1}",
        },
    },
    "zh": {
        "viewer": {
            "title": "注意力",
            "attention": "注意力",
            "layer": "层",
            "head": "头",
            "help": "悬停在上面一行（查询）的词元上，查看它关注哪些词元；"
                    "悬停在下面一行（键）的词元上，查看哪些词元关注它。点击可固定，再次点击或按 Esc 键取消固定。",
            "tokensAria": "词元",
            "queries": "查询",
            "keys": "键",
            "queriesTarget": "查询（目标端）",
            "keysSource": "键（源端）",
            "matrixAria": "注意力矩阵",
            "allHeads": "所有头（叠加）",
            "queryN": "查询 {0}",
            "keyN": "键 {0}",
            "meanHeads": "各头平均",
            "matrixTitle": "矩阵 \u00b7 {0} \u00b7 {1}",
            "idle": "{0}：悬停或点击一个词元。",
            "queryMost": "查询\u201c{0}\u201d最关注\u201c{1}\u201d（{2}）",
            "keyMost": "键\u201c{0}\u201d最受\u201c{1}\u201d关注（{2}）",
            "pinned": " \u00b7 已固定",
            "cell": "\u201c{0}\u201d \u2192 \u201c{1}\u201d：{2}",
        },
        "highlight": {
            "title": "注意力高亮",
            "help": "点击示例或用方向键切换；悬停在词元上可查看它的确切权重。",
            "examplesAria": "示例",
            "predicted": "预测",
            "trueLabel": "真实标签",
            "weightZero": "权重 0",
            "scaleNote": "（颜色按本示例的最大权重缩放）",
            "topCaption": "权重最高的词元",
            "colToken": "词元",
            "colPosition": "位置",
            "colWeight": "权重",
            "textHeading": "原文",
            "tokenTitle": "权重 {0} \u00b7 为最大权重的 {1}% \u00b7 位置 {2}",
            "exampleN": "第 {0} 个示例（共 {1} 个）",
        },
        "image": {
            "vitTitle": "ViT 注意力",
            "captionTitle": "图像描述注意力",
            "overlay": "叠加",
            "imageAlt": "输入图像",
            "scaleNote": "（颜色按所示的最大权重缩放）",
            "layer": "层",
            "head": "头",
            "vitHelp": "默认显示类别词元（class token）关注哪里。悬停在图像块上：查看哪些图像块关注它（它所在的列）；"
                       "点击可切换为查看它关注哪里（它所在的行），再次点击切换回来。",
            "captionHelp": "点击一个词、按 \u2190 / \u2192 键或点击\u201c播放\u201d，逐词浏览图像描述；"
                           "方框是该词对应的区域（已知时）。",
            "predicted": "预测",
            "classProbs": "各类别的概率",
            "colClass": "类别",
            "colP": "p",
            "captionHeading": "图像描述",
            "play": "播放",
            "pause": "暂停",
            "patchName": "图像块 {0}（第 {1} 行，第 {2} 列）",
            "clsIdle": "类别词元：它关注哪里（第 0 行）；悬停在图像块上，查看哪些图像块关注它",
            "patchTo": "{0}：哪些图像块关注它（它所在的列，各图像块作为查询）；点击：查看它关注哪里",
            "patchFrom": "{0}：它关注哪里（它所在的行）；点击：查看哪些图像块关注它",
            "rolloutAll": "所有层的注意力展开（rollout）",
            "layerHead": "第 {0} 层，{1}",
            "meanHeads": "各头平均",
            "layerN": "第 {0} 层",
            "headN": "头 {0}",
            "optMean": "平均",
            "optRollout": "展开（rollout）",
            "statusVit": "{0} \u00b7 {1} \u00b7 最大：图像块 {2}",
            "more": "\u2026 另有 {0} 个",
            "wordStep": "第 {0} 个词（共 {1} 个）：\u201c{2}\u201d",
            "boxNote": " \u00b7 方框（上，左，下，右）= ({0})",
            "patchWeight": " \u00b7 {0}：权重 {1}",
        },
    },
}


def check_lang(lang: object) -> str:
    """``lang`` itself if pages can be written in it, else a one-line :class:`ConfigError` naming the choices."""
    from attnlab.core.errors import ConfigError

    if not isinstance(lang, str) or lang not in LANGS:
        raise ConfigError(f"unknown lang {lang!r:.40}: use one of {', '.join(map(repr, LANGS))}")
    return lang


def html_lang(lang: str) -> str:
    """The value of the page's ``<html lang>`` attribute (BCP 47): ``"en"`` or ``"zh-CN"``."""
    return LANGS[check_lang(lang)]


def strings(page: Page, lang: str) -> dict[str, str]:
    """A copy of one page's interface strings in ``lang``."""
    return dict(_STRINGS[check_lang(lang)][page])


def name(text: str, lang: str) -> str:
    """A default layer or head name (``"layer 2"``, ``"head 0"``, ``"mean of heads"``) in ``lang``; any other
    name (a module path such as ``"decoder.layers.0.self_attn"``) is returned as it is."""
    names = _NAMES[check_lang(lang)]
    found = _DEFAULT_NAME.fullmatch(text)
    if found:
        return names[found.group(1)].format(found.group(2))
    return names["mean"] if text == _NAMES["en"]["mean"] else text
