"""Export a Transformer translation checkpoint to Hugging Face's ``M2M100ForConditionalGeneration``, where it is exact.

:func:`export_hf` writes ``OUT/``: ``config.json``, ``generation_config.json`` and ``model.safetensors`` (by
``save_pretrained``, loadable with ``M2M100ForConditionalGeneration.from_pretrained(OUT, local_files_only=True)``),
``source.spm``/``target.spm`` (the SentencePiece models), ``source_vocab.json``/``target_vocab.json`` (attnlab's
tokens in id order: the model's ids), ``attnlab_export.json`` (provenance, decoding settings) and ``README.md``.

Why M2M100: of the encoder-decoders in ``transformers`` it is the one with attnlab's pre-LN layout -- LayerNorm
before each sublayer and a final LayerNorm per stack (eps 1e-5), token embeddings times ``sqrt(d_model)`` *then* plus
fixed sinusoids, biased q/k/v/out projections scaled by ``head_dim ** -0.5``, a ReLU or exact-GELU feed-forward
(``fc1``/``fc2``), and an output projection without bias. What it does not take from a checkpoint is the position
table: it rebuilds fairseq's at load time. So exactly these export, with ``<pad>``/``<bos>``/``<eos>`` = 0/1/2 and
``decoder_start_token_id`` = ``<bos>``, as attnlab decodes:

* ``model.kind: transformer`` with ``norm_first: true``, ``positional: fairseq``
  (:class:`~attnlab.attention.positional.FairseqSinusoidalPositionalEncoding`, M2M100's table row for row),
  ``copy: false``, either activation, and SentencePiece (bpe/unigram) tokenizers on both sides;
* shared embeddings with a tied output (M2M100's own layout: ``tie_word_embeddings: true``), or any other
  embedding/output layout whose source and target vocabularies have the same size: ``tie_word_embeddings: false``
  unties M2M100's encoder and decoder embeddings and ``lm_head``, and each gets attnlab's table.

Refused, with one :class:`ConfigError` line saying why: recurrent ``seq2seq`` models, classifiers, ViT and
captioners; ``copy: true`` (no pointer-generator in M2M100); post-LN (M2M100 is pre-LN); ``positional: sinusoidal``
and ``learned`` (below); separate vocabularies of different sizes (M2M100 has one ``vocab_size``); word and char
tokenizers (retrain with ``data.src_tokenizer=bpe``/``data.tgt_tokenizer=bpe``).

Why ``sinusoidal`` cannot be exported, not even by permuting the model dimensions: attnlab's table (Vaswani et al.)
interleaves ``sin``/``cos`` at frequencies ``a_i = 10000^(-i/(D/2))``; fairseq's puts a sine block before a cosine
block at ``b_i = 10000^(-i/(D/2 - 1))``, ``i = 0 .. D/2 - 1``, and attnlab's position ``p`` is its row ``p + 1``
(rows start after ``<pad>`` = 0). A permutation can turn the interleaving into blocks, but it cannot change a
column's frequency: ``a_i = b_j`` only when ``i (D/2 - 1) = j D/2``, i.e. ``i = j = 0`` (``D/2`` and ``D/2 - 1`` are
coprime), and the one shared frequency is shifted by one position. Sinusoids of distinct frequencies are linearly
independent, so no linear map of the dimensions works either. Numerically, over positions 0..1023 and for
D = 16, 32, 256, 512, 1024: no fairseq column is within 1e-5 of any attnlab column (only slow ones come within 1e-4:
0, 0, 5, 15, 39 of them), and the best permutation (a linear assignment on the largest column difference) still
leaves a largest difference of 2.00, 2.00, 2.00, 1.08 and 0.96 on values in [-1, 1] (lower bounds from each column's
nearest match: 1.32, 1.18, 1.11, 1.08, 0.96). Hence ``model.positional: fairseq``.

Equivalence (the tests check both): the teacher-forced logits of ``model(input_ids, attention_mask,
decoder_input_ids)`` are attnlab's ``model(src, src_lens, tgt_in).logits`` within float32 tolerance, on right-padded
batches (M2M100 numbers positions from the non-pad tokens, so left padding gives the same); and
``generate(num_beams=1, do_sample=False, max_new_tokens=max_len)`` returns :func:`attnlab.decode.greedy_decode`'s ids.
``<pad>`` and ``<bos>``, which attnlab's decoders never emit, are in ``suppress_tokens`` of
``generation_config.json``: M2M100's ``lm_head`` has no bias to hold the -1e4 CTranslate2's export uses, and
suppressing them keeps the logits themselves equal to attnlab's (``generate``'s processed scores are then normalized
over the other tokens, as CTranslate2's are). Positions past ``max_len`` are computed on demand by both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from attnlab import __version__
from attnlab.core.errors import ConfigError, short_repr
from attnlab.core.model_config import TransformerConfig
from attnlab.data.vocab import BOS_ID, EOS_ID, PAD_ID
from attnlab.export.base import Export, open_source, require, write_directory
from attnlab.export.ct2 import NOTE_FILE, README_FILE, SOURCE_SPM, TARGET_SPM
from attnlab.models.transformer import Transformer

log = logging.getLogger(__name__)

__all__ = ["POSITIONS", "SOURCE_VOCAB", "SUPPRESSED", "TARGET_VOCAB", "check_exportable_hf", "export_hf",
           "hf_generate_options", "m2m100_model"]

SOURCE_VOCAB = "source_vocab.json"
TARGET_VOCAB = "target_vocab.json"
POSITIONS = 1024
"""Least ``max_position_embeddings`` written (``model.max_len`` if larger): M2M100 sizes its first table with it and
warns past it, while attnlab and M2M100 both compute any position on demand, the same values at every size."""
SUPPRESSED = (PAD_ID, BOS_ID)
"""Ids ``generate`` must never emit (``suppress_tokens``), as attnlab's decoders never do."""
_RETRAIN = "retrain with --set model.positional=fairseq --set model.norm_first=true"


def _require_transformers() -> ModuleType:
    return require("transformers", "export to Hugging Face", "hf")


# ------------------------------------------------------------------------------------------ what exports

def check_exportable_hf(config: Any, where: str) -> None:
    """Refuse a model config ``M2M100ForConditionalGeneration`` cannot compute exactly; ``config`` is the run's
    model section (vocabulary sizes are checked by :func:`m2m100_model`).

    Raises:
        ConfigError: one line naming what differs and what to do.
    """
    if not isinstance(config, TransformerConfig):
        kind = getattr(config, "kind", type(config).__name__)
        why = "it has no recurrent layers" if kind == "seq2seq" else "it is no text-to-text encoder-decoder"
        raise ConfigError(f"checkpoint {where}: a {kind} model cannot be exported to Hugging Face M2M100 ({why}); "
                          f"only Transformer translation/summarization models (model.kind: transformer) export")
    if config.copy:
        raise ConfigError(f"checkpoint {where}: model.copy is true, and M2M100 has no pointer-generator output (a "
                          f"copy attention mixed into the output distribution); only copy: false Transformers export")
    if not config.norm_first:
        raise ConfigError(f"checkpoint {where}: model.norm_first is false (post-LN), and M2M100 is pre-LN (LayerNorm "
                          f"before each sublayer, a final LayerNorm per stack), so the logits would differ; {_RETRAIN}")
    if config.positional == "sinusoidal":
        raise ConfigError(f"checkpoint {where}: model.positional is 'sinusoidal', attnlab's interleaved sin/cos table; "
                          f"M2M100 rebuilds fairseq's sin-then-cos table (other frequencies, rows from <pad>+1) and no "
                          f"permutation of dimensions maps one onto the other, so the logits would differ; {_RETRAIN}")
    if config.positional != "fairseq":
        raise ConfigError(f"checkpoint {where}: model.positional is {short_repr(config.positional)}, and M2M100 has "
                          f"no trained position table (it rebuilds fairseq's sinusoids when loading); {_RETRAIN}")


_SHIPPED = "the Hugging Face export ships SentencePiece models to tokenize with"


# ------------------------------------------------------------------------------------------ the model

def _attention(prefix: str, attn: nn.Module) -> dict[str, torch.Tensor]:
    """M2M100's separate q/k/v projections are the row blocks of attnlab's (PyTorch's) packed ``in_proj_weight``."""
    weight = attn.in_proj_weight  # (3D, D): q, k, v rows
    d = weight.shape[1]
    bias = attn.in_proj_bias if attn.in_proj_bias is not None else weight.new_zeros(3 * d)
    out_bias = attn.out_proj.bias if attn.out_proj.bias is not None else weight.new_zeros(d)
    out = {f"{prefix}.out_proj.weight": attn.out_proj.weight, f"{prefix}.out_proj.bias": out_bias}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{prefix}.{name}.weight"] = weight[i * d:(i + 1) * d]
        out[f"{prefix}.{name}.bias"] = bias[i * d:(i + 1) * d]
    return out


def _norm(prefix: str, norm: nn.LayerNorm) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": norm.weight, f"{prefix}.bias": norm.bias}


def _ffn(prefix: str, ffn: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.fc1.weight": ffn.linear1.weight, f"{prefix}.fc1.bias": ffn.linear1.bias,
            f"{prefix}.fc2.weight": ffn.linear2.weight, f"{prefix}.fc2.bias": ffn.linear2.bias}


def _state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """attnlab's weights under M2M100's names; each of M2M100's four token tables gets its attnlab counterpart."""
    sd = {"model.shared.weight": model.src_embedding.weight,
          "model.encoder.embed_tokens.weight": model.src_embedding.weight,
          "model.decoder.embed_tokens.weight": model.tgt_embedding.weight,
          "lm_head.weight": model.output.weight}
    for i, layer in enumerate(model.encoder_layers):
        p = f"model.encoder.layers.{i}"
        sd |= _attention(f"{p}.self_attn", layer.self_attn) | _norm(f"{p}.self_attn_layer_norm", layer.norm1)
        sd |= _ffn(p, layer.ffn) | _norm(f"{p}.final_layer_norm", layer.norm2)
    for i, layer in enumerate(model.decoder_layers):
        p = f"model.decoder.layers.{i}"
        sd |= _attention(f"{p}.self_attn", layer.self_attn) | _norm(f"{p}.self_attn_layer_norm", layer.norm1)
        sd |= _attention(f"{p}.encoder_attn", layer.cross_attn) | _norm(f"{p}.encoder_attn_layer_norm", layer.norm2)
        sd |= _ffn(p, layer.ffn) | _norm(f"{p}.final_layer_norm", layer.norm3)
    sd |= _norm("model.encoder.layer_norm", model.encoder_norm) | _norm("model.decoder.layer_norm", model.decoder_norm)
    return {k: v.detach().to(device="cpu", dtype=torch.float32).clone() for k, v in sd.items()}


def m2m100_model(model: Transformer, where: str = "model") -> Any:
    """The ``M2M100ForConditionalGeneration`` (eval mode, float32, CPU) that computes ``model``'s logits, with the
    generation config that decodes like :func:`attnlab.decode.greedy_decode`.

    Raises:
        ConfigError: a model it cannot represent (:func:`check_exportable_hf`; source and target vocabularies of
            different sizes), or ``transformers`` not installed.
    """
    _require_transformers()
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration

    cfg = model.config
    check_exportable_hf(cfg, where)
    src_size, tgt_size = model.src_embedding.num_embeddings, model.tgt_embedding.num_embeddings
    if src_size != tgt_size:
        raise ConfigError(f"checkpoint {where}: the source vocabulary has {src_size} entries and the target "
                          f"{tgt_size}, and M2M100 has one vocab_size for both sides; retrain with a joint vocabulary "
                          f"(--set data.joint_vocab=true --set model.share_embeddings=true)")
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if eps != {1e-5}:  # M2M100's nn.LayerNorm default; attnlab's too, unless a layer was changed
        raise ConfigError(f"checkpoint {where}: LayerNorm eps {sorted(eps)}, and M2M100's is fixed at 1e-05")
    # M2M100's own layout (one table for all) when attnlab has it; else every table is its own, written as attnlab's.
    tied = cfg.share_embeddings and cfg.tie_output
    config = M2M100Config(
        vocab_size=tgt_size, d_model=cfg.d_model, max_position_embeddings=max(cfg.max_len, POSITIONS),
        encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.num_heads, decoder_attention_heads=cfg.num_heads,
        encoder_ffn_dim=cfg.ffn_dim, decoder_ffn_dim=cfg.ffn_dim, activation_function=cfg.activation,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.dropout,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, scale_embedding=True, tie_word_embeddings=tied,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, decoder_start_token_id=BOS_ID)
    hf = M2M100ForConditionalGeneration(config)
    hf.load_state_dict(_state_dict(model), strict=True)
    hf.generation_config = GenerationConfig(
        decoder_start_token_id=BOS_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        forced_bos_token_id=None, suppress_tokens=list(SUPPRESSED))
    return hf.eval()


def hf_generate_options(*, max_len: int) -> dict[str, Any]:
    """``generate`` options under which M2M100 decodes like ``greedy_decode(..., max_len=max_len)`` (``<eos>``
    included in ``max_len``); ``suppress_tokens`` is already in the exported ``generation_config.json``."""
    return {"num_beams": 1, "do_sample": False, "max_new_tokens": max_len, "min_length": 0,
            "suppress_tokens": list(SUPPRESSED), "forced_bos_token_id": None}


# ------------------------------------------------------------------------------------------ export

def export_hf(checkpoint_dir: str | Path, out_dir: str | Path) -> Export:
    """Write the Hugging Face M2M100 model of a Transformer translation checkpoint to ``out_dir`` (see the module
    docstring for what exports and what is refused).

    ``checkpoint_dir`` is a checkpoint or a run directory (its ``best/``, else ``last/``). ``out_dir`` must not
    exist or be empty; it appears complete or not at all (written beside it, then renamed).

    Raises:
        ConfigError: a model or tokenizer M2M100 cannot represent exactly, an existing ``out_dir``, or
            ``transformers`` not installed.
        CheckpointError: a missing, truncated or corrupt checkpoint.
    """
    transformers = _require_transformers()
    out = Path(out_dir)
    src = open_source(checkpoint_dir, out, check_exportable_hf, _SHIPPED)
    ckpt, run, text, model, where = src.checkpoint, src.run, src.text, src.model, src.where
    hf = m2m100_model(model, where)
    note = _note(ckpt.path, ckpt.step, run, text, transformers.__version__)

    def fill(tmp: Path) -> None:
        _save_quietly(hf, tmp)
        text.src_tokenizer.save(tmp / SOURCE_SPM)
        text.tgt_tokenizer.save(tmp / TARGET_SPM)
        for name, vocab in ((SOURCE_VOCAB, text.src_vocab), (TARGET_VOCAB, text.tgt_vocab)):
            (tmp / name).write_text(json.dumps(vocab.tokens, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / NOTE_FILE).write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")
        (tmp / README_FILE).write_text(_readme(note, out), encoding="utf-8")

    files = write_directory(out, fill)
    log.debug("exported %s (step %d) to Hugging Face M2M100: %s", ckpt.path, ckpt.step, out)
    return Export(out, ckpt.path, ckpt.step, files)


def _save_quietly(hf: Any, out: Path) -> None:
    """``save_pretrained``: config.json, generation_config.json and model.safetensors (5.x writes safetensors only),
    without the progress bar transformers draws for the one shard of a model this size; its setting is restored."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        hf.save_pretrained(out)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _note(path: Path, step: int, run: Any, text: Any, transformers_version: str) -> dict[str, Any]:
    decode = run.decode
    return {
        "format": "hf",
        "hf_class": "M2M100ForConditionalGeneration",
        "attnlab_version": __version__,
        "transformers_version": transformers_version,
        "checkpoint": str(path),
        "step": step,
        "task": run.task_name,
        "model": {k: getattr(run.model, k) for k in ("d_model", "num_heads", "ffn_dim", "encoder_layers",
                                                     "decoder_layers", "norm_first", "activation", "positional",
                                                     "share_embeddings", "tie_output", "max_len")},
        "tokenize": {"source": SOURCE_SPM, "target": TARGET_SPM, "joint": text.src_tokenizer == text.tgt_tokenizer,
                     "source_vocab": SOURCE_VOCAB, "target_vocab": TARGET_VOCAB},
        "max_source_tokens": run.data.max_len,
        "decode": {"beam_size": decode.beam_size, "batch_size": decode.batch_size, "max_len": decode.max_len,
                   "attnlab_length_penalty": decode.length_penalty},
        "generate_options": {"num_beams": 1, "do_sample": False, "min_length": 0, "max_new_tokens": decode.max_len},
        "max_new_tokens_if_null": "2 * the batch's longest source in pieces + 10",
    }


_README = """\
# {name}: an attnlab Transformer exported to Hugging Face (M2M100)

From `{checkpoint}` (step {step}, {task}), by attnlab {attnlab_version} for transformers {transformers_version}.
Same logits as attnlab (float32), same greedy output, token for token.

| file | what |
|---|---|
| `config.json`, `generation_config.json`, `model.safetensors` | the `M2M100ForConditionalGeneration` |
| `source.spm`, `{source_vocab}` | SentencePiece model: input text -> pieces; pieces -> ids (list index) |
| `target.spm`, `{target_vocab}` | ids -> pieces -> output text ({joint}) |
| `attnlab_export.json` | these settings, machine-readable |

## Translate

```python
import json
import sentencepiece as spm
import torch
from transformers import M2M100ForConditionalGeneration

out = "{out}"
model = M2M100ForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
source = spm.SentencePieceProcessor(model_file=f"{{out}}/source.spm")
source_ids = {{t: i for i, t in enumerate(json.load(open(f"{{out}}/{source_vocab}", encoding="utf-8")))}}
target_tokens = json.load(open(f"{{out}}/{target_vocab}", encoding="utf-8"))

sentences = ["A man rides a bike."]
ids = [[source_ids.get(p, 3) for p in source.encode(s, out_type=str)[:{max_src}]] for s in sentences]  # 3 = <unk>
batch = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)  # 0 = <pad>
for row, seq in enumerate(ids):
    batch[row, :len(seq)] = torch.tensor(seq)
with torch.no_grad():
    generated = model.generate(input_ids=batch, attention_mask=batch.ne(0), num_beams=1, do_sample=False,
                               max_new_tokens={max_new}, min_length=0)
for row in generated.tolist():
    pieces = [target_tokens[i] for i in row[1:] if i > 2]  # drop <bos> (the start), <eos> and <pad>
    print("".join(pieces).replace("\\u2581", " ").strip())  # or target.spm's decode_pieces for byte pieces
```

* Ids are attnlab's: `<pad>` 0, `<bos>` 1 (the decoder start), `<eos>` 2, `<unk>` 3; sources get no `<bos>`/`<eos>`.
* `generation_config.json` suppresses `<pad>` and `<bos>` (`suppress_tokens`), which attnlab never emits; the
  model's logits are attnlab's unchanged, `generate`'s scores are normalized over the other tokens.
* Greedy output (`num_beams=1`) is attnlab's, token for token; `min_length=0` allows the empty output attnlab allows.
* Sources longer than {max_src} pieces were never seen in training; attnlab reads only their first {max_src}.
  An empty source gets an empty output from attnlab without running the model; leave it out of the batch.
* Positions: M2M100 rebuilds fairseq's sinusoids, which this model was trained with (`model.positional: fairseq`).
  Padding on either side is fine: positions count the non-`<pad>` tokens.
"""


def _readme(note: dict[str, Any], out: Path) -> str:
    joint = "the same SentencePiece model as source.spm" if note["tokenize"]["joint"] else "its own model"
    max_len = note["decode"]["max_len"]
    max_new = str(max_len) if max_len else "2 * batch.shape[1] + 10"
    return _README.format(name=out.name, out=out, max_src=note["max_source_tokens"], joint=joint, max_new=max_new,
                          source_vocab=SOURCE_VOCAB, target_vocab=TARGET_VOCAB, **note)
