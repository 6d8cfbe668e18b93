"""What the viewer page carries: compact weights (round trip within the stated error), several examples, the summaries
beside the views (entropy, rollout, alignment) and the arguments' checks. The browser tests drive the page itself."""

from __future__ import annotations

import json
import re

import pytest
import torch

from attnlab.core.errors import ConfigError, DataError
from attnlab.models.base import AttentionMaps
from attnlab.viz import html as viewer
from attnlab.viz.analysis import argmax_alignment, attention_entropy, attention_rollout
from attnlab.viz.html import decode_weights, encode_weights, html_document
from attnlab.viz.views import Example, as_examples


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def _attention(*shape: int, seed: int = 0, sharpness: float = 3.0) -> torch.Tensor:
    return torch.softmax(sharpness * torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), -1)


# --------------------------------------------------------------------------------------- compact weights


def test_float16_round_trip_within_half_precision() -> None:
    w = torch.cat([_attention(2, 3, 7, 9), torch.full((2, 1, 7, 9), 1e-6)], dim=1)  # and tiny (subnormal) weights
    encoded = encode_weights(w, "float16")
    assert encoded["dtype"] == "float16" and encoded["shape"] == [2, 4, 7, 9]
    assert len(json.dumps(encoded)) < 2 * w.numel() * 4 / 3 + 200  # 2 bytes a weight, base64
    back = decode_weights(encoded)
    assert back.dtype == torch.float32 and back.shape == w.shape
    bound = torch.maximum(w.abs() * 2.0 ** -11, torch.tensor(2.0 ** -25))  # the error encode_weights states
    assert bool(((back - w).abs() <= bound).all())
    assert float((back - w).abs().max()) > 0  # not a lossless copy: the bound is what is tested


def test_uint8_round_trip_within_half_a_step_per_head() -> None:
    w = _attention(2, 3, 11, 5, seed=1)
    w[1, 2] = 0.2  # a constant head: exact
    w[0, 1] -= 0.5  # negative numbers too (differences of attention, say)
    encoded = encode_weights(w, "uint8")
    assert encoded["dtype"] == "uint8" and len(encoded["offset"]) == len(encoded["step"]) == 6
    assert len(json.dumps(encoded)) < w.numel() * 4 / 3 + 400  # 1 byte a weight, base64, plus two numbers a head
    back = decode_weights(encoded)
    heads = w.reshape(6, -1)
    step = (heads.amax(1) - heads.amin(1)).double() / 255  # (L*H,)
    error = (back - w).reshape(6, -1).abs().amax(1).double()
    assert bool((error <= step / 2 + 1e-7).all())
    assert error[5] == 0 and encoded["step"][5] == 0  # the constant head
    assert float(error.max()) > float(step.max()) / 10  # quantized for real: the bound is what is tested


def test_float16_refuses_numbers_it_cannot_hold_and_auto_takes_uint8() -> None:
    big = torch.full((1, 1, 2, 2), 1e5)
    with pytest.raises(ConfigError, match="do not fit float16"):
        encode_weights(big, "float16")
    views = _data(html_document(big))["views"]
    assert views[0]["weights"]["dtype"] == "uint8"
    assert decode_weights(views[0]["weights"]).tolist() == big.tolist()


def test_auto_precision_switches_to_uint8_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _attention(2, 2, 30, 30)
    assert _data(html_document(w))["views"][0]["weights"]["dtype"] == "float16"
    monkeypatch.setattr(viewer, "_FLOAT16_LIMIT", w.numel() - 1)
    small = html_document(w)
    assert _data(small)["views"][0]["weights"]["dtype"] == "uint8"
    assert _data(html_document(w, precision="float16"))["views"][0]["weights"]["dtype"] == "float16"
    assert len(small) < len(html_document(w, precision="float16")) - 3000  # 1 byte a weight instead of 2


# ------------------------------------------------------------------------------------------- examples


def test_several_examples_in_one_page() -> None:
    src = [["a", "b", "c"], ["d", "e"]]
    tgt = [["x", "y"], ["z", "w", "v", "u"]]
    examples = [Example(AttentionMaps(encoder_self=_attention(2, 1, 4, len(s), len(s), seed=i),
                                      cross=_attention(2, 1, 4, len(t), len(s), seed=10 + i)),
                        query_tokens=t, key_tokens=s, name=" ".join(s), prediction=" ".join(t))
                for i, (s, t) in enumerate(zip(src, tgt, strict=True))]
    data = _data(html_document(examples, title="two"))
    assert data["title"] == "two"
    assert data["examples"] == [{"name": "a b c", "prediction": "x y"}, {"name": "d e", "prediction": "z w v u"}]
    assert [(v["example"], v["kind"]) for v in data["views"]] == [(0, "encoder"), (0, "cross"), (1, "encoder"),
                                                                   (1, "cross")]
    assert data["views"][3]["queryTokens"] == tgt[1] and data["views"][3]["keyTokens"] == src[1]
    weights = decode_weights(data["views"][3]["weights"])
    assert weights.shape == (2, 4, 4, 2)
    torch.testing.assert_close(weights, examples[1].weights.cross[:, 0], atol=2.0 ** -12, rtol=0)
    assert html_document(examples[0]) == html_document([examples[0]])  # one Example is a list of one


def test_single_input_calls_are_one_example_as_before() -> None:
    w = _attention(3, 3)
    assert html_document(w, query_tokens=list("abc")) == html_document([Example(w, query_tokens=list("abc"))])
    (only,) = as_examples(w, key_tokens=list("xyz"), batch=0)
    assert only.key_tokens == list("xyz") and only.name is None


def test_examples_are_checked() -> None:
    with pytest.raises(ConfigError, match="only Example objects"):
        html_document([Example(torch.eye(2)), torch.eye(2)])
    with pytest.raises(ConfigError, match="belong to each Example"):
        html_document([Example(torch.eye(2))], query_tokens=["a", "b"])
    with pytest.raises(ConfigError, match="Example.name must be a string"):
        Example(torch.eye(2), name=3)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="3 query and 3 key tokens"):  # each example's tokens checked as usual
        html_document([Example(torch.eye(2), query_tokens=list("abc"))])


# ------------------------------------------------------------------------------------------- summaries


def test_summaries_come_from_the_analyses() -> None:
    src, tgt = list("abcde"), list("wxyz")
    maps = AttentionMaps(encoder_self=_attention(3, 1, 2, 5, 5), decoder_self=_attention(3, 1, 2, 4, 4, seed=2),
                         cross=_attention(3, 1, 2, 4, 5, seed=3))
    encoder, decoder, cross = _data(html_document(maps, query_tokens=tgt, key_tokens=src))["views"]
    for view, w in ((encoder, maps.encoder_self), (decoder, maps.decoder_self), (cross, maps.cross)):
        torch.testing.assert_close(torch.tensor(view["entropy"]), attention_entropy(w[:, 0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(view["focus"]), w[:, 0].amax(-1).mean(-1), atol=1e-4, rtol=0)
    rollout = decode_weights(encoder["rollout"])[0, 0]
    torch.testing.assert_close(rollout, attention_rollout(maps.encoder_self[:, 0]), atol=2.0 ** -11, rtol=0)
    assert decoder["rollout"] is None and cross["rollout"] is None  # rollout is for encoders
    assert cross["alignment"] == sorted([list(p) for p in argmax_alignment(maps.cross[:, 0])], key=lambda p: p[1])
    assert [p[1] for p in cross["alignment"]] == list(range(4))  # every target position, in order
    assert encoder["alignment"] is None and decoder["alignment"] is None


def test_plain_tensors_get_rollout_only_as_self_attention() -> None:
    square = _data(html_document(_attention(2, 2, 4, 4), query_tokens=list("abcd")))["views"][0]
    assert square["rollout"] is not None
    other = _data(html_document(_attention(2, 2, 4, 4), query_tokens=list("abcd"), key_tokens=list("wxyz")))
    assert other["views"][0]["rollout"] is None  # two token sequences: not self-attention
    negative = _data(html_document(torch.randn(1, 1, 3, 3), query_tokens=list("abc")))
    assert negative["views"][0]["rollout"] is None  # not attention weights


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"decimals": 7}, "decimals must be an integer in 0..6"),
    ({"decimals": True}, "decimals must be an integer"),
    ({"precision": "int4"}, "precision must be one of 'auto', 'float16', 'uint8'"),
])
def test_arguments_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        html_document(torch.eye(2), **kwargs)


def test_decimals_travel_to_the_page() -> None:
    assert _data(html_document(torch.eye(2)))["decimals"] == 3
    assert _data(html_document(torch.eye(2), decimals=5))["decimals"] == 5
