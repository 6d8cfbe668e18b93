"""Explain models attnlab did not build: their attention through ``attnlab.capture``, attribution through Captum.

* :class:`CapturedClassifierAdapter`: any PyTorch or Hugging Face *encoder* text classifier (``nn.TransformerEncoder``
  with pooling and a linear head, ``BertForSequenceClassification``...). Positions are the input tokens, special
  tokens included; gradient methods attribute to the token embedding; a token is removed by replacing its id
  (``[MASK]``/``<unk>``), and integrated gradients start from an all-``<pad>`` input.
* :class:`CapturedViTAdapter`: a Hugging Face ``ViTForImageClassification``: patches are the positions, read out at
  the class token, removed and integrated from 0 in the model's normalized input, as for :class:`ViTAdapter`.
* :class:`CapturedTranslationAdapter`: a Hugging Face encoder-decoder (``MarianMTModel``...): one row per token of
  its own greedy translation over the source tokens, teacher-forced, as for :class:`TranslationAdapter`.

The classifiers' attention-based importances read the self-attention maps that
:class:`~attnlab.viz.capture.capture` records (every call, in call order, one per layer) at the *read-out*: the
class token (``"cls"``, position 0), a mean over the last layer's positions (``"mean"``, mean pooling) or any
position. ``attention`` is the read-out's last-layer row averaged over heads; ``rollout`` and ``flow`` carry it down
the stack; ``grad_rollout`` weights each layer by the gradient of the explained log-probability with respect to it
(Chefer et al. 2021), taken on the maps recorded with ``capture(model, keep_graph=True)``. The translation rows are
those of :class:`TranslationAdapter` on the captured encoder, decoder and cross-attention maps.

The uniform/permuted attention checks are not available for captured classifiers: they replace the weights a module
mixes its values with, and neither ``nn.MultiheadAttention`` (one fused call) nor a Hugging Face attention layer
lets a hook change them; forward hooks only see the weights after they were used.

Dimension legend: ``B`` batch, ``T`` positions, ``L`` layers, ``H`` heads, ``C`` classes, ``S`` image side,
``N`` patches, ``Tt``/``Ts`` target/source tokens, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.core.errors import ConfigError, DataError
from attnlab.explain.adapters import (
    ATTENTION_METHODS,
    Adapter,
    AttentionImportance,
    EncoderDecoderAttention,
    Example,
    TranslationAdapter,
    ViTAdapter,
    _ordered,
    _requires_grad_hook,
)
from attnlab.explain.relevance import attention_methods, gradient_rollout, head_readouts, read_out

Readout = int | str  # "cls", "mean" or a position

CHECKS_UNAVAILABLE = ("not available for captured models (forward hooks see attention weights only after the module "
                      "has used them, so they cannot replace them exactly)")


def _tokenize(tokenizer: Any, text: str, max_len: int | None) -> tuple[torch.Tensor, list[str]]:
    """``(1, T)`` ids (special tokens included, cut to ``max_len``) and their tokens, from a Hugging Face tokenizer."""
    if tokenizer is None:
        raise ConfigError("tokenizer: this adapter has none; build examples with example_from_ids")
    ids = list(tokenizer(text, truncation=max_len is not None, max_length=max_len)["input_ids"])
    if not ids:
        raise DataError(f"the text {text[:80]!r} holds no token for this model")
    return torch.tensor([ids]), tokenizer.convert_ids_to_tokens(ids)


def _is_hf(model: nn.Module) -> bool:
    return any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


def _check_model(model: Any) -> None:
    from attnlab.viz.capture import find_attention_modules

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not find_attention_modules(model):
        raise ConfigError(f"model: attnlab.capture finds no attention layer in {type(model).__name__} (it hooks "
                          "nn.MultiheadAttention, also inside nn.TransformerEncoder, and Hugging Face attention)")


def _check_readout(readout: Any) -> Readout:
    if readout in ("cls", "mean") or (isinstance(readout, int) and not isinstance(readout, bool)):
        return readout
    raise ConfigError(f"readout must be 'cls', 'mean' or a position (int), got {readout!r:.40}")


def _inside(model: nn.Module, module: Any, what: str) -> nn.Module:
    if not isinstance(module, nn.Module) or not any(m is module for m in model.modules()):
        raise ConfigError(f"{what}: expected a module of the model, got {type(module).__name__}")
    return module


def _token_id(name: str, given: int | None, vocab: int | None, *defaults: Any) -> int:
    """``given``, else the first integer of ``defaults``, checked against the vocabulary size."""
    value = given if given is not None else next((d for d in defaults if isinstance(d, int)), None)
    if value is None:
        what = "removes a token (e.g. <unk> or [MASK])" if name == "remove_id" else "of <pad>"
        raise ConfigError(f"{name}: give the token id that {what}; none was found in the tokenizer or config")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (vocab is not None and value >= vocab):
        raise ConfigError(f"{name} must be a token id in [0, {vocab}), got {value!r:.40}")
    return value


def _captured_pass(adapter: Adapter, outputs: Callable[[], torch.Tensor],
                   grads: bool) -> tuple[list[Any], list[list[torch.Tensor]]]:
    """Run ``outputs()`` (a ``(K,)`` vector of explained log-probabilities) under ``attnlab.capture``.

    Returns:
        the record of every attention call in call order (a layer shared across depth counts once per use),
        weights detached on the CPU; and, with ``grads``, for each of the ``K`` outputs the gradients of it with
        respect to every record's weights (else ``[]``).
    """
    from attnlab.viz.capture import attention_grads, capture

    handle = _requires_grad_hook(adapter.layer)  # a frozen model's attention still gets a graph
    try:
        with torch.set_grad_enabled(grads), capture(adapter.model, keep_graph=grads) as maps:
            picked = outputs()  # (K,)
            calls = list(maps.calls)
            weights = [r.weights for r in calls]
            per_output = []
            for k in range(len(picked) if grads and calls else 0):
                per_output.append([g.detach().cpu() for g in attention_grads(picked[k], weights,
                                                                             retain_graph=k + 1 < len(picked))])
    finally:
        handle.remove()
    if not calls:
        raise DataError(f"model: the forward pass ran none of the attention layers of {type(adapter.model).__name__}")
    return [replace(r, weights=r.weights.detach().cpu()) for r in calls], per_output


class _CapturedAttention:
    """The attention-based importances of a captured self-attention stack (mixed into the adapters below)."""

    model: nn.Module
    layer: nn.Module
    readout: Readout
    checks_note = CHECKS_UNAVAILABLE

    def _read(self, T: int) -> int | torch.Tensor:
        """The read-out over ``T`` last-layer positions: a position, or the ``(T,)`` mean-pooling distribution."""
        if self.readout == "cls":
            return 0
        if self.readout == "mean":
            return torch.full((T,), 1.0 / T, dtype=torch.float64)
        if not -T <= self.readout < T:
            raise DataError(f"readout {self.readout} is out of range for {T} positions")
        return self.readout % T

    def _captured(self, inputs: torch.Tensor, target: int, grads: bool) -> tuple[torch.Tensor, list | None]:
        """``(L, H, T, T)`` float64 self-attention of one example (batch of one) and, when asked, its gradients."""
        calls, per_output = _captured_pass(self, lambda: self.log_probs(inputs)[0, target:target + 1], grads)
        cross = [r.name for r in calls if r.kind == "cross"]
        if cross:
            raise ConfigError(f"model: {cross[0]} is cross-attention; {type(self).__name__} explains encoders "
                              "(self-attention only)")
        shapes = {tuple(r.weights.shape) for r in calls}
        if len(shapes) != 1 or any(s[0] != 1 or s[-1] != s[-2] for s in shapes):
            raise DataError(f"model: captured attention of shapes {sorted(shapes)}; expected (1, H, T, T) "
                            "self-attention in every layer")
        stack = torch.stack([r.weights[0].double() for r in calls])  # (L, H, T, T)
        return stack, ([g[0].double() for g in per_output[0]] if per_output else None)

    def _importance(self, inputs: torch.Tensor, target: int, methods: Sequence[str], residual: float,
                    skip: int = 0) -> AttentionImportance:
        """Importances over the positions after the first ``skip`` (a ViT's class token is not a patch)."""
        stack, grads = self._captured(inputs, target, "grad_rollout" in methods)
        read = self._read(stack.shape[-1])
        raw = read_out(stack[-1].mean(0), read)  # (T,): the read-out's last-layer attention, head-averaged
        scores = attention_methods(stack, read, residual=residual, methods=methods, raw=raw)
        if grads is not None:
            scores["grad_rollout"] = read_out(gradient_rollout(list(stack), grads), read)
        scores = {k: v[skip:] for k, v in scores.items()}
        heads = head_readouts(stack, read)[:, :, skip:]  # (L, H, T - skip)
        return AttentionImportance(_ordered(scores, methods), heads)


# -------------------------------------------------------------------------------------- text classifiers
class CapturedClassifierAdapter(_CapturedAttention, Adapter):
    """Any PyTorch or Hugging Face encoder text classifier, explained over its input tokens.

    Args:
        model: the classifier (an ``nn.Module`` with attention that ``attnlab.capture`` finds).
        embedding: the token-embedding module gradient methods attribute to (its output, ``(B, T, D)``); default:
            ``model.get_input_embeddings()`` for Hugging Face models, else the model's only ``nn.Embedding``.
        forward: maps ``(B, T)`` ids to ``(B, C)`` logits; default ``model(input_ids=ids).logits`` for Hugging
            Face models, ``model(ids)`` otherwise. Inputs are never padded: every row has the example's length.
        tokenizer: a Hugging Face tokenizer, for :meth:`example` (without one, use :meth:`example_from_ids`).
        labels: class names (default: a Hugging Face config's ``id2label``).
        remove_id: the id that removes a token (leave-one-out, perturbation curves); default the tokenizer's
            ``[MASK]``, else its ``<unk>``.
        baseline_id: the integrated-gradients baseline, every position this id; default the ``<pad>`` id (the
            tokenizer's, the config's, or the embedding's ``padding_idx``).
        readout: where the classifier reads the sequence, for the attention-based methods: ``"cls"`` (position
            0, BERT-style), ``"mean"`` (mean pooling over the last layer) or a position (negative from the end).
        max_len: texts are cut to this many tokens by :meth:`example`.
    """

    kind = "text"

    def __init__(self, model: nn.Module, *, embedding: nn.Module | None = None,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None, tokenizer: Any = None,
                 labels: Sequence[str] | None = None, remove_id: int | None = None, baseline_id: int | None = None,
                 readout: Readout = "cls", max_len: int | None = None) -> None:
        _check_model(model)
        hf = _is_hf(model)
        super().__init__(model)
        self.readout = _check_readout(readout)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self._layer = _inside(model, self._default_embedding(model, hf) if embedding is None else embedding,
                              "embedding")
        if forward is not None and not callable(forward):
            raise ConfigError(f"forward: expected a function of (B, T) ids, got {type(forward).__name__}")
        self.forward = forward if forward is not None else self._default_forward(model, hf)
        config = getattr(model, "config", None)
        id2label = getattr(config, "id2label", None) if hf else None
        self.labels = list(labels if labels is not None else
                           ([id2label[i] for i in sorted(id2label)] if isinstance(id2label, dict) else []))
        vocab = getattr(self._layer, "num_embeddings", None)
        self.remove_id = _token_id("remove_id", remove_id, vocab, getattr(tokenizer, "mask_token_id", None),
                                   getattr(tokenizer, "unk_token_id", None))
        self.baseline_id = _token_id("baseline_id", baseline_id, vocab, getattr(tokenizer, "pad_token_id", None),
                                     getattr(config, "pad_token_id", None), getattr(self._layer, "padding_idx", None))
        self.occlusion_baseline = self.remove_id

    @staticmethod
    def _default_embedding(model: nn.Module, hf: bool) -> nn.Module:
        if hf and hasattr(model, "get_input_embeddings"):
            return model.get_input_embeddings()
        found = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        if len(found) != 1:
            raise ConfigError(f"embedding: {type(model).__name__} holds {len(found)} nn.Embedding modules; pass the "
                              "token embedding, e.g. embedding=model.embedding")
        return found[0]

    @staticmethod
    def _default_forward(model: nn.Module, hf: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        if not hf:
            return model

        def logits(ids: torch.Tensor) -> torch.Tensor:
            out = model(input_ids=ids)
            if not hasattr(out, "logits"):
                raise ConfigError(f"forward: {type(model).__name__} returns no .logits; pass forward=... mapping "
                                  "(B, T) ids to (B, C) logits")
            return out.logits

        return logits

    @property
    def layer(self) -> nn.Module:
        return self._layer

    def example(self, text: str, truth: str | None = None) -> Example:
        """Tokenize ``text`` with the tokenizer (special tokens included, cut to ``max_len``) and classify it."""
        ids, tokens = _tokenize(self.tokenizer, text, self.max_len)
        return self.example_from_ids(ids, tokens, text=text, truth=truth)

    def example_from_ids(self, ids: torch.Tensor, tokens: Sequence[str] | None = None, *, text: str | None = None,
                         truth: str | None = None) -> Example:
        """An example from ``(1, T)`` (or ``(T,)``) ids with no padding."""
        ids = torch.as_tensor(ids)
        if ids.dim() > 2 or (ids.dim() == 2 and ids.shape[0] != 1) or ids.numel() == 0:
            raise DataError(f"ids must be (1, T) or (T,) with T >= 1, got shape {tuple(ids.shape)}")
        ids = ids.reshape(1, -1).long().to(self.device)  # (1, T)
        vocab = getattr(self._layer, "num_embeddings", None)
        if int(ids.min()) < 0 or (vocab is not None and int(ids.max()) >= vocab):
            raise DataError(f"ids must be in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
        if tokens is not None and len(tokens) != ids.shape[1]:
            raise DataError(f"tokens: {len(tokens)} labels for {ids.shape[1]} ids")
        with torch.no_grad():
            probs = self.log_probs(ids).exp()[0]  # (C,)
        best = int(probs.argmax())
        label = self.labels[best] if best < len(self.labels) else str(best)
        tokens = list(tokens) if tokens is not None else [str(i) for i in ids[0].tolist()]
        return Example(ids, [str(t) for t in tokens], torch.tensor(best), label, float(probs[best]), text, truth)

    def log_probs(self, inputs: torch.Tensor, *args: Any) -> torch.Tensor:
        logits = self.forward(inputs)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(f"forward must map (B, T) ids to (B, C) logits; for B = {inputs.shape[0]} it returned "
                              f"{got}")
        return F.log_softmax(logits.float(), dim=-1)  # (B, C)

    def ig_baseline(self, example: Example) -> torch.Tensor:
        return torch.full_like(example.inputs, self.baseline_id)

    def remove(self, example: Example, drop: torch.Tensor) -> torch.Tensor:
        ids = example.inputs.expand(drop.shape[0], -1).clone()  # (B, T)
        ids[drop.to(ids.device)] = self.remove_id
        return ids

    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        return self._importance(example.inputs, int(example.target), methods, residual)


# ------------------------------------------------------------------------------------------------ ViT
class CapturedViTAdapter(_CapturedAttention, ViTAdapter):
    """A Hugging Face ``ViTForImageClassification`` (or any model with its layout): patches are the positions.

    The sequence is the class token (position 0, the read-out) followed by the ``N`` patches in row-major order.
    Leave-one-out and the perturbation curves set a patch to 0 in the normalized input (the mean of the
    normalization), integrated gradients start from an all-0 image, as :class:`ViTAdapter` does.

    Args:
        model: the classifier.
        embedding: the patch embedding (output ``(B, N, D)``); default ``model.get_input_embeddings()``.
        forward: maps ``(B, C, S, S)`` normalized images to ``(B, C)`` logits; default ``model(x).logits``.
        labels: class names (default: the config's ``id2label``).
        patch_size: default ``model.config.patch_size``.
        processor: a Hugging Face image processor, for :meth:`example` on raw pixels.
    """

    def __init__(self, model: nn.Module, *, embedding: nn.Module | None = None,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 labels: Sequence[str] | None = None, patch_size: int | None = None, processor: Any = None) -> None:
        _check_model(model)
        Adapter.__init__(self, model)
        self.readout = "cls"
        self.pipeline = None
        self.processor = processor
        config = getattr(model, "config", None)
        size = patch_size if patch_size is not None else getattr(config, "patch_size", None)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"patch_size must be a positive integer (the model's config has none), got {size!r:.40}")
        self.patch_size = size
        if embedding is None and not hasattr(model, "get_input_embeddings"):
            raise ConfigError(f"embedding: {type(model).__name__} has no get_input_embeddings(); pass the patch "
                              "embedding module")
        self._layer = _inside(model, model.get_input_embeddings() if embedding is None else embedding, "embedding")
        if forward is not None and not callable(forward):
            raise ConfigError(f"forward: expected a function of (B, C, S, S) images, got {type(forward).__name__}")
        self.forward = forward if forward is not None else (lambda x: model(x).logits)
        id2label = getattr(config, "id2label", None)
        self.labels = list(labels if labels is not None else
                           ([id2label[i] for i in sorted(id2label)] if isinstance(id2label, dict) else []))

    @property
    def layer(self) -> nn.Module:
        return self._layer

    def example(self, pixels: np.ndarray, *, name: str | None = None, truth: str | None = None) -> Example:
        """Classify one uint8 ``(C, S, S)`` image, normalized by the image processor."""
        if self.processor is None:
            raise ConfigError("processor: this adapter has no image processor; build examples with "
                              "example_from_tensor from normalized (1, C, S, S) inputs")
        image = np.asarray(pixels)
        inputs = self.processor(images=image, input_data_format="channels_first", return_tensors="pt")
        return self.example_from_tensor(inputs["pixel_values"].to(self.device), pixels=image, name=name, truth=truth)

    def log_probs(self, inputs: torch.Tensor, *args: Any) -> torch.Tensor:
        logits = self.forward(inputs)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
            raise ConfigError(f"forward must map (B, C, S, S) images to (B, C) logits; for B = {inputs.shape[0]} it "
                              f"returned {getattr(logits, 'shape', type(logits).__name__)}")
        return F.log_softmax(logits.float(), dim=-1)  # (B, C)

    def attention_layers(self) -> list[tuple[str, nn.Module]]:
        return []  # no exact replacement of a captured module's weights (see the module docstring)

    def attention_importance(self, example: Example, methods: Sequence[str] = ATTENTION_METHODS, *,
                             residual: float = 0.5) -> AttentionImportance:
        out = self._importance(example.inputs, int(example.target), methods, residual, skip=1)
        N = example.num_positions
        if out.heads.shape[-1] != N:
            raise DataError(f"model: captured {out.heads.shape[-1] + 1} positions for {N} patches; expected the "
                            "class token followed by the patches")
        return out


# -------------------------------------------------------------------------------------------- translation
class CapturedTranslationAdapter(TranslationAdapter):
    """A Hugging Face encoder-decoder (``MarianMTModel``, ``M2M100ForConditionalGeneration``...), as
    :class:`TranslationAdapter` explains attnlab's ``Transformer``: one row per generated token over the source.

    The output is the model's own greedy translation (``model.generate`` with one beam, no sampling, so its
    generation settings such as a forced target-language token apply); every row is teacher-forced on it. Gradient
    methods attribute to the encoder's token embedding (a module of its own even where the weights are shared
    with the decoder); ``attention``, ``rollout``, ``flow`` and ``grad_rollout`` are those of
    :class:`TranslationAdapter` on the captured encoder, decoder and cross-attention maps.

    Args:
        model: the encoder-decoder.
        tokenizer: a Hugging Face tokenizer of source and target, for :meth:`example` and readable output.
        embedding: default ``model.get_encoder().get_input_embeddings()``.
        remove_id: the id that removes a source token; default the tokenizer's ``<unk>``.
        baseline_id: the integrated-gradients baseline id; default ``<pad>``.
        max_len: source texts are cut to this many tokens.
        max_new_tokens: the longest translation generated.
    """

    to_layer_input = False  # the token embedding's output, as for the classifiers

    def __init__(self, model: nn.Module, *, tokenizer: Any = None, embedding: nn.Module | None = None,
                 remove_id: int | None = None, baseline_id: int | None = None, max_len: int | None = None,
                 max_new_tokens: int = 64) -> None:
        _check_model(model)
        if not hasattr(model, "generate") or not hasattr(model, "get_encoder"):
            raise ConfigError(f"model: {type(model).__name__} is not a Hugging Face encoder-decoder (it has no "
                              "generate/get_encoder)")
        Adapter.__init__(self, model)
        self.text = None
        self.tokenizer = tokenizer
        self.max_len = max_len
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r:.40}")
        self.max_new_tokens = max_new_tokens
        self._layer = _inside(model, model.get_encoder().get_input_embeddings() if embedding is None else embedding,
                              "embedding")
        config = model.config
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
        start = start if start is not None else getattr(config, "decoder_start_token_id", None)
        if not isinstance(start, int):
            raise ConfigError(f"model: {type(model).__name__}'s config has no decoder_start_token_id")
        self.start_id = start
        vocab = getattr(self._layer, "num_embeddings", None)
        self.remove_id = _token_id("remove_id", remove_id, vocab, getattr(tokenizer, "unk_token_id", None))
        self.baseline_id = _token_id("baseline_id", baseline_id, vocab, getattr(tokenizer, "pad_token_id", None),
                                     getattr(config, "pad_token_id", None))
        self.occlusion_baseline = self.remove_id

    @property
    def layer(self) -> nn.Module:
        return self._layer

    def example(self, text: str, truth: str | None = None) -> Example:
        """Tokenize ``text`` (cut to ``max_len``), translate it greedily and prepare its explanation."""
        ids, tokens = _tokenize(self.tokenizer, text, self.max_len)
        return self.example_from_ids(ids, tokens, text=text, truth=truth)

    def example_from_ids(self, src: torch.Tensor, tokens: Sequence[str] | None = None, *, text: str | None = None,
                         truth: str | None = None) -> Example:
        src = torch.as_tensor(src).reshape(1, -1).long().to(self.device)  # (1, Ts)
        if src.numel() == 0:
            raise DataError("the source holds no token")
        with torch.no_grad():
            out = self.model.generate(input_ids=src, attention_mask=torch.ones_like(src), do_sample=False,
                                      num_beams=1, max_new_tokens=self.max_new_tokens)
        target = out[0, 1:].cpu()  # (Tt,): the decoder start token is not generated
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        ended = [i for i, y in enumerate(target.tolist()) if y in eos]
        target = target[:ended[0] + 1] if ended else target  # (Tt,): the end token last when decoding ended
        if target.numel() == 0:
            raise DataError("the model generated nothing to explain for this source")
        tok = self.tokenizer
        out_tokens = (tok.convert_ids_to_tokens(target.tolist()) if tok is not None
                      else [str(i) for i in target.tolist()])
        detok = (tok.decode(target.tolist(), skip_special_tokens=True) if tok is not None
                 else " ".join(str(i) for i in target.tolist()))
        probs = self._step_probs(src, target)[0].cpu()  # (Tt,)
        tokens = list(tokens) if tokens is not None else [str(i) for i in src[0].tolist()]
        return Example(src, tokens, target, detok, float(probs.mean()), text, truth, output_tokens=out_tokens)

    def _tgt_in(self, target: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tensor([self.start_id]), target[:-1].cpu()])[None].to(self.device)  # (1, Tt)

    def _all_log_probs(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=src, decoder_input_ids=tgt_in.expand(src.shape[0], -1), use_cache=False)
        return F.log_softmax(out.logits.float(), dim=-1)  # (B, Tt, V)

    def ig_baseline(self, example: Example) -> torch.Tensor:
        return torch.full_like(example.inputs, self.baseline_id)

    def remove(self, example: Example, drop: torch.Tensor) -> torch.Tensor:
        ids = example.inputs.expand(drop.shape[0], -1).clone()  # (B, Ts)
        ids[drop.to(ids.device)] = self.remove_id
        return ids

    def _record_attention(self, example: Example, grads: bool) -> EncoderDecoderAttention:
        def picked() -> torch.Tensor:
            logp = self._all_log_probs(example.inputs, self._tgt_in(example.target))[0]  # (Tt, V)
            return logp.gather(-1, example.target.to(logp.device)[:, None])[:, 0]  # (Tt,)

        calls, per_token = _captured_pass(self, picked, grads)
        kinds = [r.kind for r in calls]
        if "cross" not in kinds or "self" in kinds:
            raise ConfigError(f"model: capture found {', '.join(sorted(set(kinds)))} attention in "
                              f"{type(self.model).__name__}; expected encoder, decoder and cross-attention")
        names = [f"{i}" for i in range(len(calls))]
        by_kind = {k: [n for n, r in zip(names, calls, strict=True) if r.kind == k] for k in ("encoder", "decoder",
                                                                                             "cross")}
        return EncoderDecoderAttention.split(names, [r.weights for r in calls], per_token, by_kind["encoder"],
                                             by_kind["decoder"], by_kind["cross"])
