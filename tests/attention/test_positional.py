import math

import pytest
import torch

from attnlab.attention import LearnedPositionalEncoding, SinusoidalPositionalEncoding
from attnlab.attention.positional import sinusoid_table


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
