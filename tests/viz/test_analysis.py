"""Analysis functions on constructed cases whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from attnlab.attention import MultiHeadAttention
from attnlab.core.errors import ConfigError, DataError
from attnlab.models.base import AttentionMaps
from attnlab.viz.analysis import (
    alignment_error_rate,
    argmax_alignment,
    attention_entropy,
    attention_rollout,
    head_importance,
    mask_heads,
    parse_alignment,
)
from attnlab.viz.capture import capture


# --------------------------------------------------------------------------------------------- entropy
def test_entropy_of_uniform_one_hot_and_masked_rows() -> None:
    uniform = torch.full((4, 8), 1 / 8)
    one_hot = torch.eye(4, 8)
    half = torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 3 + [[0.0] * 4])  # last query fully masked: left out
    assert_close(attention_entropy(uniform), torch.tensor(math.log(8)))
    assert attention_entropy(one_hot) == 0
    assert_close(attention_entropy(half), torch.tensor(math.log(2)))
    heads = torch.stack([uniform, one_hot])  # (H, Tq, Tk)
    assert_close(attention_entropy(heads), torch.tensor([math.log(8), 0.0]))
    layers = torch.stack([heads, heads.flip(0)])  # (L, H, Tq, Tk)
    assert_close(attention_entropy(layers), torch.tensor([[math.log(8), 0.0], [0.0, math.log(8)]]))
    batched = torch.stack([layers, layers], dim=1)  # (L, B, H, Tq, Tk)
    assert_close(attention_entropy(batched), attention_entropy(layers))
    maps = AttentionMaps(encoder_self=batched)
    assert_close(attention_entropy(maps, kind="encoder"), attention_entropy(layers))


# --------------------------------------------------------------------------------------------- rollout
def test_rollout_known_answers() -> None:
    T = 3
    eye = torch.eye(T).expand(2, 1, T, T)  # (L, H, T, T): each token attends to itself
    assert_close(attention_rollout(eye), torch.eye(T))
    # Everyone attends to token 0: A' = [[1, 0], [.5, .5]], so after L layers token 1 keeps 0.5^L of itself.
    to_first = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).expand(3, 2, 2, 2)
    assert_close(attention_rollout(to_first), torch.tensor([[1.0, 0.0], [0.875, 0.125]]))
    assert_close(attention_rollout(to_first, residual=0.0), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    uniform = torch.full((1, 1, 4, 4), 0.25)
    assert_close(attention_rollout(uniform), 0.5 * torch.eye(4) + 0.125)


def test_rollout_head_fusion_and_batches() -> None:
    heads = torch.stack([torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]).unsqueeze(0)  # (1, 2, 2, 2)
    assert_close(attention_rollout(heads), torch.full((2, 2), 0.5) + 0.25 * torch.eye(2) - 0.25 * (1 - torch.eye(2)))
    # max fusion: [[1, 1], [1, 1]] -> 0.5 I + 0.5 * that, rows renormalized -> [[2/3, 1/3], [1/3, 2/3]]
    assert_close(attention_rollout(heads, head_fusion="max"), torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]]))
    batched = torch.stack([heads, heads], dim=1)  # (L, B, H, T, T)
    out = attention_rollout(batched)
    assert out.shape == (2, 2, 2) and torch.equal(out[0], out[1])
    with pytest.raises(DataError, match="self-attention"):
        attention_rollout(torch.ones(1, 1, 2, 3))
    with pytest.raises(ConfigError, match="residual"):
        attention_rollout(heads, residual=1.5)


# ------------------------------------------------------------------------------------------ alignments
def test_argmax_alignment_and_aer() -> None:
    perm = [2, 0, 1, 3]  # target j aligned to source perm[j]
    cross = torch.full((2, 4, 5), 0.05)  # (H, Tt, Ts)
    for j, i in enumerate(perm):
        cross[:, j, i] = 0.8
    links = argmax_alignment(cross)
    assert links == {(i, j) for j, i in enumerate(perm)}
    assert alignment_error_rate(links, "2-0 0-1 1-2 3-3") == 0.0
    assert alignment_error_rate({(0, 0), (1, 2)}, {(0, 0), (1, 1)}) == 0.5
    # Possible links count for precision only: A = S + one possible link -> AER 0; a wrong link costs.
    sure, possible = parse_alignment("0-0 1-1 2?2")
    assert sure == {(0, 0), (1, 1)} and possible == {(0, 0), (1, 1), (2, 2)}
    assert alignment_error_rate({(0, 0), (1, 1), (2, 2)}, "0-0 1-1 2?2") == 0.0
    assert alignment_error_rate({(0, 0), (1, 1), (2, 2)}, sure, possible) == 0.0
    assert alignment_error_rate({(0, 0), (2, 1)}, sure, possible) == pytest.approx(1 - 2 / 4)
    with pytest.raises(DataError, match="bad alignment link"):
        parse_alignment("0-0 1:1")


def test_argmax_alignment_from_a_capture() -> None:
    torch.manual_seed(0)
    model = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True).eval()
    with torch.no_grad(), capture(model) as maps:
        model(torch.randn(1, 5, 8), torch.randn(1, 3, 8))
    expected = maps.stack("cross")[:, 0].mean(dim=(0, 1)).argmax(-1).tolist()  # (Tt,) source per target
    assert argmax_alignment(maps) == {(i, j) for j, i in enumerate(expected)}


# ------------------------------------------------------------------------------------------ head masks
def test_mask_heads_zeroes_exactly_one_head_contribution() -> None:
    torch.manual_seed(1)
    ours = MultiHeadAttention(8, 2)
    torch_mha = ours.to_torch(batch_first=True)
    x = torch.randn(2, 3, 8)
    before = torch_mha.out_proj.weight.detach().clone()
    full = ours(x).output
    with mask_heads(ours, {"": [0, 1]}):
        assert_close(ours(x).output, ours.out_proj.bias.expand(2, 3, 8))  # all heads off: only the bias is left
    with mask_heads(ours, {"": [1]}):
        ours_masked = ours(x).output
    with mask_heads(torch_mha, {"": [1]}):
        torch_masked = torch_mha(x, x, x, need_weights=False)[0]
    assert_close(ours_masked, torch_masked)  # the hook (ours) and the weight mask (PyTorch's) agree
    assert not torch.allclose(ours_masked, full)
    assert torch.equal(torch_mha.out_proj.weight, before)  # restored exactly
    assert all(not m._forward_pre_hooks for m in ours.modules())
    with pytest.raises(ConfigError, match="has 2 heads"), mask_heads(ours, {"": [2]}):
        pass


def test_head_importance_finds_the_head_that_matters() -> None:
    torch.manual_seed(2)
    mha = MultiHeadAttention(8, 2).eval()
    with torch.no_grad():
        mha.out_proj.weight[:, 4:] = 0  # head 1 (input columns 4-7) cannot change the output
    model = nn.ModuleDict({"attn": mha})
    x = torch.randn(4, 5, 8)
    target = mha(x).output.detach()

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return nn.functional.mse_loss(m["attn"](x).output, target)

    result = head_importance(model, loss_fn)
    assert result.names == ["attn"] and result.base_loss == 0.0
    assert result.loss_change.shape == (1, 2)
    assert result.loss_change[0, 0] > 1e-4 and result.loss_change[0, 1] == 0.0
    assert [(n, h) for n, h, _ in result.ranking()] == [("attn", 0), ("attn", 1)]


def test_head_importance_on_nn_transformer_encoder() -> None:
    torch.manual_seed(3)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2).eval()
    x = torch.randn(2, 4, 8)
    target = enc(x).detach()
    result = head_importance(enc, lambda m: nn.functional.mse_loss(m(x), target))
    assert result.names == ["layers.0.self_attn", "layers.1.self_attn"]
    assert result.loss_change.shape == (2, 2) and bool((result.loss_change > 0).all())
    assert_close(enc(x), target)  # weights restored after every mask
