"""Export a Transformer translation checkpoint to CTranslate2 (github.com/OpenNMT/CTranslate2), and translate with it.

:func:`export_ctranslate2` fills CTranslate2's own ``TransformerSpec`` from the model's modules and writes ``OUT/``:

* ``model.bin``, ``config.json`` and ``shared_vocabulary.json`` (or ``source_vocabulary.json`` and
  ``target_vocabulary.json``): the CTranslate2 model, its vocabularies the attnlab ones in id order;
* ``source.spm`` and ``target.spm``: the SentencePiece models that tokenize the input and detokenize the output
  (byte-identical files when the run trained one joint model);
* ``attnlab_export.json`` (what it came from, the decoding settings that reproduce attnlab's output) and
  ``README.md`` (how to tokenize and translate with ``ctranslate2`` and ``sentencepiece`` alone).

What exports: ``model.kind: transformer`` (translation or summarization runs) with SentencePiece tokenizers (``bpe``
or ``unigram``) on both sides, in every other setting of :class:`~attnlab.core.model_config.TransformerConfig`:
pre-LN (final LayerNorms) or post-LN (CTranslate2's ``pre_norm=False``), ReLU or GELU (the exact, erf one),
sinusoidal or learned positions (CTranslate2 takes any position table: attnlab's own is written out, because its
built-in sinusoids interleave differently), shared or separate embeddings, tied or separate output projection.
What is refused with one :class:`ConfigError` line:

* ``copy: true``: the pointer-generator mixes a copy attention into the output distribution; no CTranslate2 layer
  does that.
* ``seq2seq`` (recurrent encoder-decoders with additive attention): CTranslate2's specs hold no recurrent layers.
* classifiers, ViT, captioner: no text-to-text encoder-decoder (attention pooling, image patches).
* word, char and zh-char tokenizers: they exist in attnlab only, and a CTranslate2 model is served beside its
  tokenizer; retrain with ``data.src_tokenizer=bpe``/``data.tgt_tokenizer=bpe``.

Equivalence: CTranslate2 decodes greedily to the same tokens as :func:`attnlab.decode.greedy_decode` (the tests
compare ids) when called with :func:`ct2_options`: ``min_decoding_length=0`` (its default of 1 forbids the
empty output attnlab allows) and attnlab's ``max_len``. ``<pad>`` and ``<bos>``, which attnlab's decoders never emit
(:func:`attnlab.decode.search.step_log_probs`), get an output bias of :data:`IMPOSSIBLE_LOGIT`, so the exported
model cannot emit them either; its log-probabilities are then normalized over the other tokens, higher than
attnlab's by ``-log(1 - p(<pad>) - p(<bos>))`` per step (up to ~1e-3 for label-smoothed models). Beam search agrees
with ``length_penalty=0`` on both sides; with ``alpha > 0`` the engines rank differently (CTranslate2 divides by
``length ** alpha``, attnlab by GNMT's ``((5 + length) / 6) ** alpha``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from attnlab import __version__
from attnlab.attention.positional import (
    FairseqSinusoidalPositionalEncoding,
    LearnedPositionalEncoding,
    fairseq_sinusoid_table,
    sinusoid_table,
)
from attnlab.core.errors import CheckpointError, ConfigError, one_line
from attnlab.core.model_config import TransformerConfig
from attnlab.data.subword import SentencePieceTokenizer
from attnlab.data.vocab import BOS, BOS_ID, EOS, PAD_ID, UNK
from attnlab.decode.translate import default_max_len
from attnlab.export.base import Export, open_source, require, write_directory
from attnlab.models.transformer import Transformer

log = logging.getLogger(__name__)

__all__ = ["IMPOSSIBLE_LOGIT", "NOTE_FILE", "SINUSOID_POSITIONS", "SOURCE_SPM", "TARGET_SPM", "ExportedTranslator",
           "check_exportable", "ct2_options", "export_ctranslate2", "transformer_spec", "translate_ctranslate2"]

SOURCE_SPM = "source.spm"
TARGET_SPM = "target.spm"
NOTE_FILE = "attnlab_export.json"  # not config.json: CTranslate2 writes its own
README_FILE = "README.md"
IMPOSSIBLE_LOGIT = -1e4
"""Output bias of ``<pad>`` and ``<bos>``: ``exp(-1e4)`` is 0 in float32, and the value stays finite in float16."""
SINUSOID_POSITIONS = 1024
"""Rows of the sinusoidal table written (or ``max_len`` if larger): attnlab computes positions past ``max_len`` on
demand, CTranslate2 needs a table; 1,024 is its default ``max_input_length``."""


def _require_ctranslate2() -> ModuleType:
    return require("ctranslate2", "export to CTranslate2", "export")


# ------------------------------------------------------------------------------------------ what exports

def check_exportable(config: Any, where: str) -> None:
    """Refuse a model config CTranslate2 cannot represent; ``config`` is the run's model section.

    Raises:
        ConfigError: one line naming what is unsupported and why.
    """
    if not isinstance(config, TransformerConfig):
        kind = getattr(config, "kind", type(config).__name__)
        why = ("its specs hold no recurrent layers" if kind == "seq2seq"
               else "it is no text-to-text encoder-decoder")
        raise ConfigError(f"checkpoint {where}: a {kind} model cannot be exported to CTranslate2 ({why}); only "
                          f"Transformer translation/summarization models (model.kind: transformer) export")
    if config.copy:
        raise ConfigError(f"checkpoint {where}: model.copy is true, and CTranslate2 has no pointer-generator output "
                          f"(a copy attention mixed into the output distribution); only copy: false Transformers "
                          f"export")


_SERVED = "a CTranslate2 model is served with SentencePiece models"


# ------------------------------------------------------------------------------------------ the spec

def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def _set_linear(spec: Any, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    spec.weight = _array(weight)
    if bias is not None:
        spec.bias = _array(bias)


def _set_layer_norm(spec: Any, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _set_attention(spec: Any, attn: nn.Module, norm: nn.LayerNorm, *, self_attention: bool) -> None:
    """CTranslate2 fuses Q, K and V into ``linear[0]`` for self-attention and K, V into ``linear[1]`` for
    cross-attention -- the row layout of attnlab's (PyTorch's) ``in_proj_weight``, so slices suffice."""
    weight, bias = attn.in_proj_weight, attn.in_proj_bias  # (3D, D), (3D,)
    d = weight.shape[1]
    if self_attention:
        _set_linear(spec.linear[0], weight, bias)
    else:
        _set_linear(spec.linear[0], weight[:d], None if bias is None else bias[:d])
        _set_linear(spec.linear[1], weight[d:], None if bias is None else bias[d:])
    _set_linear(spec.linear[-1], attn.out_proj.weight, attn.out_proj.bias)
    _set_layer_norm(spec.layer_norm, norm)


def _set_ffn(spec: Any, ffn: nn.Module, norm: nn.LayerNorm) -> None:
    _set_linear(spec.linear_0, ffn.linear1.weight, ffn.linear1.bias)
    _set_linear(spec.linear_1, ffn.linear2.weight, ffn.linear2.bias)
    _set_layer_norm(spec.layer_norm, norm)


def _set_inputs(spec: Any, embedding: nn.Embedding, positional: nn.Module) -> None:
    """Token embeddings (scaled by sqrt(D) by CTranslate2 too) and attnlab's position table, row p = position p."""
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _array(embedding.weight)
    spec.scale_embeddings = True
    if isinstance(positional, LearnedPositionalEncoding):
        spec.position_encodings.encodings = _array(positional.embedding.weight)  # (max_len, D)
    elif isinstance(positional, FairseqSinusoidalPositionalEncoding):
        rows = max(positional.table.shape[0], SINUSOID_POSITIONS)
        spec.position_encodings.encodings = _array(fairseq_sinusoid_table(rows, positional.d_model,
                                                                          positional.padding_idx))
    else:
        rows = max(positional.table.shape[0], SINUSOID_POSITIONS)
        spec.position_encodings.encodings = _array(sinusoid_table(rows, positional.d_model, positional.base))


def transformer_spec(model: Transformer) -> Any:
    """CTranslate2's ``TransformerSpec`` of ``model`` with every weight set (vocabularies not registered)."""
    _require_ctranslate2()
    from ctranslate2.specs import common_spec
    from ctranslate2.specs import transformer_spec as ts

    cfg = model.config
    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}[cfg.activation]
    spec = ts.TransformerSpec.from_config((cfg.encoder_layers, cfg.decoder_layers), cfg.num_heads,
                                          pre_norm=cfg.norm_first, activation=activation)
    # 1. Encoder: inputs, layers, final LayerNorm (pre-LN only).
    _set_inputs(spec.encoder, model.src_embedding, model.src_positional)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder_layers, strict=True):
        _set_attention(layer_spec.self_attention, layer.self_attn, layer.norm1, self_attention=True)
        _set_ffn(layer_spec.ffn, layer.ffn, layer.norm2)
    # 2. Decoder: the same, plus cross-attention.
    _set_inputs(spec.decoder, model.tgt_embedding, model.tgt_positional)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder_layers, strict=True):
        _set_attention(layer_spec.self_attention, layer.self_attn, layer.norm1, self_attention=True)
        _set_attention(layer_spec.attention, layer.cross_attn, layer.norm2, self_attention=False)
        _set_ffn(layer_spec.ffn, layer.ffn, layer.norm3)
    if cfg.norm_first:
        _set_layer_norm(spec.encoder.layer_norm, model.encoder_norm)
        _set_layer_norm(spec.decoder.layer_norm, model.decoder_norm)
    # 3. Output projection (CTranslate2 aliases it to the embedding when tied); <pad>/<bos> can never win.
    bias = torch.zeros(model.output.weight.shape[0])
    bias[[PAD_ID, BOS_ID]] = IMPOSSIBLE_LOGIT
    _set_linear(spec.decoder.projection, model.output.weight, bias)
    spec.config.layer_norm_epsilon = float(model.decoder_layers[0].norm1.eps)
    return spec


# ------------------------------------------------------------------------------------------ export

def export_ctranslate2(checkpoint_dir: str | Path, out_dir: str | Path) -> Export:
    """Write the CTranslate2 model of a Transformer translation checkpoint to ``out_dir`` (see the module docstring).

    ``checkpoint_dir`` is a checkpoint or a run directory (its ``best/``, else ``last/``). ``out_dir`` must not
    exist or be empty; it appears complete or not at all (written beside it, then renamed).

    Raises:
        ConfigError: a model or tokenizer CTranslate2 cannot take (the module docstring lists them), an existing
            ``out_dir``, or ``ctranslate2`` not installed.
        CheckpointError: a missing, truncated or corrupt checkpoint.
    """
    ct2 = _require_ctranslate2()
    out = Path(out_dir)
    src = open_source(checkpoint_dir, out, check_exportable, _SERVED)
    ckpt, run, text, model = src.checkpoint, src.run, src.text, src.model

    spec = transformer_spec(model)
    spec.register_source_vocabulary(text.src_vocab.tokens)
    spec.register_target_vocabulary(text.tgt_vocab.tokens)
    # attnlab frames no source with <bos>/<eos> and starts every output with <bos>.
    for name, value in {"unk_token": UNK, "bos_token": BOS, "eos_token": EOS, "decoder_start_token": BOS,
                        "add_source_bos": False, "add_source_eos": False}.items():
        setattr(spec.config, name, value)
    spec.validate()
    spec.optimize(quantization=None)  # aliases equal tensors (tied or shared embeddings, equal position tables)
    note = _note(ckpt.path, ckpt.step, run, text, ct2.__version__)

    def fill(tmp: Path) -> None:
        spec.save(str(tmp))
        text.src_tokenizer.save(tmp / SOURCE_SPM)
        text.tgt_tokenizer.save(tmp / TARGET_SPM)
        (tmp / NOTE_FILE).write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")
        (tmp / README_FILE).write_text(_readme(note, out), encoding="utf-8")

    files = write_directory(out, fill)
    log.debug("exported %s (step %d) to CTranslate2: %s", ckpt.path, ckpt.step, out)
    return Export(out, ckpt.path, ckpt.step, files)


def _note(path: Path, step: int, run: Any, text: Any, ct2_version: str) -> dict[str, Any]:
    decode = run.decode
    return {
        "format": "ctranslate2",
        "attnlab_version": __version__,
        "ctranslate2_version": ct2_version,
        "checkpoint": str(path),
        "step": step,
        "task": run.task_name,
        "model": {k: getattr(run.model, k) for k in ("d_model", "num_heads", "ffn_dim", "encoder_layers",
                                                     "decoder_layers", "norm_first", "activation", "positional",
                                                     "share_embeddings", "tie_output", "max_len")},
        "tokenize": {"source": SOURCE_SPM, "target": TARGET_SPM, "joint": text.src_tokenizer == text.tgt_tokenizer},
        "vocabulary": {"source_size": len(text.src_vocab), "target_size": len(text.tgt_vocab),
                       "shared": text.src_vocab == text.tgt_vocab},
        "max_source_tokens": run.data.max_len,
        "decode": {"beam_size": decode.beam_size, "batch_size": decode.batch_size, "max_len": decode.max_len,
                   "attnlab_length_penalty": decode.length_penalty},
        "ctranslate2_options": {"beam_size": 1, "length_penalty": 0.0, "min_decoding_length": 0,
                                "max_input_length": run.data.max_len, "max_decoding_length": decode.max_len},
        "max_decoding_length_if_null": "2 * the batch's longest source in pieces + 10",
    }


_README = """\
# {name}: an attnlab Transformer exported to CTranslate2

From `{checkpoint}` (step {step}, {task}), by attnlab {attnlab_version} with ctranslate2 {ctranslate2_version}.

| file | what |
|---|---|
| `model.bin`, `config.json`, `*_vocabulary.json` | the CTranslate2 model and its vocabularies |
| `source.spm` | SentencePiece model: input text -> pieces |
| `target.spm` | SentencePiece model: output pieces -> text ({joint}) |
| `attnlab_export.json` | these settings, machine-readable |

## Translate

```python
import ctranslate2
import sentencepiece as spm

source = spm.SentencePieceProcessor(model_file="{out}/source.spm")
target = spm.SentencePieceProcessor(model_file="{out}/target.spm")
translator = ctranslate2.Translator("{out}", device="cpu", compute_type="float32")
pieces = [source.encode(s, out_type=str)[:{max_src}] for s in ["A man rides a bike."]]
results = translator.translate_batch(pieces, beam_size=1, min_decoding_length=0,
                                     max_decoding_length=2 * max(map(len, pieces)) + 10)
print([target.decode(r.hypotheses[0]) for r in results])
```

With attnlab installed: `attnlab.export.translate_ctranslate2("{out}", sentences, beam_size=1)` does the same with
attnlab's batching and detokenization (an unknown output piece stays `<unk>`; SentencePiece writes ` ⁇ `).

* Sources get no `<bos>`/`<eos>` (CTranslate2 knows from `config.json`); outputs start after `<bos>`.
* `min_decoding_length=0`: CTranslate2's default of 1 forbids the empty output attnlab allows.
* Sources longer than {max_src} pieces were never seen in training; attnlab reads only their first {max_src}.
* Greedy output (`beam_size=1`) is attnlab's, token for token. Beam search agrees with `length_penalty=0`
  (CTranslate2's default is 1, dividing by `length ** 1`; attnlab divides by `((5 + length) / 6) ** alpha`).
* `<pad>` and `<bos>` carry an output bias of {impossible:g}, so they are never emitted, as in attnlab's decoders.
  Log-probabilities (`return_scores`, `score_batch`) are therefore normalized over the other tokens: higher than
  attnlab's by `-log(1 - p(<pad>) - p(<bos>))` per token (label smoothing leaves up to ~1e-3 there).
* `compute_type="int8"` quantizes when loading; outputs may then differ from attnlab's float32 ones.
"""


def _readme(note: dict[str, Any], out: Path) -> str:
    joint = "the same file as source.spm: one joint model" if note["tokenize"]["joint"] else "its own model"
    return _README.format(name=out.name, out=out, max_src=note["max_source_tokens"], joint=joint,
                          impossible=IMPOSSIBLE_LOGIT, **note)


# ------------------------------------------------------------------------------------------ translate

def ct2_options(*, beam_size: int, max_len: int, length_penalty: float = 0.0) -> dict[str, Any]:
    """``translate_batch`` options under which CTranslate2 decodes like attnlab's ``greedy_decode``/``beam_search``
    with the same ``max_len`` (``<eos>`` included) and, for beams, ``length_penalty=0``."""
    return {"beam_size": beam_size, "max_decoding_length": max_len, "min_decoding_length": 0,
            "length_penalty": length_penalty, "max_input_length": 0}


class ExportedTranslator:
    """An exported model directory loaded for translation: SentencePiece in, ``ctranslate2.Translator``, text out.

    Args:
        model_dir: a directory written by :func:`export_ctranslate2`.
        device, compute_type, intra_threads, inter_threads: passed to ``ctranslate2.Translator``.

    Raises:
        CheckpointError: ``model_dir`` is no complete export.
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", compute_type: str = "default",
                 intra_threads: int = 0, inter_threads: int = 1) -> None:
        ct2 = _require_ctranslate2()
        self.model_dir = Path(model_dir)
        try:
            self.note = json.loads((self.model_dir / NOTE_FILE).read_text(encoding="utf-8"))
            self.source = SentencePieceTokenizer((self.model_dir / SOURCE_SPM).read_bytes())
            self.target = SentencePieceTokenizer((self.model_dir / TARGET_SPM).read_bytes())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.model_dir}: not a complete attnlab CTranslate2 export ({one_line(exc)}); "
                                  f"write one with `attnlab export --format ctranslate2`") from None
        try:
            self.translator = ct2.Translator(str(self.model_dir), device=device, compute_type=compute_type,
                                             intra_threads=intra_threads, inter_threads=inter_threads)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.model_dir}: CTranslate2 cannot load it ({one_line(exc)})") from None

    def translate_pieces(self, batch: list[list[str]], *, beam_size: int, max_len: int,
                         length_penalty: float = 0.0) -> list[list[str]]:
        """One batch of source pieces -> each sentence's best target pieces (without ``<eos>``), uncut and unsorted."""
        results = self.translator.translate_batch(batch, **ct2_options(beam_size=beam_size, max_len=max_len,
                                                                       length_penalty=length_penalty))
        return [list(r.hypotheses[0]) for r in results]

    def translate(self, sentences: list[str], *, beam_size: int = 1, batch_size: int | None = None,
                  max_len: int | None = None, length_penalty: float = 0.0) -> list[str]:
        """Translate ``sentences`` (order kept), batched as :meth:`attnlab.pipeline.Translator.translate` batches.

        Args:
            beam_size: 1 = greedy (attnlab's output, token for token).
            batch_size: sentences per batch, longest first (default: the run's ``decode.batch_size``).
            max_len: most output pieces, ``<eos>`` included (default: the run's ``decode.max_len``, else twice the
                batch's longest source plus 10).
            length_penalty: CTranslate2's (``score / length ** alpha``); 0 ranks by log-probability.
        """
        decode = self.note["decode"]
        batch_size = batch_size or decode["batch_size"]
        max_src = self.note["max_source_tokens"]
        pieces = [self.source.tokenize(s)[:max_src] for s in sentences]
        out = [""] * len(sentences)  # an empty source gets an empty output without the model, as in attnlab
        order = sorted((i for i, p in enumerate(pieces) if p), key=lambda i: -len(pieces[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            limit = max_len or decode["max_len"] or default_max_len(max(len(pieces[i]) for i in chunk))
            hyps = self.translate_pieces([pieces[i] for i in chunk], beam_size=beam_size, max_len=limit,
                                         length_penalty=length_penalty)
            for i, hyp in zip(chunk, hyps, strict=True):
                out[i] = self.target.detokenize(hyp)
        return out


def translate_ctranslate2(model_dir: str | Path, sentences: list[str], *, beam_size: int = 1,
                          device: str = "cpu", compute_type: str = "default", **options: Any) -> list[str]:
    """Load an exported model and translate ``sentences``; ``options`` go to :meth:`ExportedTranslator.translate`.

    Loading takes a moment: keep an :class:`ExportedTranslator` for repeated calls."""
    translator = ExportedTranslator(model_dir, device=device, compute_type=compute_type)
    return translator.translate(sentences, beam_size=beam_size, **options)
