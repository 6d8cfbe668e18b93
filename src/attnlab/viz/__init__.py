"""Seeing attention: capture weights from any model, draw heatmaps, write an interactive viewer, analyse heads.

>>> with attnlab.capture(model, src_tokens=tokens) as maps:
...     model(inputs)
>>> plot_attention(maps, path="attention.png")
>>> write_html(maps, "attention.html")
>>> show(maps)  # in Jupyter: the same viewer inline (or just end a cell with ``maps``)

``attnlab.viz.capture`` is the capture module; the context manager itself is ``attnlab.capture`` (or
``attnlab.viz.capture.capture``). Submodules are imported on first use, so ``import attnlab.viz`` stays
light (matplotlib is only loaded by :mod:`attnlab.viz.heatmap`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttentionRecord": "attnlab.viz.capture",
    "CaptureResult": "attnlab.viz.capture",
    "find_attention_modules": "attnlab.viz.capture",
    "plot_attention": "attnlab.viz.heatmap",
    "save_figure": "attnlab.viz.heatmap",
    "write_html": "attnlab.viz.html",
    "html_document": "attnlab.viz.html",
    "attention_entropy": "attnlab.viz.analysis",
    "attention_rollout": "attnlab.viz.analysis",
    "argmax_alignment": "attnlab.viz.analysis",
    "parse_alignment": "attnlab.viz.analysis",
    "alignment_error_rate": "attnlab.viz.analysis",
    "mask_heads": "attnlab.viz.analysis",
    "head_importance": "attnlab.viz.analysis",
    "HeadImportance": "attnlab.viz.analysis",
    "Highlight": "attnlab.viz.highlight",
    "plot_highlight": "attnlab.viz.highlight",
    "highlight_html": "attnlab.viz.highlight",
    "write_highlight_html": "attnlab.viz.highlight",
    "to_display": "attnlab.viz.image",
    "patch_map_to_pixels": "attnlab.viz.image",
    "vit_attention_maps": "attnlab.viz.image",
    "plot_vit_attention": "attnlab.viz.image",
    "plot_caption_attention": "attnlab.viz.image",
    "vit_attention_html": "attnlab.viz.image",
    "caption_attention_html": "attnlab.viz.image",
    "save_html": "attnlab.viz.image",
    "AttentionView": "attnlab.viz.views",
    "Example": "attnlab.viz.views",
    "AttentionSteps": "attnlab.viz.head_steps",
    "HeadExplanation": "attnlab.viz.head_steps",
    "explain_attention": "attnlab.viz.head_steps",
    "explain_head": "attnlab.viz.head_steps",
    "explain_head_html": "attnlab.viz.head_steps",
    "format_table": "attnlab.viz.head_steps",
    "write_explain_head_html": "attnlab.viz.head_steps",
    "as_views": "attnlab.viz.views",
    "show": "attnlab.viz.notebook",
    "inline": "attnlab.viz.notebook",
    "inline_vit": "attnlab.viz.notebook",
    "inline_caption": "attnlab.viz.notebook",
    "InlineView": "attnlab.viz.notebook",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attnlab.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
