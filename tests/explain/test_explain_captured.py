"""Explaining foreign models through ``attnlab.capture``: an ``nn.TransformerEncoder`` classifier, a Hugging Face
BERT classifier and ViT, all tiny and random (no download), checked against their own attention and oracles."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlab.explain
from attnlab.core.errors import ConfigError, DataError
from attnlab.explain import (
    ATTRIBUTION_METHODS,
    METHODS,
    Adapter,
    CapturedClassifierAdapter,
    CapturedTranslationAdapter,
    CapturedViTAdapter,
    Example,
    attribute,
    encoder_decoder_relevance,
    explain,
    explain_batch,
    ranking,
)
from attnlab.viz.capture import attention_grads, capture

transformers = pytest.importorskip("transformers")

VOCAB, PAD, UNK, KEYWORD = 20, 0, 1, 7


class EncoderClassifier(nn.Module):
    """Token embedding + learned positions -> ``nn.TransformerEncoder`` (post-LN) -> pooling -> linear."""

    def __init__(self, pooling: str | int, classes: int = 3, layers: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16, padding_idx=PAD)
        self.positions = nn.Parameter(0.1 * torch.randn(32, 16))
        # gelu: a smooth model, so a few integration steps are accurate (IG converges slowly over relu's kinks)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(16, classes)
        self.pooling = pooling

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(1) if self.pooling == "mean" else h[:, 0 if self.pooling == "cls" else self.pooling]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.encoder(self.embedding(ids) + self.positions[:ids.shape[1]])))


def _by_hand(model: EncoderClassifier, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The same forward written out, with each layer's softmax weights ``(1, H, T, T)`` as tensors we hold."""
    x = model.embedding(ids) + model.positions[:ids.shape[1]]  # (1, T, D)
    weights = []
    for layer in model.encoder.layers:
        attn = layer.self_attn
        H, (B, T, D) = attn.num_heads, x.shape
        q, k, v = (t.reshape(B, T, H, D // H).transpose(1, 2)  # (B, H, T, Dh)
                   for t in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1)  # (B, H, T, T)
        weights.append(a)
        x = layer.norm1(x + attn.out_proj((a @ v).transpose(1, 2).reshape(B, T, D)))
        x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))
    return weights, model.head(model.pool(x))


@contextmanager
def _eager(model: nn.Module) -> Iterator[None]:
    old = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(old)


def _hf_oracle(model: nn.Module) -> Callable[[torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]:
    def run(inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with _eager(model):
            out = model(inputs, output_attentions=True)
        return list(out.attentions), out.logits

    return run


@dataclass
class Case:
    adapter: Adapter
    examples: list[Example]
    oracle: Callable[[torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]  # inputs -> (weights, logits)
    read: str | int  # the read-out over the last layer's positions
    skip: int = 0  # leading positions that are not explained (a ViT's class token)

    @property
    def example(self) -> Example:
        return self.examples[0]


def _torch_case(readout: str | int) -> Case:
    torch.manual_seed(0)
    model = EncoderClassifier(readout).eval()
    adapter = CapturedClassifierAdapter(model, remove_id=UNK, readout=readout)  # baseline: padding_idx
    examples = [adapter.example_from_ids(torch.tensor([ids])) for ids in ([2, 5, 9, 13, 4, 17], [2, 8, 3, 11])]
    return Case(adapter, examples, lambda ids: _by_hand(model, ids), readout)


def bert_classifier(**config: object) -> nn.Module:
    torch.manual_seed(0)
    # initializer_range 0.3 (not 0.02): attention and logits far enough from uniform to be worth explaining
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, initializer_range=0.3,
                                  **config)
    return transformers.BertForSequenceClassification(cfg).eval()


def _bert_case() -> Case:
    model = bert_classifier()
    adapter = CapturedClassifierAdapter(model, remove_id=4)  # pad 0 from the config; "cls" read-out by default
    examples = [adapter.example_from_ids(torch.tensor([ids])) for ids in ([1, 12, 30, 7, 41, 2], [1, 9, 18, 2])]
    return Case(adapter, examples, _hf_oracle(model), "cls")


def _vit_case() -> Case:
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=12, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, num_labels=3, initializer_range=0.3)
    model = transformers.ViTForImageClassification(cfg).eval()
    adapter = CapturedViTAdapter(model)
    g = torch.Generator().manual_seed(1)
    examples = [adapter.example_from_tensor(torch.randn(1, 1, 12, 12, generator=g)) for _ in range(2)]
    return Case(adapter, examples, _hf_oracle(model), "cls", skip=1)


CASES = {"torch-mean": lambda: _torch_case("mean"), "torch-cls": lambda: _torch_case("cls"),
         "torch-pos2": lambda: _torch_case(2), "bert": _bert_case, "vit": _vit_case}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]()


def _read(matrix: torch.Tensor, read: str | int) -> torch.Tensor:
    """``(T,)``: row ``read`` of a ``(T, T)`` matrix, or its mean over rows (mean pooling)."""
    return matrix.mean(0) if read == "mean" else matrix[0 if read == "cls" else read]


def _log_prob(case: Case, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        return float(case.adapter.log_probs(inputs)[0, int(case.example.target)])


# ------------------------------------------------------------------------------------------- every method
def test_every_method_runs_with_finite_scores_of_the_right_shapes(case: Case) -> None:
    e = explain(case.adapter, case.example, ig_steps=8)
    T = case.example.num_positions
    assert list(e.scores) == list(METHODS)
    for method, scores in e.scores.items():
        assert scores.shape == (T,) and scores.dtype == torch.float64, method
        assert bool(torch.isfinite(scores).all()), method
    assert e.heads.shape == (2, 2, T)  # (L, H, T)
    explanations, report = explain_batch(case.adapter, case.examples, ig_steps=8, max_k=3)
    assert [x.scores["leave_one_out"].shape for x in explanations] == [(x.num_positions,) for x in case.examples]
    assert report.n == 2 and report.methods == list(METHODS) and report.checks == {}
    assert "not available for captured models" in report.unavailable["uniform/permuted attention"]
    assert "uniform/permuted attention: not available for captured models" in report.table()
    assert all(math.isfinite(report.curves[m]["comprehensiveness_aopc"]) for m in report.methods)


def test_attention_is_the_models_own_attention_at_the_read_out(case: Case) -> None:
    """``attention`` and the per-head view equal the weights the model reports itself (HF: ``output_attentions``
    under eager attention; torch: the softmax of a hand-written forward that gives the model's logits)."""
    with torch.no_grad():
        weights, logits = case.oracle(case.example.inputs)
        torch.testing.assert_close(logits, case.adapter.forward(case.example.inputs))
    stack = torch.stack([w[0] for w in weights]).double()  # (L, H, T, T)
    out = case.adapter.attention_importance(case.example)
    torch.testing.assert_close(out.scores["attention"], _read(stack[-1].mean(0), case.read)[case.skip:])
    for layer in range(stack.shape[0]):
        for head in range(stack.shape[1]):
            torch.testing.assert_close(out.heads[layer, head], _read(stack[layer, head], case.read)[case.skip:])


def test_grad_rollout_equals_an_autograd_oracle(case: Case) -> None:
    """Chefer et al.'s rule written out: R = I; R <- R + E_h[(dlogp/dA * A)^+] R, layer by layer."""
    with torch.enable_grad():
        weights, logits = case.oracle(case.example.inputs)
        logp = F.log_softmax(logits.float(), -1)[0, int(case.example.target)]
        grads = torch.autograd.grad(logp, weights)
    weights = [w.detach() for w in weights]
    T = weights[0].shape[-1]
    relevance = torch.eye(T, dtype=torch.float64)
    for a, g in zip(weights, grads, strict=True):
        bar = (a[0].double() * g[0].double()).clamp_min(0).mean(0)  # (T, T)
        assert float(bar.abs().sum()) > 0  # a real gradient, not the trivial case
        relevance = relevance + bar @ relevance
    got = case.adapter.attention_importance(case.example, ["grad_rollout"]).scores["grad_rollout"]
    torch.testing.assert_close(got, _read(relevance, case.read)[case.skip:], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("readout", ["cls", "mean", 2])
def test_grad_rollout_is_the_identity_read_out_when_the_gradient_is_zero(readout: str | int) -> None:
    """A head that ignores its input (weight 0): no gradient reaches any attention, only the identity is left."""
    c = _torch_case(readout)
    with torch.no_grad():
        c.adapter.model.head.weight.zero_()
    got = c.adapter.attention_importance(c.example, ["grad_rollout"]).scores["grad_rollout"]
    torch.testing.assert_close(got, _read(torch.eye(c.example.num_positions, dtype=torch.float64), readout))


def test_grad_rollout_of_a_bert_with_a_zero_classifier_is_the_class_token() -> None:
    model = bert_classifier()
    with torch.no_grad():
        model.classifier.weight.zero_()
    adapter = CapturedClassifierAdapter(model, remove_id=4)
    got = adapter.attention_importance(adapter.example_from_ids(torch.tensor([[1, 5, 6, 2]])), ["grad_rollout"])
    torch.testing.assert_close(got.scores["grad_rollout"], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))


# -------------------------------------------------------------------------------------------- attribution
@pytest.mark.parametrize("name", ["torch-cls", "bert", "vit"])
def test_integrated_gradients_is_complete(name: str) -> None:
    """Sum of attributions = log p(x) - log p(baseline) (all <pad> ids; a 0 image), within 2e-3 with 64 steps."""
    c = CASES[name]()
    ig = attribute(c.adapter, c.example, ["integrated_gradients"], ig_steps=64)["integrated_gradients"]
    want = _log_prob(c, c.example.inputs) - _log_prob(c, c.adapter.ig_baseline(c.example))
    assert abs(want) > 0.02  # not trivially zero
    assert float(ig.sum()) == pytest.approx(want, abs=2e-3)


@pytest.mark.parametrize("name", ["torch-mean", "bert", "vit"])
def test_leave_one_out_equals_a_loop(name: str) -> None:
    c = CASES[name]()
    ex = c.example
    loo = attribute(c.adapter, ex, ["leave_one_out"])["leave_one_out"]
    full, want = _log_prob(c, ex.inputs), []
    for i in range(ex.num_positions):
        changed = ex.inputs.clone()
        if ex.grid is None:
            changed[0, i] = c.adapter.remove_id  # the token -> [MASK] / <unk>
        else:
            r, col = divmod(i, ex.grid[1])
            changed[..., 4 * r:4 * r + 4, 4 * col:4 * col + 4] = 0.0  # the patch -> the normalization's mean
        want.append(full - _log_prob(c, changed))
    assert max(abs(w) for w in want) > 1e-3
    torch.testing.assert_close(loo, torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def keyword_model() -> EncoderClassifier:
    """The torch-encoder classifier trained (about a second on one thread) so that one keyword decides: the
    label is 1 exactly when token ``KEYWORD`` is present, anywhere; every other token is random noise."""
    torch.manual_seed(1)
    model = EncoderClassifier("mean", classes=2)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        ids = torch.randint(2, VOCAB, (32, 6), generator=g)
        ids[ids == KEYWORD] = 4
        y = torch.randint(0, 2, (32,), generator=g)
        where = torch.randint(0, 6, (32,), generator=g)
        ids[y == 1, where[y == 1]] = KEYWORD
        loss = F.cross_entropy(model(ids), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("position", [0, 3, 5])
def test_every_attribution_method_ranks_the_deciding_token_first(keyword_model, position: int) -> None:
    adapter = CapturedClassifierAdapter(keyword_model, remove_id=UNK, readout="mean", labels=["no", "yes"])
    ids = [9, 12, 5, 3, 16, 11]
    assert adapter.example_from_ids(torch.tensor([ids])).prediction == "no"
    ids[position] = KEYWORD
    example = adapter.example_from_ids(torch.tensor([ids]))
    assert example.prediction == "yes" and example.probability > 0.9
    e = explain(adapter, example, ATTRIBUTION_METHODS)
    for method in ATTRIBUTION_METHODS:
        assert int(ranking(e.scores[method])[0]) == position, method
    # Removing the keyword alone takes the "yes" away: leave-one-out's top entry is most of the probability.
    assert math.exp(float(e.scores["leave_one_out"][position])) > 10


# -------------------------------------------------------------------------------------------- translation
def marian(**config: object) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(vocab_size=30, d_model=16, encoder_layers=2, decoder_layers=2,
                                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0, eos_token_id=2,
                                    decoder_start_token_id=0, forced_eos_token_id=None, init_std=0.3,
                                    activation_function="gelu", **config)
    return transformers.MarianMTModel(cfg).eval()


@pytest.fixture
def translation() -> tuple[CapturedTranslationAdapter, Example]:
    adapter = CapturedTranslationAdapter(marian(), remove_id=1, max_new_tokens=4)  # pad 0 from the config
    return adapter, adapter.example_from_ids(torch.tensor([[5, 6, 7, 8, 2]]))


def test_translation_rows_are_the_greedy_tokens_and_every_method_runs(translation) -> None:
    adapter, ex = translation
    Tt, Ts = len(ex.target), 5
    assert 1 <= Tt <= 4 and ex.output_tokens == [str(i) for i in ex.target.tolist()]
    with torch.no_grad():  # the model's own greedy output: each token is the argmax given the ones before
        logp = adapter._all_log_probs(ex.inputs, adapter._tgt_in(ex.target))[0]  # (Tt, V)
    assert logp.argmax(-1).tolist() == ex.target.tolist()
    assert ex.probability == pytest.approx(float(logp.max(-1).values.exp().mean()), abs=1e-6)
    e = explain(adapter, ex, ig_steps=8)
    assert list(e.scores) == list(METHODS) and e.heads.shape == (2, 2, Tt, Ts)
    assert all(s.shape == (Tt, Ts) and bool(torch.isfinite(s).all()) for s in e.scores.values())
    _, report = explain_batch(adapter, [ex], ig_steps=8, max_k=2)
    assert report.methods == list(METHODS) and report.unavailable == {} and report.checks == {}


def test_translation_attention_and_grad_rollout_equal_oracles(translation) -> None:
    """``attention`` is the last decoder layer's cross-attention (HF's ``output_attentions``), ``grad_rollout``
    the encoder-decoder rule fed with HF's maps and their autograd gradients for each generated token."""
    adapter, ex = translation
    model, tgt_in = adapter.model, adapter._tgt_in(ex.target)
    with _eager(model), torch.enable_grad():
        out = model(input_ids=ex.inputs, decoder_input_ids=tgt_in, output_attentions=True, use_cache=False)
        maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
        picked = F.log_softmax(out.logits, -1)[0].gather(-1, ex.target[:, None])[:, 0]  # (Tt,)
        per_token = [torch.autograd.grad(picked[t], maps, retain_graph=True) for t in range(len(picked))]
    w = [m[0].detach().double() for m in maps]
    rows = []
    for t, grads in enumerate(per_token):
        pairs = list(zip(w, [g[0].double() for g in grads], strict=True))
        rows.append(encoder_decoder_relevance(pairs[:2], pairs[2:4], pairs[4:])[t])
    got = adapter.attention_importance(ex)
    torch.testing.assert_close(got.scores["attention"], w[-1].mean(0))
    torch.testing.assert_close(got.heads, torch.stack(w[4:]))
    torch.testing.assert_close(got.scores["grad_rollout"], torch.stack(rows), rtol=1e-4, atol=1e-7)
    assert float(torch.stack(rows).sum()) > 0


def test_translation_integrated_gradients_and_leave_one_out_per_token(translation) -> None:
    adapter, ex = translation
    got = attribute(adapter, ex, ["integrated_gradients", "leave_one_out"], ig_steps=64)
    for (args, target), ig, loo in zip(adapter.steps(ex), got["integrated_gradients"], got["leave_one_out"],
                                       strict=True):
        with torch.no_grad():
            def logp(src: torch.Tensor, args: tuple = args, target: int = target) -> float:
                return float(adapter.log_probs(src, *args)[0, target])

            assert float(ig.sum()) == pytest.approx(logp(ex.inputs) - logp(adapter.ig_baseline(ex)), abs=2e-3)
            want = [logp(ex.inputs) - logp(ex.inputs.index_fill(1, torch.tensor([i]), 1)) for i in range(5)]
        torch.testing.assert_close(loo, torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    assert float(got["leave_one_out"].abs().max()) > 1e-3


def test_translation_of_a_text_through_the_tokenizer() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<unk>", "</s>"] + [f"w{i}" for i in range(27)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                     eos_token="</s>")
    adapter = CapturedTranslationAdapter(marian(), tokenizer=tokenizer, max_new_tokens=3)
    assert (adapter.remove_id, adapter.baseline_id, adapter.start_id) == (1, 0, 0)
    ex = adapter.example("w3 w4 w5 nope")
    assert ex.tokens == ["w3", "w4", "w5", "<unk>"] and ex.output_tokens == tokenizer.convert_ids_to_tokens(ex.target)
    assert ex.prediction == tokenizer.decode(ex.target.tolist(), skip_special_tokens=True)
    with pytest.raises(ConfigError, match=r"^model: BertForSequenceClassification is not a Hugging Face encoder-d"):
        CapturedTranslationAdapter(bert_classifier(), remove_id=1)


# ------------------------------------------------------------------------------------------------ capture
def test_default_capture_detaches_and_keep_graph_records_what_the_model_used() -> None:
    c = _torch_case("cls")
    model, ids = c.adapter.model, c.example.inputs
    with torch.enable_grad(), capture(model) as maps:
        model(ids)
    assert all(not r.weights.requires_grad and r.weights.grad_fn is None and r.weights.dtype == torch.float32
               for r in maps.calls)
    with pytest.raises(DataError, match="keep_graph=True"):
        attention_grads(torch.tensor(0.0, requires_grad=True), [maps.calls[0].weights])

    with torch.enable_grad(), capture(model, keep_graph=True) as maps:
        logp = F.log_softmax(model(ids), -1)[0, 1]
        recorded = [r.weights for r in maps.calls]
        # nn.MultiheadAttention hands out a view made after the product: autograd sees no path from it ...
        assert torch.autograd.grad(logp, recorded, retain_graph=True, allow_unused=True) == (None, None)
        grads = attention_grads(logp, recorded)  # ... attention_grads goes through the tensor it shows
    with torch.enable_grad():
        weights, logits = _by_hand(model, ids)
        want = torch.autograd.grad(F.log_softmax(logits, -1)[0, 1], weights)
    for got, w in zip(grads, want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-7)
        assert float(w.abs().sum()) > 0


def test_keep_graph_weights_of_a_hugging_face_model_take_gradients_directly() -> None:
    model = bert_classifier()
    ids = torch.tensor([[1, 12, 30, 7, 2]])
    with torch.enable_grad(), capture(model, keep_graph=True) as maps:
        logp = F.log_softmax(model(ids).logits, -1)[0, 0]
        direct = torch.autograd.grad(logp, [r.weights for r in maps.calls], retain_graph=True)
        helper = attention_grads(logp, [r.weights for r in maps.calls])
    assert model.config._attn_implementation == "sdpa"  # restored on exit
    weights, logits = _hf_oracle(model)(ids)
    want = torch.autograd.grad(F.log_softmax(logits, -1)[0, 0], weights)
    for d, h, w in zip(direct, helper, want, strict=True):
        torch.testing.assert_close(d, w)
        torch.testing.assert_close(h, w)


# ------------------------------------------------------------------------------------- inputs and errors
def _bert_tokenizer() -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "dull", "film"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                  ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                mask_token="[MASK]", cls_token="[CLS]", sep_token="[SEP]")


def test_text_through_a_tokenizer_with_its_defaults() -> None:
    model = bert_classifier(id2label={0: "negative", 1: "positive"})
    adapter = CapturedClassifierAdapter(model, tokenizer=_bert_tokenizer(), max_len=4)
    assert (adapter.remove_id, adapter.baseline_id, adapter.labels) == (4, 0, ["negative", "positive"])
    example = adapter.example("a good dull film", truth="positive")
    assert example.tokens == ["[CLS]", "a", "good", "[SEP]"]  # cut to max_len, special tokens kept
    assert example.inputs.tolist() == [[2, 5, 6, 3]] and example.prediction in ("negative", "positive")
    assert adapter.remove(example, torch.tensor([[False, True, False, False]])).tolist() == [[2, 4, 6, 3]]


def test_vit_example_from_pixels_through_an_image_processor() -> None:
    import numpy as np

    c = _vit_case()
    c.adapter.processor = transformers.ViTImageProcessor(size={"height": 12, "width": 12}, image_mean=[0.5],
                                                         image_std=[0.5])
    pixels = np.random.default_rng(0).integers(0, 256, (1, 12, 12), dtype=np.uint8)
    example = c.adapter.example(pixels, name="noise")
    torch.testing.assert_close(example.inputs, torch.tensor(pixels, dtype=torch.float32)[None] / 127.5 - 1)
    assert example.grid == (3, 3) and example.tokens[4] == "patch 1,1" and example.text == "noise"


class _NoAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(1))


class _TwoEmbeddings(EncoderClassifier):
    def __init__(self) -> None:
        super().__init__("cls")
        self.segments = nn.Embedding(2, 16)


def _make(name: str) -> None:
    torch.manual_seed(0)
    model = EncoderClassifier("cls").eval()
    ids = torch.tensor([[2, 5, 9, 13, 4]])
    if name == "no attention":
        CapturedClassifierAdapter(_NoAttention(), remove_id=UNK)
    elif name == "readout kind":
        CapturedClassifierAdapter(model, remove_id=UNK, readout="last")
    elif name == "readout range":
        adapter = CapturedClassifierAdapter(model, remove_id=UNK, readout=7)
        adapter.attention_importance(adapter.example_from_ids(ids))
    elif name == "no remove id":
        CapturedClassifierAdapter(model)
    elif name == "remove id range":
        CapturedClassifierAdapter(model, remove_id=VOCAB)
    elif name == "two embeddings":
        CapturedClassifierAdapter(_TwoEmbeddings(), remove_id=UNK)
    elif name == "foreign embedding":
        CapturedClassifierAdapter(model, remove_id=UNK, embedding=nn.Embedding(VOCAB, 16))
    elif name == "forward shape":
        CapturedClassifierAdapter(model, remove_id=UNK, forward=lambda x: model(x)[0]).example_from_ids(ids)
    elif name == "hf without logits":
        CapturedClassifierAdapter(bert_classifier().bert, remove_id=4).example_from_ids(ids)
    elif name == "ids range":
        CapturedClassifierAdapter(model, remove_id=UNK).example_from_ids(torch.tensor([[2, 5, VOCAB]]))
    elif name == "no tokenizer":
        CapturedClassifierAdapter(model, remove_id=UNK).example("a film")


@pytest.mark.parametrize(("name", "error", "message"), [
    ("no attention", ConfigError, r"^model: attnlab\.capture finds no attention layer in _NoAttention"),
    ("readout kind", ConfigError, r"^readout must be 'cls', 'mean' or a position"),
    ("readout range", DataError, r"^readout 7 is out of range for 5 positions"),
    ("no remove id", ConfigError, r"^remove_id: give the token id that removes a token"),
    ("remove id range", ConfigError, r"^remove_id must be a token id in \[0, 20\)"),
    ("two embeddings", ConfigError, r"^embedding: _TwoEmbeddings holds 2 nn\.Embedding modules"),
    ("foreign embedding", ConfigError, r"^embedding: expected a module of the model"),
    ("forward shape", ConfigError, r"^forward must map \(B, T\) ids to \(B, C\) logits"),
    ("hf without logits", ConfigError, r"^forward: BertModel returns no \.logits"),
    ("ids range", DataError, r"^ids must be in \[0, 20\)"),
    ("no tokenizer", ConfigError, r"^tokenizer: this adapter has none"),
])
def test_bad_input_is_one_line_naming_the_argument(name: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        _make(name)
    assert "\n" not in str(info.value)


def test_the_package_docstring_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = attnlab.explain.__doc__
    block = re.search(r"through ``attnlab\.capture``.*?::\n\n(.*?)(?:\n\n(?! )|\Z)", doc, re.S).group(1)
    exec(compile(textwrap.dedent(block), "attnlab.explain docstring", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert "integrated_gradients" in out and "not available for captured models" in out
