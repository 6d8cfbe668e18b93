"""Fonts for figure labels in any script: DejaVu Sans first, then a CJK font, per-glyph fallback (matplotlib 3.6+).

Where the CJK font comes from, first found wins:

1. the PyPI package ``noto-cjk-sans-jp-regular`` (Noto Sans CJK JP, which covers simplified and traditional
   Chinese, Japanese and Korean; installed with ``attnlab[viz]``), so figures look the same everywhere;
2. a system font matplotlib knows: Noto Sans CJK / Source Han Sans (Debian ``fonts-noto-cjk``), WenQuanYi,
   Droid Sans Fallback, IPA, Nanum.

A character no font in the chain covers (most emoji, for instance) is replaced by ``□`` (zero-width marks are
dropped), so matplotlib never draws an empty box silently or warns about a missing glyph.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

BASE_FAMILY = "DejaVu Sans"
MISSING = "\N{WHITE SQUARE}"  # drawn by DejaVu Sans
SYSTEM_CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
    "Source Han Sans", "Noto Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
    "IPAexGothic", "IPAGothic", "NanumGothic",
)


def _packaged_cjk_font() -> Path | None:
    try:
        import noto_cjk_sans_jp_regular
    except ImportError:
        return None
    path = Path(str(noto_cjk_sans_jp_regular.FONT_PATH))
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def cjk_font() -> tuple[str, Path] | None:
    """``(family name, file)`` of the CJK font used for labels, or ``None`` when none is installed."""
    from matplotlib import font_manager

    path = _packaged_cjk_font()
    if path is not None:
        font_manager.fontManager.addfont(str(path))
        return font_manager.FontProperties(fname=str(path)).get_name(), path
    by_name = {f.name: Path(f.fname) for f in font_manager.fontManager.ttflist}
    for family in SYSTEM_CJK_FAMILIES:
        if family in by_name:
            return family, by_name[family]
    log.info("no CJK font found: install attnlab[viz] (noto-cjk-sans-jp-regular) or fonts-noto-cjk; "
             "CJK labels will show as %s", MISSING)
    return None


@lru_cache(maxsize=8)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib import ft2font

    return frozenset(ft2font.FT2Font(path).get_charmap())


@lru_cache(maxsize=1)
def _base_font() -> str:
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family=BASE_FAMILY), fallback_to_default=True)


def families() -> list[str]:
    """The ``font.family`` list to draw labels with: DejaVu Sans, then the CJK font when there is one."""
    cjk = cjk_font()
    return [BASE_FAMILY] if cjk is None else [BASE_FAMILY, cjk[0]]


def covered(ch: str) -> bool:
    """Whether some font of :func:`families` has a glyph for ``ch``."""
    if ord(ch) in _charmap(_base_font()):
        return True
    cjk = cjk_font()
    return cjk is not None and ord(ch) in _charmap(str(cjk[1]))


def renderable(text: str) -> str:
    """``text`` with characters no available font can draw replaced by ``□`` (zero-width marks dropped)."""
    out = []
    for ch in text:
        if ch in "\n\t" or covered(ch):
            out.append(ch)
        elif unicodedata.category(ch) in ("Mn", "Me", "Cf") or 0x1F3FB <= ord(ch) <= 0x1F3FF:
            # variation selectors, zero-width joiners, combining marks, emoji skin-tone modifiers
            continue
        else:
            log.debug("no font has a glyph for %r (U+%04X); drawing %s", ch, ord(ch), MISSING)
            out.append(MISSING)
    return "".join(out)


def labels(tokens: Iterable[str], max_chars: int = 24) -> list[str]:
    """Tick labels: renderable, one line, shortened to ``max_chars`` with an ellipsis."""
    result = []
    for tok in tokens:
        tok = " ".join(str(tok).split()) or repr(str(tok))  # whitespace-only tokens stay visible
        if len(tok) > max_chars:
            tok = tok[:max_chars - 1] + "\N{HORIZONTAL ELLIPSIS}"
        result.append(renderable(tok))
    return result
