"""How tokens are shown to a reader: the one display rule of every figure and page that draws tokens.

Tokens keep SentencePiece's space marker ``"▁"`` (U+2581, :data:`attnlab.data.tokenize.SPACE_TOKEN`) as data, but
drawn small it reads as an underscore. So where tokens are drawn (heatmap tick labels, the highlight figure and
page, the viewer's labels) each *leading* marker is shown as ``"␣"`` (U+2423 OPEN BOX, which DejaVu Sans draws):

>>> [display_token(t) for t in ["▁", "▁house", "s", "▁▁", "<▁>"]]
['␣', '␣house', 's', '␣␣', '<▁>']

A marker inside a token is left alone, and so is ``"<▁>"``: the token for a literal "▁" in the text, which must
not look like a space.
"""

from __future__ import annotations

from collections.abc import Iterable

from attnlab.data.tokenize import SPACE_TOKEN

VISIBLE_SPACE = "\N{OPEN BOX}"  # "␣"


def display_token(token: str) -> str:
    """``token`` as drawn for a reader: each leading ``"▁"`` becomes ``"␣"``; everything else as given."""
    token = str(token)
    rest = token.lstrip(SPACE_TOKEN)
    return VISIBLE_SPACE * (len(token) - len(rest)) + rest


def display_tokens(tokens: Iterable[str]) -> list[str]:
    """:func:`display_token` of each token."""
    return [display_token(t) for t in tokens]
