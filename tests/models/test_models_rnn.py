"""RNN encoders: shapes, padding invariance (packed sequences), state structure."""

from __future__ import annotations

import pytest
import torch

from attnlab.models.rnn import RNNEncoder, concat_directions, map_state


def _run_one_by_one(enc: RNNEncoder, x: torch.Tensor, valid_lens: torch.Tensor):
    outs, states = [], []
    for b in range(x.shape[0]):
        n = int(valid_lens[b])
        out, state = enc(x[b:b + 1, :n])
        outs.append(out[0])
        states.append(state)
    return outs, states


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_real_tokens(kind: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    enc = RNNEncoder(5, 7, num_layers=2, rnn=kind, bidirectional=bidirectional).eval()
    valid_lens = torch.tensor([4, 6, 1])
    x = torch.randn(3, 6, 5)
    outputs, state = enc(x, valid_lens)
    dirs = 2 if bidirectional else 1
    assert outputs.shape == (3, 6, dirs * 7) and enc.output_size == dirs * 7
    h = state[0] if kind == "lstm" else state
    assert h.shape == (2 * dirs, 3, 7)
    ref_outs, ref_states = _run_one_by_one(enc, x, valid_lens)
    for b in range(3):
        n = int(valid_lens[b])
        torch.testing.assert_close(outputs[b, :n], ref_outs[b], rtol=1e-5, atol=1e-6)
        assert torch.all(outputs[b, n:] == 0)
        if kind == "lstm":
            torch.testing.assert_close(state[0][:, b], ref_states[b][0][:, 0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(state[1][:, b], ref_states[b][1][:, 0], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(state[:, b], ref_states[b][:, 0], rtol=1e-5, atol=1e-6)


def test_garbage_in_padding_is_ignored() -> None:
    torch.manual_seed(1)
    enc = RNNEncoder(4, 6, rnn="gru", bidirectional=True).eval()
    valid_lens = torch.tensor([2, 5])
    x = torch.randn(2, 5, 4)
    noisy = x.clone()
    noisy[0, 2:] = 1e3
    a, sa = enc(x, valid_lens)
    b, sb = enc(noisy, valid_lens)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(sa, sb)


def test_zero_length_rows_give_zero_outputs_and_gradients_flow() -> None:
    enc = RNNEncoder(3, 4, rnn="lstm")
    x = torch.randn(2, 3, 3, requires_grad=True)
    out, (h, c) = enc(x, torch.tensor([0, 3]))
    assert torch.all(out[0] == 0)
    (out.sum() + h.sum() + c.sum()).backward()
    assert x.grad is not None and x.grad[1].abs().sum() > 0
    assert all(p.grad is not None for p in enc.parameters())


def test_concat_directions_and_map_state() -> None:
    enc = RNNEncoder(3, 4, num_layers=2, rnn="gru", bidirectional=True).eval()
    x = torch.randn(2, 5, 3)
    out, h = enc(x)
    merged = concat_directions(h, 2)  # (L, B, 2Hd)
    assert merged.shape == (2, 2, 8)
    # The last layer's [forward final; backward final] equals the outputs at the last / first step.
    torch.testing.assert_close(merged[-1, :, :4], out[:, -1, :4])
    torch.testing.assert_close(merged[-1, :, 4:], out[:, 0, 4:])
    doubled = map_state((h, h), lambda t: 2 * t)
    assert isinstance(doubled, tuple) and torch.equal(doubled[1], 2 * h)
