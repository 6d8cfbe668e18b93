"""Captioner: shapes, cached == teacher-forced decoding, fused == explicit, greedy/beam on images, a grounded task."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import attnlab.attention.multihead as multihead
from attnlab.core.config import to_dict
from attnlab.core.errors import ConfigError
from attnlab.core.model_config import CaptionerConfig
from attnlab.decode import beam_search, greedy_decode
from attnlab.models import Captioner, TransformerState, build_model, patch_grid

V = 11
# 12 x 12 images in 2 x 2 patches: N = 36, so N * N and Tt * N pass the fused-kernel threshold (16 * 16).
SMALL = {"image_size": 12, "patch_size": 2, "in_channels": 3, "d_model": 16, "num_heads": 4, "ffn_dim": 32,
         "encoder_layers": 2, "decoder_layers": 2, "dropout": 0.0, "max_len": 32}
N = 36


def _model(**overrides: object) -> Captioner:
    torch.manual_seed(0)
    return Captioner(CaptionerConfig(**{**SMALL, **overrides}), V).eval()


def _batch(seed: int, batch: int, tgt_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 12, 12, generator=g)
    tgt = torch.randint(4, V, (batch, tgt_len), generator=g)
    tgt[:, 0] = 1  # <bos>
    return images, torch.full((batch,), N), tgt


def test_forward_shapes_and_attention_maps() -> None:
    model = _model(encoder_layers=3)
    images, lens, tgt = _batch(0, 2, 5)
    out = model(images, lens, tgt, need_weights=True)
    maps = out.attention
    assert out.logits.shape == (2, 5, V)
    assert maps.encoder_self.shape == (3, 2, 4, N, N)
    assert maps.decoder_self.shape == (2, 2, 4, 5, 5)
    assert maps.cross.shape == (2, 2, 4, 5, N)
    for weights in (maps.encoder_self, maps.decoder_self, maps.cross):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.all(maps.decoder_self.triu(diagonal=1) == 0)  # no attention to later words
    assert model(images, lens, tgt).attention is None
    # Without encoder layers the decoder reads the patch embeddings and there is no encoder attention.
    bare = _model(encoder_layers=0)(images, lens, tgt, need_weights=True).attention
    assert bare.encoder_self is None and bare.cross.shape == (2, 2, 4, 5, N)


@pytest.mark.parametrize(("norm_first", "tie"), [(True, True), (False, False)])
def test_cached_decode_step_equals_teacher_forcing(norm_first: bool, tie: bool) -> None:
    model = _model(norm_first=norm_first, tie_embeddings=tie).double()
    images, lens, tgt = _batch(1, 3, 32)
    images = images.double()
    full = model(images, lens, tgt, need_weights=True)
    state = model.encode(images, lens)
    logits, cross = [], []
    for t in range(tgt.shape[1]):
        step = model.decode_step(tgt[:, t], state, need_weights=True)
        state = step.state
        logits.append(step.logits)
        cross.append(step.cross_weights)
    assert isinstance(state, TransformerState) and state.offset == 32 and len(state.self_caches[0]) == 32
    torch.testing.assert_close(torch.stack(logits, 1), full.logits, rtol=1e-10, atol=1e-10)
    # The step's cross_weights are the last decoder layer's cross-attention averaged over heads: (B, Tt, N).
    torch.testing.assert_close(torch.stack(cross, 1), full.attention.cross[-1].mean(dim=1), rtol=1e-10, atol=1e-10)
    assert model.decode_step(tgt[:, 0], model.encode(images, lens)).cross_weights is None


def test_fused_path_equals_explicit_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    images, lens, tgt = _batch(2, 2, 20)
    calls = []
    fused = multihead.fused_attention

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(multihead, "fused_attention", counting)
    explicit = model(images, lens, tgt, need_weights=True).logits
    assert calls == []  # weights asked for: explicit math everywhere
    plain = model.train()(images, lens, tgt).logits  # the training path (dropout is 0 here)
    assert len(calls) == 2 + 2 * 2  # encoder self; decoder self and cross: all through the fused kernel
    torch.testing.assert_close(plain, explicit, rtol=1e-5, atol=1e-5)


def test_causal_and_image_dependent() -> None:
    model = _model()
    images, lens, tgt = _batch(3, 2, 8)
    out = model(images, lens, tgt).logits
    changed = tgt.clone()
    changed[:, 5] = torch.where(tgt[:, 5] == 4, 5, 4)
    later = model(images, lens, changed).logits
    torch.testing.assert_close(later[:, :5], out[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(later[:, 5:], out[:, 5:], atol=1e-4)
    other = images.clone()
    other[0] = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(7))
    moved = model(other, lens, tgt).logits
    assert not torch.allclose(moved[0], out[0], atol=1e-4)  # a different image, a different caption model
    torch.testing.assert_close(moved[1], out[1], rtol=1e-5, atol=1e-5)  # rows stay independent


def test_rejects_bad_images_and_lengths() -> None:
    model = _model()
    images, lens, tgt = _batch(4, 2, 3)
    with pytest.raises(ValueError, match="src_lens"):
        model(images, torch.tensor([N, N - 1]), tgt)
    with pytest.raises(ValueError, match="src_lens"):
        model.encode(images, lens[:1])
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 12, 12\)"):
        model(images[:, :1], lens, tgt)
    with pytest.raises(ValueError, match="src must be"):
        greedy_decode(model, images[0], lens, max_len=3)


def test_patch_grid_is_row_major() -> None:
    config = CaptionerConfig(**SMALL)
    gh, gw = patch_grid(config)
    assert (gh, gw) == (6, 6) == (12 // 2, 12 // 2)
    assert patch_grid(CaptionerConfig()) == (8, 8)
    model = _model()
    images = torch.zeros(1, 3, 12, 12)
    images[0, :, 2 * 4:2 * 4 + 2, 2 * 1:2 * 1 + 2] = 1.0  # the patch at row 4, column 1
    tokens = model.patch_embedding(images)[0]  # (N, D)
    changed = (tokens - model.patch_embedding(torch.zeros_like(images))[0]).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == [4 * gw + 1]


def test_greedy_and_beam_search_on_images() -> None:
    model = _model().train()  # decoding switches to eval by itself
    images, lens, _ = _batch(5, 3, 1)
    greedy = greedy_decode(model, images, lens, max_len=6, return_attention=True, length_penalty=0.0)
    uncached = greedy_decode(model, images, lens, max_len=6, return_attention=True, use_cache=False)
    beams = beam_search(model, images, lens, beam_size=3, n_best=2, max_len=6, return_attention=True)
    assert model.training
    for h in [*greedy, *(h for nbest in beams for h in nbest)]:
        assert h.cross_attention.shape == (h.num_steps, N)
        torch.testing.assert_close(h.cross_attention.sum(-1), torch.ones(h.num_steps), atol=1e-5, rtol=0)
    for g, u in zip(greedy, uncached, strict=True):
        assert g.tokens == u.tokens and g.score == pytest.approx(u.score, abs=1e-5)
        torch.testing.assert_close(g.cross_attention, u.cross_attention, atol=1e-5, rtol=0)
    one = beam_search(model, images, lens, beam_size=1, max_len=6, length_penalty=0.0)
    for g, (b,) in zip(greedy, one, strict=True):
        assert (b.tokens, b.ended) == (g.tokens, g.ended) and b.score == pytest.approx(g.score, abs=1e-6)


def test_gradients_reach_every_parameter() -> None:
    model = _model(tie_embeddings=False).train()
    images, lens, tgt = _batch(6, 2, 4)
    model(images, lens, tgt).logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    tied = _model()
    assert tied.output.weight is tied.tgt_embedding.weight and model.output.weight is not model.tgt_embedding.weight


# --------------------------------------------------------------------------- a task whose attention is known

WORDS = {"top": 4, "bottom": 5, "left": 6, "right": 7}


def _square_scenes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, 1, 16, 16)`` noise with a bright 4x4 square on one of the 4x4 grid's 16 patches; the caption says
    which quadrant: ``<bos> top|bottom left|right <eos>``. Returns images, the square's patch, ``(n, 4)`` captions."""
    images = 0.3 * torch.randn(n, 1, 16, 16, generator=generator)
    patch = torch.randint(0, 16, (n,), generator=generator)
    row, col = patch // 4, patch % 4
    for i in range(n):
        images[i, 0, 4 * row[i]:4 * row[i] + 4, 4 * col[i]:4 * col[i] + 4] += 2.0
    vertical = torch.where(row < 2, WORDS["top"], WORDS["bottom"])
    horizontal = torch.where(col < 2, WORDS["left"], WORDS["right"])
    captions = torch.stack([torch.ones_like(patch), vertical, horizontal, torch.full_like(patch, 2)], dim=1)
    return images, patch, captions


@pytest.fixture(scope="module")
def grounded() -> Captioner:
    """A tiny captioner trained for 300 steps (about 2 s on CPU) to name the square's quadrant.

    No encoder layers and one decoder layer: its query at each word does not depend on the image, and a linear
    patch embedding averaged uniformly cannot tell where the square is, so the only way to name the quadrant is to
    attend to the square's patch -- the answer the grounding test expects. (Encoder layers may first move the
    square's information to other patches, and then the peak may lie anywhere.)
    """
    torch.manual_seed(0)
    config = CaptionerConfig(image_size=16, patch_size=4, d_model=32, num_heads=2, ffn_dim=64, encoder_layers=0,
                             decoder_layers=1, dropout=0.0, max_len=4)
    model = Captioner(config, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    # One thread: tensors this small gain nothing from more, and on a busy machine more threads were 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(300):
            images, _, captions = _square_scenes(32, g)
            logits = model(images, torch.full((32,), 16), captions[:, :-1]).logits  # (32, 3, 8)
            loss = F.cross_entropy(logits.flatten(0, 1), captions[:, 1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.slow  # trains the 300-step `grounded` fixture
def test_learns_the_quadrant_and_attends_to_the_square(grounded: Captioner) -> None:
    images, patch, captions = _square_scenes(64, torch.Generator().manual_seed(99))
    hyps = greedy_decode(grounded, images, torch.full((64,), 16), max_len=4, return_attention=True)
    correct = [h.tokens == captions[i, 1:3].tolist() and h.ended for i, h in enumerate(hyps)]
    assert sum(correct) >= 62
    # Rows 0 and 1 of cross_attention belong to the two words; each should peak on the square's patch.
    peaks = torch.stack([h.cross_attention[:2].argmax(-1) for h in hyps])  # (64, 2)
    assert (peaks == patch.unsqueeze(1)).all(dim=1).sum() >= 62


@pytest.mark.slow  # trains the 300-step `grounded` fixture
def test_beam_search_agrees_with_greedy_on_the_trained_model(grounded: Captioner) -> None:
    images, _, _ = _square_scenes(8, torch.Generator().manual_seed(5))
    lens = torch.full((8,), 16)
    greedy = greedy_decode(grounded, images, lens, max_len=4, length_penalty=0.0, return_attention=True)
    one = beam_search(grounded, images, lens, beam_size=1, max_len=4, length_penalty=0.0, return_attention=True)
    for g, (b,) in zip(greedy, one, strict=True):
        assert (b.tokens, b.ended) == (g.tokens, g.ended) and b.score == pytest.approx(g.score, abs=1e-6)
        assert g.cross_attention.shape == (3, 16)  # two words and <eos>, over 16 patches
        torch.testing.assert_close(b.cross_attention, g.cross_attention, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------- config, build


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"image_size": 64, "patch_size": 5}, r"CaptionerConfig\.patch_size: got 5, expected a divisor of image_size=64"),
    ({"d_model": 30, "num_heads": 4}, r"CaptionerConfig\.d_model: got 30, expected a multiple of num_heads=4"),
    ({"encoder_layers": -1}, r"CaptionerConfig\.encoder_layers: got -1"),
    ({"decoder_layers": 0}, r"CaptionerConfig\.decoder_layers: got 0"),
    ({"dropout": 1.0}, r"CaptionerConfig\.dropout: got 1\.0"),
    ({"tie_embeddings": "yes"}, r"CaptionerConfig\.tie_embeddings: expected bool"),
])
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CaptionerConfig(**kwargs)


def test_build_model_from_a_saved_config() -> None:
    config = CaptionerConfig(**SMALL)
    saved = json.loads(json.dumps(to_dict(config)))
    assert saved["kind"] == "captioner"
    torch.manual_seed(0)
    model = build_model(saved, tgt_vocab_size=V)
    assert isinstance(model, Captioner) and model.config == config and model.output.out_features == V
    rebuilt = build_model(config, 999, V).eval()  # src_vocab_size is accepted and ignored
    rebuilt.load_state_dict(model.state_dict())
    images, lens, tgt = _batch(8, 2, 3)
    torch.testing.assert_close(rebuilt(images, lens, tgt).logits, model.eval()(images, lens, tgt).logits)
    assert isinstance(build_model(CaptionerConfig(), 10, 10), Captioner)  # the defaults build
    with pytest.raises(ConfigError, match="needs tgt_vocab_size"):
        build_model(config)


def test_conv_stem_vectors_see_only_their_neighbourhood() -> None:
    """The conv stem's vector of patch j (pixels 4j..4j+3 with P = 4) depends on pixels 4j-4..4j+4 (a window of
    2P + 1) and on nothing else, so attention over the vectors still points at image regions."""
    from attnlab.models.captioner import ConvStem

    torch.manual_seed(0)
    stem = ConvStem(1, 16, 4).double()
    images = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    base = stem(images)  # (1, 64, 16)
    assert base.shape == (1, 64, 16)
    changed = images.clone()
    changed[0, 0, 28, 28] += 5.0  # the first pixel of the bottom-right patch (row 7, column 7)
    moved = (stem(changed) - base).abs().amax(-1)[0].reshape(8, 8)  # (8, 8) change of each patch's vector
    assert moved[7, 7] > 0 and moved[6, 6] > 0  # its own patch and the neighbour whose window reaches it
    assert (moved[:6] == 0).all() and (moved[:, :6] == 0).all()  # every other patch is untouched


def test_conv_stem_blocks_widen_the_window_by_three_patches_each_way() -> None:
    """Without blocks, the first pixel of patch (7, 7) (pixel 28) reaches the vectors of patches 6..8 in each
    direction (patch j reads pixels 4j-4..4j+4, above); one ConvNeXt block (depthwise 7x7 on the patch grid)
    widens that by 3 patches each way, to 3..11, and nothing farther. A new block is the identity (its last
    projection starts at zero), so it is first perturbed to make it count."""
    from attnlab.models.captioner import ConvStem

    torch.manual_seed(0)
    stem = ConvStem(1, 16, 4, blocks=1).double()
    for p in stem.layers[-2].project.parameters():
        torch.nn.init.normal_(p, std=0.1)
    images = torch.randn(1, 1, 64, 64, dtype=torch.float64)
    changed = images.clone()
    changed[0, 0, 28, 28] += 5.0  # the first pixel of patch (7, 7)
    moved = (stem(changed) - stem(images)).abs().amax(-1)[0].reshape(16, 16)
    assert (moved[3:12, 3:12] > 0).all()
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[3:12, 3:12] = False
    assert (moved[outside] == 0).all()


def test_conv_stem_blocks_need_the_conv_stem() -> None:
    with pytest.raises(ConfigError, match="stem_blocks"):
        CaptionerConfig(stem="linear", stem_blocks=1)
    assert CaptionerConfig(stem="conv", patch_size=4, stem_blocks=2).stem_blocks == 2


def test_conv_stem_needs_a_power_of_two_patch() -> None:
    with pytest.raises(ConfigError, match="power of 2"):
        CaptionerConfig(stem="conv", image_size=60, patch_size=6)
    assert CaptionerConfig(stem="conv", patch_size=4).stem == "conv"


def test_gru_decoder_steps_equal_the_teacher_forced_pass_and_decode() -> None:
    """The Show-Attend-Tell decoder (``decoder: gru``): one attention distribution per word, cached steps equal
    the teacher-forced pass in float64, greedy equals beam 1, and the attention rows are distributions."""
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(image_size=32, patch_size=8, d_model=16, num_heads=2, ffn_dim=16,
                                      encoder_layers=1, decoder="gru", dropout=0.0), 12).double().eval()
    images = torch.randn(3, 1, 32, 32, dtype=torch.float64)
    lens = torch.full((3,), 16)
    tgt = torch.randint(4, 12, (3, 5))
    tgt[:, 0] = 1
    out = model(images, lens, tgt, need_weights=True)
    assert out.attention.cross.shape == (1, 3, 1, 5, 16)
    assert torch.allclose(out.attention.cross.sum(-1), torch.ones((), dtype=torch.float64))
    state, steps = model.encode(images, lens), []
    for t in range(5):
        step = model.decode_step(tgt[:, t], state, need_weights=True)
        assert torch.allclose(step.cross_weights, out.attention.cross[0, :, 0, t])
        state = step.state
        steps.append(step.logits)
    assert torch.allclose(torch.stack(steps, dim=1), out.logits, atol=1e-12)
    greedy = greedy_decode(model, images, lens, max_len=6, return_attention=True)
    beam = beam_search(model, images, lens, beam_size=1, max_len=6, return_attention=True)
    assert [h.tokens for h in greedy] == [n[0].tokens for n in beam]
    assert greedy[0].cross_attention.shape[1] == 16


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_loss_equals_the_full_logits_loss(tie: bool) -> None:
    """The Transformer-decoder captioner hands its states to the chunked loss: same loss and gradients (float32)."""
    from attnlab.core.types import Batch
    from attnlab.train.loss import teacher_forced_loss

    images, lens, tgt = _batch(3, 3, 7)
    tgt_out = torch.cat([tgt[:, 1:], torch.full((3, 1), 2)], dim=1)
    tgt_out[0, 4:] = 0  # padding: neither projected nor scored
    batch = Batch(images, lens, tgt, tgt_out, (tgt_out != 0).sum(1), torch.arange(3))
    results = []
    for chunk in (None, 4):  # full logits, then chunks of 4 target tokens
        model = _model(tie_embeddings=tie).train()
        loss, count = teacher_forced_loss(model, batch, label_smoothing=0.1, chunk_tokens=chunk)
        loss.backward()
        results.append((loss.detach(), count, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full, n_full, g_full), (chunked, n_chunked, g_chunked) = results
    assert n_full == n_chunked == int((tgt_out != 0).sum())
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-5)
    for name in g_full:
        torch.testing.assert_close(g_chunked[name], g_full[name], rtol=1e-5, atol=1e-6, msg=name)
    assert _model(decoder="gru").output_projection() is None
    with pytest.raises(ValueError, match="project=False needs the Transformer decoder"):
        _model(decoder="gru")(images, lens, tgt, project=False)
