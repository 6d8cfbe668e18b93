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
            "scale": "colour scale",
            "scaleLinear": "linear",
            "scaleSqrt": "square root",
            "modeAria": "view",
            "modeHead": "head view",
            "modeModel": "model view",
            "modeMatrix": "matrix",
            "modeText": "text",
            "keysHelp": "Keys: \u2191 \u2193 \u2190 \u2192 move the selected token (a thumbnail in the model "
                        "view, a cell in the matrix) \u00b7 [ ] layer \u00b7 , . head \u00b7 Esc releases.",
            "help": "Hover a token to see what it attends to (top row) or what attends to it (bottom row); "
                    "click to pin, click again or press Escape to release.",
            "helpHead": "Each line joins a query (left) to a key (right); its opacity is the weight on the colour "
                        "scale, its colour the head. Hover or click a token to isolate its lines; the boxes show or "
                        "hide heads.",
            "helpModel": "Every layer (rows) and head (columns) on one colour scale, so heads can be compared; click a "
                         "thumbnail to open that head.",
            "helpMatrix": "Rows are queries, columns keys. Hover a cell for its weight, click to pin it.",
            "headsAria": "heads shown",
            "linesAria": "attention lines between queries and keys",
            "linesCapped": "With no token selected only the {0} strongest lines are drawn; hover a token for all of "
                           "its lines.",
            "noHeads": "No head is shown: tick one above.",
            "thumbAria": "{0}, {1}: entropy {2}",
            "barAria": "colour scale from {0} to {1}",
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
            "examplesAria": "examples",
            "examplesHeading": "examples",
            "exampleN": "example {0}",
            "exampleOf": "example {0} of {1}",
            "prediction": "prediction: {0}",
            "summaryAria": "summaries",
            "entropyHeading": "entropy per head",
            "colEntropy": "entropy",
            "colFocus": "top weight",
            "entropyNote": "Entropy in nats, averaged over queries: 0 when each query looks at one key, ln n when it "
                           "spreads over n keys evenly. Top weight: each query's largest weight, averaged. Click a "
                           "heading to sort, a layer to open that head.",
            "rolloutHeading": "attention rollout",
            "rolloutNote": "Abnar & Zuidema (2020): attention chained through all layers, the residual connection "
                           "counted as half; how much of a position's last representation comes from each token.",
            "rolloutFor": "\u201c{0}\u201d draws most from:",
            "alignmentHeading": "argmax alignment",
            "alignmentNote": "Each target token linked to the source token it attends to most, averaged over all "
                             "layers and heads (outlined in the matrix). Click one to select it.",
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
            "scale": "颜色标尺",
            "scaleLinear": "线性",
            "scaleSqrt": "平方根",
            "modeAria": "视图",
            "modeHead": "注意力头视图",
            "modeModel": "模型视图",
            "modeMatrix": "矩阵",
            "modeText": "文本",
            "keysHelp": "按键：\u2191 \u2193 \u2190 \u2192 移动所选词元（模型视图中为缩略图，矩阵中为单元格）"
                        "\u00b7 [ ] 切换层 \u00b7 , . 切换头 \u00b7 Esc 取消选择。",
            "help": "悬停在上面一行（查询）的词元上，查看它关注哪些词元；"
                    "悬停在下面一行（键）的词元上，查看哪些词元关注它。点击可固定，再次点击或按 Esc 键取消固定。",
            "helpHead": "每条线连接一个查询（左）和一个键（右）；线的不透明度是颜色标尺上的权重，颜色代表头。"
                        "悬停或点击一个词元，只显示它的连线；用复选框显示或隐藏各个头。",
            "helpModel": "所有层（行）和头（列）使用同一颜色标尺，便于比较各个头；点击缩略图可打开该头。",
            "helpMatrix": "行是查询，列是键。悬停在单元格上查看权重，点击可固定。",
            "headsAria": "显示的头",
            "linesAria": "查询与键之间的注意力连线",
            "linesCapped": "未选择词元时只画出最强的 {0} 条连线；悬停在词元上可查看它的全部连线。",
            "noHeads": "没有显示任何头：请在上方勾选。",
            "thumbAria": "{0}，{1}：熵 {2}",
            "barAria": "颜色标尺：{0} 到 {1}",
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
            "examplesAria": "示例",
            "examplesHeading": "示例",
            "exampleN": "示例 {0}",
            "exampleOf": "第 {0} 个示例（共 {1} 个）",
            "prediction": "预测：{0}",
            "summaryAria": "摘要",
            "entropyHeading": "各头的熵",
            "colEntropy": "熵",
            "colFocus": "最大权重",
            "entropyNote": "熵的单位为奈特（nat），对各查询取平均：每个查询只关注一个键时为 0，均匀分布在 n 个键上时为 "
                           "ln n。最大权重：每个查询的最大权重的平均值。点击表头排序，点击层名打开该头。",
            "rolloutHeading": "注意力展开（rollout）",
            "rolloutNote": "Abnar 与 Zuidema（2020）：把各层的注意力连乘起来，残差连接按一半计入；"
                           "表示某个位置最后一层的表示有多少来自各个词元。",
            "rolloutFor": "\u201c{0}\u201d主要来自：",
            "alignmentHeading": "argmax 对齐",
            "alignmentNote": "每个目标端词元连到它最关注的源端词元（对所有层和头取平均，在矩阵中以方框标出）。"
                             "点击可选中。",
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
