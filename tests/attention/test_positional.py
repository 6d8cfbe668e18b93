import math

import pytest
import torch

from attnlab.attention import LearnedPositionalEncoding, SinusoidalPositionalEncoding
from attnlab.attention.positional import (
    FairseqSinusoidalPositionalEncoding,
    fairseq_sinusoid_table,
    positional_encoding,
    sinusoid_table,
)


def test_sinusoid_values_follow_the_paper_formula():
    table = sinusoid_table(50, 6)
    for pos in (0, 1, 17, 49):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_offset_and_beyond_max_len_are_consistent():
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    x = torch.zeros(1, 14, 8)
    full = pe(x)  # computed on demand past max_len
    torch.testing.assert_close(full[:, :10], pe.table[:10].unsqueeze(0))
    torch.testing.assert_close(pe(torch.zeros(1, 3, 8), offset=11), full[:, 11:14])
    assert "table" not in pe.state_dict()


def test_odd_model_dim():
    assert sinusoid_table(4, 5).shape == (4, 5)


def test_learned_positions_offset_and_limit():
    torch.manual_seed(0)
    pe = LearnedPositionalEncoding(4, max_len=6)
    x = torch.zeros(2, 3, 4)
    torch.testing.assert_close(pe(x, offset=2)[0], pe.embedding.weight[2:5])
    with pytest.raises(ValueError, match="exceed max_len=6"):
        pe(torch.zeros(1, 5, 4), offset=2)


def test_wrong_model_dim_is_reported():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T, 8\), got \(2, 3, 4\)"):
        SinusoidalPositionalEncoding(8)(torch.zeros(2, 3, 4))


# ------------------------------------------------------------------------------------------ fairseq's table

def test_fairseq_values_follow_fairseqs_formula():
    """Sine block, then cosine block, frequencies 10000^(-i/(D/2-1)); attnlab's position p is fairseq's row p + 1."""
    table = fairseq_sinusoid_table(50, 8)
    for pos in (0, 1, 17, 49):
        for i in range(4):
            angle = (pos + 1) * math.exp(-i * math.log(10000) / 3)
            assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 4 + i].item() == pytest.approx(math.cos(angle), abs=1e-5)
    assert fairseq_sinusoid_table(3, 7)[:, -1].abs().sum() == 0  # odd D: a zero last column, as fairseq's


@pytest.mark.parametrize("d_model", [4, 5, 16, 33, 256])
def test_fairseq_rows_are_m2m100s_bit_for_bit(d_model):
    """Hugging Face's own module, on a right-padded batch and with a KV cache's offset: the same rows exactly."""
    hf = pytest.importorskip("transformers.models.m2m_100.modeling_m2m_100")
    theirs = hf.M2M100SinusoidalPositionalEmbedding(8, d_model, padding_idx=0)  # grows its table past 8 rows
    ours = FairseqSinusoidalPositionalEncoding(d_model, max_len=8)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    expected = theirs(ids)  # (B, T, D): <pad> rows are zero, the rest count real tokens from padding_idx + 1
    got = ours(torch.zeros(2, 12, d_model))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1, :3], expected[1, :3])
    for offset in (0, 5, 30):  # one decoder step at position `offset`, as cached decoding feeds it
        step = theirs(torch.tensor([[5]]), cache_length=offset)
        assert torch.equal(ours(torch.zeros(1, 1, d_model), offset=offset), step)
    assert not torch.equal(got[0], sinusoid_table(12, d_model))  # attnlab's own table is another one


def test_fairseq_offset_and_beyond_max_len_are_consistent_and_nothing_is_stored():
    pe = positional_encoding("fairseq", 8, max_len=10)
    assert isinstance(pe, FairseqSinusoidalPositionalEncoding)
    full = pe(torch.zeros(1, 14, 8))  # computed on demand past max_len
    torch.testing.assert_close(full[:, :10], pe.table[:10].unsqueeze(0), rtol=0, atol=0)
    torch.testing.assert_close(pe(torch.zeros(1, 3, 8), offset=11), full[:, 11:14], rtol=0, atol=0)
    assert not pe.state_dict() and not list(pe.parameters())
    with pytest.raises(ValueError, match="d_model must be >= 4"):
        FairseqSinusoidalPositionalEncoding(3)


def test_a_fairseq_transformer_stores_no_positions_and_decodes_the_same_with_a_cache():
    from attnlab.core.model_config import TransformerConfig
    from attnlab.decode import greedy_decode
    from attnlab.models.build import build_model, estimate_parameters

    torch.manual_seed(0)
    config = TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2,
                               positional="fairseq", max_len=8)
    model = build_model(config, 20, 20).eval()
    assert not [k for k in model.state_dict() if "positional" in k]
    sinusoidal = TransformerConfig(**{**config.__dict__, "positional": "sinusoidal"})
    for stored_only in (True, False):
        assert estimate_parameters(config, 20, 20, stored_only=stored_only) == \
            estimate_parameters(sinusoidal, 20, 20, stored_only=stored_only)
    src, lens = torch.randint(4, 20, (3, 6)), torch.tensor([6, 4, 2])
    cached = greedy_decode(model, src, lens, max_len=12)  # past the 8-row table
    full = greedy_decode(model, src, lens, max_len=12, use_cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in full]
    assert max(len(h.tokens) for h in cached) > 8
