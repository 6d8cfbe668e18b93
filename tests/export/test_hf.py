"""Export to Hugging Face M2M100: the model ``from_pretrained`` loads computes attnlab's logits and greedy ids.

Two tiny runs on the synthetic dates task with a joint BPE model and ``model.positional: fairseq``: one trained for
120 steps (pre-LN, shared and tied embeddings, ReLU: M2M100's own layout; it emits varied outputs of varied lengths),
and one of two steps in the other exportable layout (output projection untied from the shared embedding, GELU, two
layers a side, a position table of 16 rows that longer inputs run past). Refusals are checked on configs, on small
models and on one word-tokenized checkpoint. transformers is the optional ``hf`` extra; these tests need it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from export_helpers import train_tiny  # noqa: E402
from transformers import M2M100ForConditionalGeneration  # noqa: E402

from attnlab.core.errors import ConfigError  # noqa: E402
from attnlab.core.model_config import Seq2SeqConfig, TransformerConfig  # noqa: E402
from attnlab.data.synthetic import TASKS  # noqa: E402
from attnlab.data.vocab import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
from attnlab.decode import greedy_decode  # noqa: E402
from attnlab.export import FORMATS, export_checkpoint  # noqa: E402
from attnlab.export.hf import check_exportable_hf, hf_generate_options, m2m100_model  # noqa: E402
from attnlab.models.transformer import Transformer  # noqa: E402
from attnlab.pipeline import Translator, load_translator  # noqa: E402

EXACT = {"positional": "fairseq", "share_embeddings": True}


_train = train_tiny


def _export(root: Path, model: dict[str, Any], steps: int) -> tuple[Translator, Any, Path]:
    ckpt = _train(root / "run", model, steps=steps)
    export_checkpoint(ckpt, root / "hf", "hf")
    hf = M2M100ForConditionalGeneration.from_pretrained(root / "hf", local_files_only=True).eval()
    return load_translator(ckpt), hf, root / "hf"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Translator, Any, Path]:
    """The 120-step run (about 5 s), its export and the exported model loaded by ``from_pretrained``."""
    return _export(tmp_path_factory.mktemp("hf"), EXACT, 120)


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Translator, Any, Path]:
    """The other exportable layout, two steps: random-ish weights, but a real checkpoint."""
    return _export(tmp_path_factory.mktemp("hfu"), {**EXACT, "tie_output": False, "activation": "gelu",
                                                     "encoder_layers": 2, "decoder_layers": 2, "max_len": 16}, 2)


def _sources(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    odd = ["é 3 mars 1999", "1/1/01", "the 31st of december 1999, the 31st of december 1999"]
    return [TASKS["dates"].sample(rng)[0] for _ in range(count - len(odd))] + odd


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)  # (B, T), right-padded
    for row, seq in enumerate(rows):
        out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def _batches(tr: Translator, sentences: list[str], size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = [tr.text.src_vocab.encode(tr.text.src_tokenizer.tokenize(s)) for s in sentences]
    return [(_pad(ids[i:i + size]), torch.tensor([len(s) for s in ids[i:i + size]]))
            for i in range(0, len(ids), size)]


def test_the_export_directory_holds_an_m2m100_model_its_tokenizers_and_a_note(trained, untied) -> None:
    assert "hf" in FORMATS
    for (tr, hf, out), tied in ((trained, True), (untied, False)):
        files = {p.name for p in out.iterdir()}
        assert {"config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm",
                "source_vocab.json", "target_vocab.json", "attnlab_export.json", "README.md"} <= files
        assert (out / "source.spm").read_bytes() == tr.text.src_tokenizer.model_proto
        assert (out / "target.spm").read_bytes() == tr.text.tgt_tokenizer.model_proto
        assert json.loads((out / "source_vocab.json").read_text()) == tr.text.src_vocab.tokens
        assert json.loads((out / "target_vocab.json").read_text()) == tr.text.tgt_vocab.tokens
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == "m2m_100" and config["scale_embedding"] is True
        assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (PAD_ID, BOS_ID, EOS_ID)
        assert config["decoder_start_token_id"] == BOS_ID and config["tie_word_embeddings"] is tied
        generation = json.loads((out / "generation_config.json").read_text())
        assert generation["suppress_tokens"] == [PAD_ID, BOS_ID] and generation.get("forced_bos_token_id") is None
        assert hf.generation_config.decoder_start_token_id == BOS_ID
        assert "from_pretrained" in (out / "README.md").read_text()
    # M2M100's tables: one shared tensor when tied; four equal but separate ones (lm_head its own) when untied
    tr, hf, _ = untied
    assert hf.lm_head.weight.data_ptr() != hf.model.decoder.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(hf.lm_head.weight, tr.model.output.weight, rtol=0, atol=0)
    assert not torch.equal(hf.lm_head.weight, hf.model.decoder.embed_tokens.weight)
    assert trained[1].lm_head.weight.data_ptr() == trained[1].model.shared.weight.data_ptr()


@pytest.mark.parametrize("which", ["trained", "untied"])
def test_teacher_forced_logits_equal_attnlabs_on_padded_batches(which: str, request) -> None:
    """The weights test: M2M100's logits of attnlab's greedy outputs (teacher-forced) equal attnlab's at every
    non-pad position, in right-padded batches of varied lengths (and past the untied run's 16-row table)."""
    tr, hf, _ = request.getfixturevalue(which)
    longest = 0
    for src, lens in _batches(tr, _sources(40)):
        targets = [h.tokens for h in greedy_decode(tr.model, src, lens, max_len=20)]
        tgt_in = _pad([[BOS_ID, *toks] for toks in targets])  # (B, Tt)
        with torch.no_grad():
            ours = tr.model(src, lens, tgt_in).logits  # (B, Tt, V)
            theirs = hf(input_ids=src, attention_mask=src.ne(PAD_ID), decoder_input_ids=tgt_in).logits
        assert theirs.shape == ours.shape
        for row, toks in enumerate(targets):
            torch.testing.assert_close(theirs[row, :len(toks) + 1], ours[row, :len(toks) + 1], rtol=0, atol=1e-5)
        assert ours.abs().amax() > 1  # real logits, not zeros
        longest = max(longest, src.shape[1], tgt_in.shape[1])
    if which == "untied":
        assert longest > tr.model.config.max_len  # positions computed on demand on both sides


def test_left_padding_gives_m2m100_the_same_logits(trained) -> None:
    """M2M100 numbers positions from the non-pad tokens, so a left-padded source (which attnlab never makes) is fine,
    as the README says."""
    tr, hf, _ = trained
    src, lens = _batches(tr, _sources(8))[0]
    left = torch.full_like(src, PAD_ID)
    for row, n in enumerate(lens.tolist()):
        left[row, src.shape[1] - n:] = src[row, :n]
    tgt_in = torch.full((src.shape[0], 1), BOS_ID)
    with torch.no_grad():
        right = hf(input_ids=src, attention_mask=src.ne(PAD_ID), decoder_input_ids=tgt_in).logits
        other = hf(input_ids=left, attention_mask=left.ne(PAD_ID), decoder_input_ids=tgt_in).logits
    assert not torch.equal(left, src)
    torch.testing.assert_close(other, right, rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["trained", "untied"])
def test_greedy_generate_ids_equal_attnlab_greedy_decode(which: str, request) -> None:
    tr, hf, _ = request.getfixturevalue(which)
    outputs, ended = [], 0
    for src, lens in _batches(tr, _sources(96)):
        hyps = greedy_decode(tr.model, src, lens, max_len=24)
        with torch.no_grad():
            gen = hf.generate(input_ids=src, attention_mask=src.ne(PAD_ID), **hf_generate_options(max_len=24))
        assert bool((gen[:, 0] == BOS_ID).all())
        expected = _pad([h.tokens + [EOS_ID] * h.ended for h in hyps])  # then <pad> after <eos>, as generate pads
        theirs = gen[:, 1:]
        width = max(expected.shape[1], theirs.shape[1])
        assert torch.equal(torch.nn.functional.pad(theirs, (0, width - theirs.shape[1])),
                           torch.nn.functional.pad(expected, (0, width - expected.shape[1])))
        outputs += [tuple(h.tokens) for h in hyps]
        ended += sum(h.ended for h in hyps)
    assert len(set(outputs)) > (10 if which == "trained" else 3)  # a real comparison: not one output repeated
    if which == "trained":  # it learned to stop, at various lengths
        assert ended > len(outputs) // 2 and len({len(o) for o in outputs}) > 2


def test_generation_config_alone_suppresses_pad_and_bos(trained) -> None:
    """Plain ``generate`` (no suppress option passed): generation_config.json makes <pad> and <bos> impossible at
    every step, as attnlab's decoders do, and leaves the other scores finite."""
    tr, hf, _ = trained
    src, _ = _batches(tr, _sources(8))[0]
    with torch.no_grad():
        gen = hf.generate(input_ids=src, attention_mask=src.ne(PAD_ID), num_beams=1, do_sample=False,
                          max_new_tokens=6, min_length=0, output_scores=True, return_dict_in_generate=True)
    assert len(gen.scores) >= 1
    for scores in gen.scores:  # (B, V) per step, after the logits processors
        assert bool(torch.isneginf(scores[:, [PAD_ID, BOS_ID]]).all())
        assert bool(torch.isfinite(scores[:, EOS_ID + 1:]).all())


@pytest.mark.parametrize(("config", "words"), [
    (TransformerConfig(), "model.positional is 'sinusoidal', attnlab's interleaved sin/cos table"),
    (TransformerConfig(positional="learned"), "no trained position table"),
    (TransformerConfig(positional="fairseq", norm_first=False), "model.norm_first is false (post-LN)"),
    (TransformerConfig(positional="fairseq", share_embeddings=True, copy=True), "no pointer-generator"),
    (Seq2SeqConfig(rnn="gru"), "a seq2seq model cannot be exported to Hugging Face M2M100 (it has no recurrent"),
])
def test_inexact_configs_are_refused_with_one_line(config: Any, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_exportable_hf(config, "runs/x/best")
    assert words in str(err.value) and "\n" not in str(err.value)
    if isinstance(config, TransformerConfig) and not config.copy:
        assert "--set model.positional=fairseq" in str(err.value)


def test_vocabularies_of_different_sizes_are_refused_equal_ones_export_exactly() -> None:
    torch.manual_seed(0)
    separate = TransformerConfig(d_model=16, num_heads=2, ffn_dim=24, encoder_layers=1, decoder_layers=1,
                                 positional="fairseq", dropout=0.0)
    with pytest.raises(ConfigError, match="the source vocabulary has 30 entries and the target 20, and M2M100 has "
                                          "one vocab_size"):
        m2m100_model(Transformer(separate, 30, 20))
    model = Transformer(separate, 30, 30).eval()  # two tables of one size: M2M100 with tie_word_embeddings false
    hf = m2m100_model(model)
    src, tgt = torch.randint(4, 30, (2, 7)), torch.randint(4, 30, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=src, decoder_input_ids=tgt).logits,
                                   model(src, torch.tensor([7, 7]), tgt).logits, rtol=0, atol=1e-5)
    assert not torch.equal(hf.model.encoder.embed_tokens.weight, hf.model.decoder.embed_tokens.weight)


def test_refusals_of_checkpoints_and_a_missing_package_leave_nothing_behind(trained, tmp_path, monkeypatch) -> None:
    ckpt = trained[0].path
    with pytest.raises(ConfigError, match="already exists"):
        export_checkpoint(ckpt, trained[2], "hf")
    word = _train(tmp_path / "word", EXACT, steps=1, data={"src_tokenizer": "word", "tgt_tokenizer": "word"})
    with pytest.raises(ConfigError, match="data.src_tokenizer is 'word'") as err:
        export_checkpoint(word, tmp_path / "w", "hf")
    assert "\n" not in str(err.value) and not (tmp_path / "w").exists()
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'attnlab\[hf\]'"):
        export_checkpoint(ckpt, tmp_path / "y", "hf")
    assert not list(tmp_path.glob(".y*")) and not (tmp_path / "y").exists()
