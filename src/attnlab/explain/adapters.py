"""One interface over attnlab's models for explanation: inputs, the explained output, perturbation, attention.

An :class:`Adapter` knows, for its model family, how to

* turn a text or an image into an :class:`Example` (the model's prediction included: that is what is explained);
* score inputs: ``log_probs`` (what gradient methods differentiate: the log-probability of the explained class or
  generated token) and ``score`` (the probability of the explained output, for perturbation curves);
* remove positions (``remove``): text tokens become ``<unk>`` (id 3; the length and the positions of the other
  tokens stay), image patches become 0 in the model's normalized input, i.e. the training images' mean gray
  level (the "mean patch");
* record every attention map together with its gradient (``record``), through the attention modules' weights
  hooks, and read out the attention-based importances.

Families: :class:`TextClassifierAdapter` (``RNNAttentionClassifier``: its pooling attention is the attention;
``TransformerClassifier``: self-attention layers, then pooling), :class:`ViTAdapter` (``VisionTransformer``:
patches, read out at the class token), :class:`TranslationAdapter` (the ``Transformer`` encoder-decoder: one
row per generated token, teacher-forced on the model's own greedy output) and :class:`RecurrentTranslationAdapter`
(the GRU/LSTM ``Seq2Seq`` with Bahdanau attention, the same rows). :func:`adapter_for` picks one for a
predictor loaded by ``attnlab.pipeline.load_predictor``. Models attnlab did not build (``nn.TransformerEncoder``,
Hugging Face): :mod:`attnlab.explain.captured`.

Dimension legend: ``B`` batch, ``T`` positions explained, ``L`` layers, ``H`` heads, ``Q`` pooling queries,
``Tt``/``Ts`` target/source positions, ``C`` classes, ``S`` image side, ``N`` patches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.vocab import BOS_ID, EOS_ID, UNK_ID
from attnlab.explain.relevance import (
    attention_methods,
    encoder_decoder_relevance,
    gradient_rollout,
    gradient_weighted,
    head_readouts,
)

ATTENTION_METHODS = ("attention", "rollout", "flow", "grad_rollout")
"""Attention-based importances (:mod:`attnlab.explain.relevance`)."""


@dataclass
class Example:
    """One input, prepared for explanation, with the model's own prediction (the explained output).

    Attributes:
        inputs: ``(1, T)`` token ids, ``(1, C, S, S)`` normalized image, or ``(1, Ts)`` source ids.
        tokens: one label per explained position (tokens, or ``"patch r,c"``).
        target: the predicted class ``()``, or the generated ids ``(Tt,)`` (``<eos>`` last when decoding ended).
        prediction: the predicted label, or the generated text.
        probability: the probability of the prediction (translation: the mean over generated tokens).
        text, truth: the input text and the gold label/reference, when known.
        pixels: the image as uint8 ``(C, S, S)``, for pages.
        output_tokens: generated tokens (translation), one per row of the importances.
        grid: ``(rows, cols)`` of the patches (images).
    """

    inputs: torch.Tensor
    tokens: list[str]
    target: torch.Tensor
    prediction: str
    probability: float
    text: str | None = None
    truth: str | None = None
    pixels: np.ndarray | None = None
    output_tokens: list[str] | None = None
    grid: tuple[int, int] | None = None

    @property
    def num_positions(self) -> int:
        return len(self.tokens)


@dataclass
class AttentionImportance:
    """What :meth:`Adapter.attention_importance` returns for one example.

    Attributes:
        scores: method name -> ``(T,)`` (translation: ``(Tt, Ts)``) float64.
        heads: ``(L, H, T)`` (translation: ``(L, H, Tt, Ts)``) the raw attention of each layer and head as the
            read-out sees it (see :func:`attnlab.explain.relevance.head_readouts`), or ``None``.
    """

    scores: dict[str, torch.Tensor]
    heads: torch.Tensor | None = None


@dataclass
class _Recorded:
    """Attention maps of one forward pass in call order, still attached to the autograd graph."""

    weights: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (module name, (1, H|Q, Tq, Tk))


@contextmanager
def recording(modules: Sequence[tuple[str, nn.Module]]) -> Iterator[_Recorded]:
    """Keep every weights tensor the named attention modules use while the block runs (weights hooks)."""
    rec = _Recorded()
    handles = []
    try:
        for name, module in modules:
            def keep(mod: nn.Module, weights: torch.Tensor, name: str = name) -> None:
                rec.weights.append((name, weights))

            handles.append(module.register_weights_hook(keep))
        yield rec
    finally:
        for handle in handles:
            handle.remove()


def _requires_grad_hook(layer: nn.Module) -> Any:
    """Make ``layer``'s output a leaf that requires grad when the parameters do not (frozen models)."""
    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        return None if out.requires_grad else out.detach().requires_grad_(True)

    return layer.register_forward_hook(hook)


class Adapter:
    """Base class; see the module docstring. Subclasses set ``kind`` and ``layer`` and implement the methods."""

    kind: str = ""
    occlusion_baseline: int | float = 0
    checks_note: str | None = None
    """Why the uniform/permuted attention checks cannot run on this model, or ``None`` where they can."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        self.device = next(model.parameters(), torch.empty(0)).device  # inputs go here; results come back on CPU

    # ----------------------------------------------------------------------------- for attribution
    @property
    def layer(self) -> nn.Module:
        """The module whose output (or input, see ``to_layer_input``) gradient methods attribute to."""
        raise NotImplementedError

    to_layer_input = False

    def forward_args(self, example: Example) -> tuple:
        """Extra arguments of :meth:`log_probs` after the inputs."""
        return ()

    def log_probs(self, inputs: torch.Tensor, *args: Any) -> torch.Tensor:
        """``(B, C)`` log-probabilities of the classes (translation: of the vocabulary at one step)."""
        raise NotImplementedError

    def ig_baseline(self, example: Example) -> torch.Tensor:
        """The integrated-gradients baseline in input space (all ``<pad>``: zero embeddings; a mean-gray image)."""
        return torch.zeros_like(example.inputs)

    def feature_mask(self, example: Example) -> torch.Tensor | None:
        """Groups of input elements removed together by leave-one-out (``None``: each element alone)."""
        return None

    def positions_of(self, attribution: torch.Tensor, example: Example) -> torch.Tensor:
        """``(T,)`` one value per explained position from an input-shaped attribution (leave-one-out)."""
        return attribution.reshape(-1)

    def steps(self, example: Example) -> list[tuple[tuple, int]]:
        """``[(forward_args, target)]``: one explained output per entry (a translation: one per generated token)."""
        return [(self.forward_args(example), int(example.target))]

    # ------------------------------------------------------------------------------ perturbation
    def remove(self, example: Example, drop: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` copies of the inputs with the positions ``drop`` ``(B, T)`` removed."""
        raise NotImplementedError

    def score(self, inputs: torch.Tensor, example: Example) -> torch.Tensor:
        """``(B,)`` probability of the example's explained output for each row of ``inputs``."""
        with torch.no_grad():
            return self.log_probs(inputs, *self._expand(self.forward_args(example), len(inputs)))[
                :, int(example.target)].exp()

    @staticmethod
    def _expand(args: tuple, batch: int) -> tuple:
        return tuple(a.expand(batch, *a.shape[1:]) if isinstance(a, torch.Tensor) else a for a in args)

    # --------------------------------------------------------------------------------- attention
    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        raise NotImplementedError

    def pooling_module(self) -> nn.Module | None:
        """The attention-pooling module whose weights the uniform/permuted checks replace, if any."""
        return None

    def attention_layers(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of every self-attention layer (checks and gradient rollout), first layer first."""
        return []


def _self_attention_modules(layers: nn.ModuleList, prefix: str) -> list[tuple[str, nn.Module]]:
    return [(f"{prefix}.{i}.self_attn", layer.self_attn) for i, layer in enumerate(layers)]


def _on_cpu(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().cpu() for t in tensors]


def _grads(output: torch.Tensor, tensors: list[torch.Tensor], retain: bool = False) -> list[torch.Tensor]:
    grads = torch.autograd.grad(output, tensors, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)]


# -------------------------------------------------------------------------------------- classifiers
class TextClassifierAdapter(Adapter):
    """``RNNAttentionClassifier`` or ``TransformerClassifier`` with its tokenizer, vocabulary and labels.

    The read-out is the attention pooling, averaged over its queries: it is the ``attention`` importance itself;
    ``rollout`` and ``flow`` carry it down the self-attention layers (a Transformer classifier's; the RNN has none,
    so they are not defined there); ``grad_rollout`` weights the pooling like a layer, ``E_q[(∇P ⊙ P)^+] R``. The
    per-layer/head view (``heads``) is ``p A_{l,h}``.
    """

    kind = "text"
    occlusion_baseline = UNK_ID

    def __init__(self, model: nn.Module, text: Any = None, labels: Sequence[str] | None = None,
                 max_len: int | None = None) -> None:
        super().__init__(model)
        self.text = text
        self.labels = list(labels if labels is not None else (text.labels if text is not None else []))
        self.max_len = max_len

    @property
    def layer(self) -> nn.Module:
        return self.model.embedding

    def example(self, text: str, truth: str | None = None) -> Example:
        """Tokenize ``text`` (cut to ``max_len``) and classify it."""
        if self.text is None:
            raise ConfigError("this adapter has no tokenizer: build examples with example_from_ids")
        tokens = self.text.tokenizer.tokenize(text)[:self.max_len]
        if not tokens:
            raise DataError(f"the text {text[:80]!r} holds no token for this model")
        ids = torch.tensor([self.text.vocab.encode(tokens)], dtype=torch.int64)  # (1, T)
        return self.example_from_ids(ids, tokens, text=text, truth=truth)

    def example_from_ids(self, ids: torch.Tensor, tokens: Sequence[str] | None = None, *, text: str | None = None,
                         truth: str | None = None) -> Example:
        """An example from ``(1, T)`` ids with no padding."""
        ids = ids.reshape(1, -1).long().to(self.device)
        with torch.no_grad():
            probs = self.log_probs(ids).exp()[0]  # (C,)
        best = int(probs.argmax())
        label = self.labels[best] if best < len(self.labels) else str(best)
        tokens = list(tokens) if tokens is not None else [str(i) for i in ids[0].tolist()]
        return Example(ids, tokens, torch.tensor(best), label, float(probs[best]), text, truth)

    @staticmethod
    def _valid_lens(ids: torch.Tensor) -> torch.Tensor:
        return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.int64, device=ids.device)  # all real

    def log_probs(self, inputs: torch.Tensor, *args: Any) -> torch.Tensor:
        # Lengths are given, never derived from the ids: an all-<pad> baseline still has T real positions.
        return F.log_softmax(self.model(inputs, self._valid_lens(inputs)).logits.float(), dim=-1)  # (B, C)

    def remove(self, example: Example, drop: torch.Tensor) -> torch.Tensor:
        ids = example.inputs.expand(drop.shape[0], -1).clone()  # (B, T)
        ids[drop.to(ids.device)] = UNK_ID
        return ids

    def pooling_module(self) -> nn.Module:
        return self.model.pooling

    def attention_layers(self) -> list[tuple[str, nn.Module]]:
        layers = getattr(self.model, "layers", None)
        return _self_attention_modules(layers, "layers") if layers is not None else []

    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        layers = self.attention_layers()
        handle = _requires_grad_hook(self.layer)
        try:
            with torch.enable_grad(), recording([*layers, ("pooling", self.model.pooling)]) as rec:
                logp = self.log_probs(example.inputs, *self.forward_args(example))[0, int(example.target)]
                tensors = [w for _, w in rec.weights]
                grads = _grads(logp, tensors) if "grad_rollout" in methods else [torch.zeros_like(t) for t in tensors]
        finally:
            handle.remove()
        tensors, grads = _on_cpu(tensors), _on_cpu(grads)
        pool, pool_grad = tensors[-1][0], grads[-1][0]  # (Q, T)
        read = pool.double().mean(0)  # (T,): mean over pooling queries
        stack = torch.stack([w[0] for w in tensors[:-1]]) if layers else None  # (L, H, T, T)
        scores = attention_methods(stack, read, residual=residual, methods=methods)
        if "grad_rollout" in methods:
            relevance = (gradient_rollout([w[0] for w in tensors[:-1]], [g[0] for g in grads[:-1]])
                         if layers else torch.eye(read.shape[0], dtype=torch.float64))
            readout = gradient_weighted(pool.unsqueeze(1), pool_grad.unsqueeze(1))[0]  # (T,): Q as heads, Tq = 1
            scores["grad_rollout"] = readout @ relevance
        return AttentionImportance(_ordered(scores, methods), head_readouts(stack, read))


class ViTAdapter(Adapter):
    """``VisionTransformer``: patches are the positions; the class token (position 0) is the read-out."""

    kind = "image"
    occlusion_baseline = 0.0

    def __init__(self, model: nn.Module, pipeline: Any = None, patch_size: int | None = None) -> None:
        super().__init__(model)
        self.pipeline = pipeline
        self.labels = list(pipeline.labels) if pipeline is not None else []
        self.patch_size = int(patch_size or model.config.patch_size)

    @property
    def layer(self) -> nn.Module:
        return self.model.patch_embedding

    def example(self, pixels: np.ndarray, *, name: str | None = None, truth: str | None = None) -> Example:
        """Classify one uint8 ``(C, S, S)`` image (normalized with the run's pipeline)."""
        images = torch.as_tensor(np.asarray(pixels))[None]  # (1, C, S, S)
        inputs = (self.pipeline.encode(images) if self.pipeline is not None else images.float()).to(self.device)
        return self.example_from_tensor(inputs, pixels=np.asarray(pixels), name=name, truth=truth)

    def example_from_tensor(self, inputs: torch.Tensor, *, pixels: np.ndarray | None = None,
                            name: str | None = None, truth: str | None = None) -> Example:
        """An example from a normalized ``(1, C, S, S)`` input."""
        S = inputs.shape[-1]
        if S % self.patch_size:
            raise DataError(f"image side {S} is not a multiple of the patch size {self.patch_size}")
        grid = (inputs.shape[-2] // self.patch_size, S // self.patch_size)
        with torch.no_grad():
            probs = self.log_probs(inputs).exp()[0]  # (C,)
        best = int(probs.argmax())
        label = self.labels[best] if best < len(self.labels) else str(best)
        tokens = [f"patch {r},{c}" for r in range(grid[0]) for c in range(grid[1])]
        return Example(inputs.float(), tokens, torch.tensor(best), label, float(probs[best]), name, truth,
                       pixels=pixels, grid=grid)

    def log_probs(self, inputs: torch.Tensor, *args: Any) -> torch.Tensor:
        return F.log_softmax(self.model(inputs).logits.float(), dim=-1)  # (B, C)

    def _pixel_mask(self, drop: torch.Tensor, example: Example) -> torch.Tensor:
        """``(B, N)`` patch flags -> ``(B, 1, S, S)`` pixel flags."""
        rows, cols = example.grid
        grid = drop.to(self.device).reshape(-1, 1, rows, cols)
        return grid.repeat_interleave(self.patch_size, -2).repeat_interleave(self.patch_size, -1)  # (B, 1, S, S)

    def feature_mask(self, example: Example) -> torch.Tensor:
        n = example.num_positions
        ids = torch.arange(n, device=example.inputs.device).reshape(1, 1, *example.grid)  # (1, 1, rows, cols)
        return ids.repeat_interleave(self.patch_size, -2).repeat_interleave(self.patch_size, -1)  # (1, 1, S, S)

    def positions_of(self, attribution: torch.Tensor, example: Example) -> torch.Tensor:
        P = self.patch_size
        return attribution[0, 0, ::P, ::P].reshape(-1).cpu()  # (N,): one pixel per patch (a patch's are equal)

    def remove(self, example: Example, drop: torch.Tensor) -> torch.Tensor:
        images = example.inputs.expand(drop.shape[0], -1, -1, -1).clone()  # (B, C, S, S)
        return images.masked_fill(self._pixel_mask(drop, example), 0.0)

    def attention_layers(self) -> list[tuple[str, nn.Module]]:
        return _self_attention_modules(self.model.layers, "layers")

    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        handle = _requires_grad_hook(self.layer)
        try:
            with torch.enable_grad(), recording(self.attention_layers()) as rec:
                logp = self.log_probs(example.inputs)[0, int(example.target)]
                tensors = [w for _, w in rec.weights]
                grads = _grads(logp, tensors) if "grad_rollout" in methods else None
        finally:
            handle.remove()
        stack = torch.stack([w[0] for w in _on_cpu(tensors)])  # (L, H, N + 1, N + 1)
        scores = attention_methods(stack, 0, residual=residual, methods=methods)
        if grads is not None:
            scores["grad_rollout"] = gradient_rollout(list(stack), [g[0] for g in _on_cpu(grads)])[0]
        scores = {k: v[1:] for k, v in scores.items()}  # the patches: drop the class token's own column
        heads = head_readouts(stack, 0)[:, :, 1:]  # (L, H, N)
        return AttentionImportance(_ordered(scores, methods), heads)


# ------------------------------------------------------------------------------------- translation
class TranslationAdapter(Adapter):
    """The ``Transformer`` encoder-decoder: each generated token is explained over the source tokens.

    The output is the model's own greedy translation; every explained step is teacher-forced on it, so row ``t``
    explains the log-probability of generated token ``t`` (``<eos>`` last when decoding ended). Gradient methods
    attribute to the input of the source positional encoding (the scaled source embeddings), so a shared
    source/target embedding matrix is not attributed twice.

    Attention-based rows: the read-out of step ``t`` is the last decoder layer's head-averaged cross-attention row
    over the encoder's output (``attention``); ``rollout`` and ``flow`` carry it down the encoder's self-attention;
    ``grad_rollout`` is the encoder-decoder rule (:func:`~attnlab.explain.relevance.encoder_decoder_relevance`) with
    the gradients of step ``t``'s log-probability, through every encoder, decoder and cross-attention layer.
    """

    kind = "translation"
    occlusion_baseline = UNK_ID
    to_layer_input = True

    def __init__(self, model: nn.Module, text: Any = None, max_len: int | None = None,
                 max_new_tokens: int = 64) -> None:
        family = self._family()
        if not isinstance(model, family):
            raise ConfigError(f"{type(self).__name__} explains a {family.__name__}, not {type(model).__name__}")
        super().__init__(model)
        self.text = text
        self.max_len = max_len
        self.max_new_tokens = max_new_tokens

    @staticmethod
    def _family() -> type:
        from attnlab.models.transformer import Transformer

        return Transformer

    @property
    def layer(self) -> nn.Module:
        return self.model.src_positional

    def example(self, text: str, truth: str | None = None) -> Example:
        """Tokenize ``text``, translate it greedily and prepare its explanation."""
        tokens = self.text.src_tokenizer.tokenize(text)[:self.max_len]
        if not tokens:
            raise DataError(f"the text {text[:80]!r} holds no token for this model")
        src = torch.tensor([self.text.src_vocab.encode(tokens)], dtype=torch.int64)  # (1, Ts)
        return self.example_from_ids(src, tokens, text=text, truth=truth)

    def example_from_ids(self, src: torch.Tensor, tokens: Sequence[str] | None = None, *, text: str | None = None,
                         truth: str | None = None) -> Example:
        from attnlab.decode.greedy import greedy_decode
        from attnlab.decode.translate import default_max_len

        src = src.reshape(1, -1).long().to(self.device)
        src_lens = torch.tensor([src.shape[1]], device=self.device)
        with torch.no_grad():  # at most 2 Ts + 10 tokens, as attnlab translate decodes by default
            (hyp,) = greedy_decode(self.model, src, src_lens,
                                   max_len=min(self.max_new_tokens, default_max_len(src.shape[1])))
        target = torch.tensor(list(hyp.tokens) + ([EOS_ID] if hyp.ended else []), dtype=torch.int64)  # (Tt,)
        if target.numel() == 0:
            raise DataError("the model generated nothing to explain for this source")
        vocab = self.text.tgt_vocab if self.text is not None else None
        out_tokens = [vocab.id_to_token(i) if vocab is not None else str(i) for i in target.tolist()]
        probs = self._step_probs(src, target)[0].cpu()  # (Tt,)
        words = [t for t in out_tokens if t != "<eos>"]
        detok = self.text.tgt_tokenizer.detokenize(words) if self.text is not None else " ".join(words)
        tokens = list(tokens) if tokens is not None else [str(i) for i in src[0].tolist()]
        return Example(src, tokens, target, detok, float(probs.mean()), text, truth, output_tokens=out_tokens)

    def _tgt_in(self, target: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tensor([BOS_ID]), target[:-1].cpu()])[None].to(self.device)  # (1, Tt)

    def _all_log_probs(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        src_lens = torch.full((src.shape[0],), src.shape[1], dtype=torch.int64, device=src.device)
        logits = self.model(src, src_lens, tgt_in.expand(src.shape[0], -1)).logits.float()  # (B, Tt, V)
        return F.log_softmax(logits, dim=-1)

    def _step_probs(self, src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, Tt)`` teacher-forced probability of each generated token."""
        with torch.no_grad():
            logp = self._all_log_probs(src, self._tgt_in(target))  # (B, Tt, V)
        index = target.to(logp.device)[None, :, None].expand(src.shape[0], -1, 1)  # (B, Tt, 1)
        return logp.gather(-1, index)[..., 0].exp()

    def log_probs(self, inputs: torch.Tensor, *args: Any) -> torch.Tensor:
        tgt_in, step = args
        return self._all_log_probs(inputs, tgt_in[:1])[:, int(step)]  # (B, V)

    def steps(self, example: Example) -> list[tuple[tuple, int]]:
        tgt_in = self._tgt_in(example.target)
        return [((tgt_in, t), int(y)) for t, y in enumerate(example.target.tolist())]

    def score(self, inputs: torch.Tensor, example: Example) -> torch.Tensor:
        return self._step_probs(inputs, example.target).mean(-1)  # (B,): mean per-token probability

    def remove(self, example: Example, drop: torch.Tensor) -> torch.Tensor:
        ids = example.inputs.expand(drop.shape[0], -1).clone()  # (B, Ts)
        ids[drop.to(ids.device)] = UNK_ID
        return ids

    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        rec = self._record_attention(example, "grad_rollout" in methods)
        enc_stack = torch.stack(rec.encoder)  # (Le, H, Ts, Ts)
        cross = torch.stack(rec.cross)  # (Ld, H, Tt, Ts)
        reads = cross[-1].double().mean(0)  # (Tt, Ts): last layer, head-averaged
        rows: dict[str, list[torch.Tensor]] = {}
        for t in range(reads.shape[0]):
            for k, v in attention_methods(enc_stack, reads[t], residual=residual, methods=methods).items():
                rows.setdefault(k, []).append(v)
        scores = {k: torch.stack(v) for k, v in rows.items()}  # (Tt, Ts) each
        if rec.grads:
            out = []
            for t, (g_enc, g_dec, g_cross) in enumerate(rec.grads):
                rel = encoder_decoder_relevance(list(zip(rec.encoder, g_enc, strict=True)),
                                                list(zip(rec.decoder, g_dec, strict=True)),
                                                list(zip(rec.cross, g_cross, strict=True)))
                out.append(rel[t])
            scores["grad_rollout"] = torch.stack(out)  # (Tt, Ts)
        return AttentionImportance(_ordered(scores, methods), cross.double())

    def _record_attention(self, example: Example, grads: bool) -> EncoderDecoderAttention:
        """Every attention map of one teacher-forced pass and, with ``grads``, their gradients for each token."""
        m = self.model
        enc = _self_attention_modules(m.encoder_layers, "encoder_layers")
        dec = [(n, mod) for i, layer in enumerate(m.decoder_layers)
               for n, mod in ((f"decoder_layers.{i}.self_attn", layer.self_attn),
                              (f"decoder_layers.{i}.cross_attn", layer.cross_attn))]
        handle = _requires_grad_hook(m.src_embedding)
        try:
            with torch.enable_grad(), recording([*enc, *dec]) as rec:
                logp = self._all_log_probs(example.inputs, self._tgt_in(example.target))[0]  # (Tt, V)
                picked = logp.gather(-1, example.target.to(logp.device)[:, None])[:, 0]  # (Tt,)
                tensors = [w for _, w in rec.weights]
                names = [n for n, _ in rec.weights]
                per_step = ([_grads(picked[t], tensors, retain=t + 1 < len(picked)) for t in range(len(picked))]
                            if grads else [])
        finally:
            handle.remove()
        return EncoderDecoderAttention.split(names, _on_cpu(tensors), [_on_cpu(g) for g in per_step],
                                             [n for n, _ in enc], [n for n, _ in dec if n.endswith("self_attn")],
                                             [n for n, _ in dec if n.endswith("cross_attn")])


@dataclass
class EncoderDecoderAttention:
    """The attention of one teacher-forced encoder-decoder pass, each map ``(H, Tq, Tk)`` on the CPU.

    Attributes:
        encoder, decoder, cross: per layer, first first: ``(H, Ts, Ts)``, ``(H, Tt, Tt)``, ``(H, Tt, Ts)``.
        grads: per generated token ``t``, the gradients of ``log p(y_t)`` in the same layout
            ``(encoder, decoder, cross)``; empty when not asked for.
    """

    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]
    cross: list[torch.Tensor]
    grads: list[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]]

    @classmethod
    def split(cls, names: Sequence[str], weights: Sequence[torch.Tensor], grads: Sequence[Sequence[torch.Tensor]],
              encoder: Sequence[str], decoder: Sequence[str], cross: Sequence[str]) -> EncoderDecoderAttention:
        """Sort ``(1, H, Tq, Tk)`` maps recorded under ``names`` (and per-token gradients) into the three kinds."""
        def pick(tensors: Sequence[torch.Tensor], wanted: Sequence[str]) -> list[torch.Tensor]:
            by_name = dict(zip(names, tensors, strict=True))
            return [by_name[n][0] for n in wanted]

        return cls(pick(weights, encoder), pick(weights, decoder), pick(weights, cross),
                   [(pick(g, encoder), pick(g, decoder), pick(g, cross)) for g in grads])


class RecurrentTranslationAdapter(TranslationAdapter):
    """The recurrent ``Seq2Seq`` with one attention over the encoder states per step (Bahdanau et al. 2015).

    Rows, outputs and perturbations are those of :class:`TranslationAdapter`. Gradient methods attribute to the
    source embeddings. Row ``t`` of ``attention`` is the decoder's attention distribution ``alpha_t`` when it
    wrote token ``t``. There are no self-attention layers, so ``rollout`` and ``flow`` are not defined: the
    recurrent encoder mixes positions in ways no attention map shows, which is one reason to compare ``attention``
    with the gradient and perturbation rows. ``grad_rollout`` of row ``t`` is ``sum_{s<=t} (∇_{alpha_s} log p_t
    ⊙ alpha_s)^+``: the recurrence carries every earlier step's attention into step ``t``, so each earlier
    distribution counts by how much it moved ``log p_t`` (the one-layer case of Chefer et al. 2021's rule).
    """

    to_layer_input = False

    @staticmethod
    def _family() -> type:
        from attnlab.models.seq2seq import Seq2Seq

        return Seq2Seq

    @property
    def layer(self) -> nn.Module:
        return self.model.src_embedding

    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        handle = _requires_grad_hook(self.layer)
        try:
            with torch.enable_grad(), recording([("attention", self.model.attention)]) as rec:
                logp = self._all_log_probs(example.inputs, self._tgt_in(example.target))[0]  # (Tt, V)
                picked = logp.gather(-1, example.target.to(logp.device)[:, None])[:, 0]  # (Tt,)
                steps = [w for _, w in rec.weights]  # Tt tensors (1, 1, Ts), one per decoder step
                per_step = ([_on_cpu(_grads(picked[t], steps, retain=t + 1 < len(picked))) for t in range(len(picked))]
                            if "grad_rollout" in methods else [])
        finally:
            handle.remove()
        alphas = torch.cat([w[0] for w in _on_cpu(steps)]).double()  # (Tt, Ts)
        scores = {"attention": alphas} if "attention" in methods else {}
        if per_step:
            rows = [sum(gradient_weighted(a[0][None].double(), g[0][None].double())[0]
                        for a, g in zip(_on_cpu(steps), grads, strict=True)) for grads in per_step]
            scores["grad_rollout"] = torch.stack(rows)  # (Tt, Ts)
        return AttentionImportance(_ordered(scores, methods), alphas[None, None])  # heads: (1, 1, Tt, Ts)


def _ordered(scores: dict[str, torch.Tensor], methods: Sequence[str]) -> dict[str, torch.Tensor]:
    return {m: scores[m] for m in methods if m in scores}


def adapter_for(predictor: Any) -> Adapter:
    """The adapter of a predictor from ``attnlab.pipeline.load_predictor``: classifier, ViT or translator."""
    from attnlab.models.classifier import RNNAttentionClassifier, TransformerClassifier
    from attnlab.models.seq2seq import Seq2Seq
    from attnlab.models.vit import VisionTransformer

    model = getattr(predictor, "model", None)
    max_len = getattr(getattr(getattr(predictor, "config", None), "data", None), "max_len", None)
    if isinstance(model, RNNAttentionClassifier | TransformerClassifier):
        return TextClassifierAdapter(model, predictor.text, max_len=max_len)
    if isinstance(model, VisionTransformer):
        return ViTAdapter(model, predictor.pipeline, predictor.patch_size)
    if hasattr(predictor, "translate"):
        cls = RecurrentTranslationAdapter if isinstance(model, Seq2Seq) else TranslationAdapter
        return cls(model, predictor.text, max_len=max_len)
    raise ConfigError(f"explain supports text classifiers, the ViT and the encoder-decoders for text (Transformer, "
                      f"Seq2Seq); this checkpoint holds a {type(model).__name__}")
