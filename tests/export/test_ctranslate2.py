"""Export to CTranslate2: the exported model computes attnlab's log-probabilities and decodes to attnlab's ids.

Two tiny runs on the synthetic dates task with a joint BPE model: one trained for 120 steps (pre-LN, shared and tied
embeddings, sinusoidal positions, ReLU: the recipes' layout; it emits varied outputs of varied lengths), and one of
two steps in every other exportable setting (post-LN, GELU, learned positions, separate embeddings and output
projection, separate SentencePiece models). CTranslate2 is the optional ``export`` extra; these tests need it.
"""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch

pytest.importorskip("ctranslate2")
pytest.importorskip("sentencepiece")

from export_helpers import train_tiny  # noqa: E402

from attnlab.core.errors import CheckpointError, ConfigError  # noqa: E402
from attnlab.data.synthetic import TASKS  # noqa: E402
from attnlab.data.vocab import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
from attnlab.decode import beam_search, greedy_decode  # noqa: E402
from attnlab.export import FORMATS, export_checkpoint  # noqa: E402
from attnlab.export.ct2 import SINUSOID_POSITIONS, ExportedTranslator, translate_ctranslate2  # noqa: E402
from attnlab.pipeline import Translator, load_translator  # noqa: E402

_train = train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Translator, ExportedTranslator]:
    """The 120-step run (about 5 s) and its export, loaded."""
    root = tmp_path_factory.mktemp("ct2")
    ckpt = _train(root / "run", {"share_embeddings": True}, steps=120)
    export_checkpoint(ckpt, root / "ct2", "ctranslate2")
    return load_translator(ckpt), ExportedTranslator(root / "ct2", compute_type="float32", intra_threads=1)


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Translator, ExportedTranslator]:
    """Every other exportable setting, two steps: random-ish weights, but a real checkpoint."""
    root = tmp_path_factory.mktemp("ct2v")
    ckpt = _train(root / "run", {"norm_first": False, "activation": "gelu", "positional": "learned", "max_len": 64,
                                 "share_embeddings": False, "tie_output": False, "encoder_layers": 2,
                                 "decoder_layers": 2}, steps=2, data={"joint_vocab": False, "max_len": 40})
    export_checkpoint(ckpt, root / "ct2", "ctranslate2")
    return load_translator(ckpt), ExportedTranslator(root / "ct2", compute_type="float32", intra_threads=1)


@pytest.fixture(scope="module")
def fairseq(tmp_path_factory: pytest.TempPathFactory) -> tuple[Translator, ExportedTranslator]:
    """fairseq's sin-then-cos positions (the Hugging Face export's): CTranslate2 gets that table."""
    root = tmp_path_factory.mktemp("ct2f")
    ckpt = _train(root / "run", {"positional": "fairseq", "share_embeddings": True}, steps=120)
    export_checkpoint(ckpt, root / "ct2", "ctranslate2")
    return load_translator(ckpt), ExportedTranslator(root / "ct2", compute_type="float32", intra_threads=1)


def _sources(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    odd = ["é 3 mars 1999", "1/1/01", "the 31st of december 1999, the 31st of december 1999"]
    return [TASKS["dates"].sample(rng)[0] for _ in range(count - len(odd))] + odd


def _batches(tr: Translator, sentences: list[str], size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor, list]]:
    """Padded id batches and the same sources as CTranslate2 pieces (an unknown piece: the string ``<unk>``)."""
    vocab = tr.text.src_vocab
    ids = [vocab.encode(tr.text.src_tokenizer.tokenize(s)) for s in sentences]
    out = []
    for start in range(0, len(ids), size):
        chunk = ids[start:start + size]
        src = torch.zeros(len(chunk), max(map(len, chunk)), dtype=torch.long)
        for row, seq in enumerate(chunk):
            src[row, :len(seq)] = torch.tensor(seq)
        out.append((src, torch.tensor([len(s) for s in chunk]), [[vocab.id_to_token(i) for i in s] for s in chunk]))
    return out


def _ct2_ids(tr: Translator, pieces: list[list[str]]) -> list[int]:
    return [tr.text.tgt_vocab.token_to_id(p) for p in pieces]


def test_the_export_directory_holds_a_ct2_model_its_sentencepiece_models_and_a_note(trained, variant) -> None:
    assert FORMATS == ("ctranslate2", "hf")
    for tr, ex in (trained, variant):
        files = {p.name for p in ex.model_dir.iterdir()}
        assert {"model.bin", "config.json", "source.spm", "target.spm", "attnlab_export.json", "README.md"} <= files
        assert (ex.model_dir / "source.spm").read_bytes() == tr.text.src_tokenizer.model_proto
        assert (ex.model_dir / "target.spm").read_bytes() == tr.text.tgt_tokenizer.model_proto
        config = json.loads((ex.model_dir / "config.json").read_text())
        assert (config["bos_token"], config["eos_token"], config["unk_token"]) == ("<bos>", "<eos>", "<unk>")
        assert config["decoder_start_token"] == "<bos>" and not config["add_source_eos"]
        assert config["layer_norm_epsilon"] == pytest.approx(1e-5)
    shared = json.loads((trained[1].model_dir / "shared_vocabulary.json").read_text())
    assert shared == trained[0].text.src_vocab.tokens  # attnlab's ids are CTranslate2's
    tr, ex = variant
    assert json.loads((ex.model_dir / "source_vocabulary.json").read_text()) == tr.text.src_vocab.tokens
    assert json.loads((ex.model_dir / "target_vocabulary.json").read_text()) == tr.text.tgt_vocab.tokens
    assert ex.note["tokenize"]["joint"] is False and trained[1].note["tokenize"]["joint"] is True
    assert "translate_batch" in (ex.model_dir / "README.md").read_text()


@pytest.mark.parametrize("which", ["trained", "variant", "fairseq"])
def test_ct2_log_probs_are_attnlabs_normalized_without_pad_and_bos(which: str, request) -> None:
    """The weights test: CTranslate2's per-token log-probabilities of attnlab's greedy outputs (teacher-forced
    scoring) equal attnlab's, up to the documented normalization without <pad>/<bos>."""
    tr, ex = request.getfixturevalue(which)
    for src, lens, pieces in _batches(tr, _sources(40)):
        hyps = greedy_decode(tr.model, src, lens, max_len=20)
        targets = [h.tokens for h in hyps]
        tgt_in = torch.zeros(len(targets), 1 + max(map(len, targets)), dtype=torch.long)
        tgt_in[:, 0] = BOS_ID
        for row, toks in enumerate(targets):
            tgt_in[row, 1:1 + len(toks)] = torch.tensor(toks, dtype=torch.long)
        with torch.no_grad():
            logp = torch.log_softmax(tr.model(src, lens, tgt_in).logits.double(), dim=-1)  # (B, Tt, V)
        logp = logp - torch.log1p(-(logp[..., PAD_ID].exp() + logp[..., BOS_ID].exp())).unsqueeze(-1)
        vocab = tr.text.tgt_vocab
        scored = ex.translator.score_batch(pieces, [[vocab.id_to_token(t) for t in toks] for toks in targets])
        for row, (toks, res) in enumerate(zip(targets, scored, strict=True)):
            expected = logp[row, torch.arange(len(toks) + 1), torch.tensor(toks + [EOS_ID])]  # ... then <eos>
            torch.testing.assert_close(torch.tensor(res.log_probs, dtype=torch.float64), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("which", ["trained", "variant", "fairseq"])
def test_ct2_greedy_ids_equal_attnlab_greedy_decode(which: str, request) -> None:
    tr, ex = request.getfixturevalue(which)
    outputs, ended = [], 0
    for src, lens, pieces in _batches(tr, _sources(96)):
        hyps = greedy_decode(tr.model, src, lens, max_len=24)
        ct2 = ex.translate_pieces(pieces, beam_size=1, max_len=24)
        assert [_ct2_ids(tr, p) for p in ct2] == [h.tokens for h in hyps]
        outputs += [tuple(h.tokens) for h in hyps]
        ended += sum(h.ended for h in hyps)
    assert len(set(outputs)) > 10  # a real comparison: not one output repeated
    if which == "trained":  # it learned to stop, at various lengths
        assert ended > len(outputs) // 2 and len({len(o) for o in outputs}) > 2


def test_ct2_beam_search_equals_attnlab_beam_search_without_length_penalty(trained) -> None:
    tr, ex = trained
    differ, total = 0, 0
    for src, lens, pieces in _batches(tr, _sources(64)):
        nbests = beam_search(tr.model, src, lens, beam_size=4, max_len=24, length_penalty=0.0)
        ct2 = ex.translate_pieces(pieces, beam_size=4, max_len=24, length_penalty=0.0)
        differ += sum(_ct2_ids(tr, p) != nb[0].tokens for p, nb in zip(ct2, nbests, strict=True))
        total += len(pieces)
    assert differ == 0, f"{differ} of {total} beam outputs differ"


def test_translate_ctranslate2_returns_attnlabs_text(trained) -> None:
    tr, ex = trained
    sentences = _sources(30) + ["", "  "]
    expected = [t.text for t in tr.translate(sentences, beam_size=1)]
    assert translate_ctranslate2(ex.model_dir, sentences, beam_size=1, compute_type="float32") == expected
    assert ex.translate(sentences, batch_size=7) == expected  # other batches, same outputs
    assert expected[-2:] == ["", ""] and any(expected)


def test_position_tables_cover_ct2s_input_length_or_the_learned_max_len(trained, variant) -> None:
    """Sinusoids: a table of 1,024 rows (CTranslate2's default input limit), since attnlab computes any position;
    learned positions: the model's own 64 rows, past which CTranslate2 fails as attnlab does."""
    one = trained[0].text.src_vocab.tokens[4]
    assert trained[1].translator.translate_batch([[one] * (SINUSOID_POSITIONS - 1)], max_decoding_length=2,
                                                 max_input_length=0)
    tr, ex = variant
    one = tr.text.src_vocab.tokens[4]
    assert ex.translator.translate_batch([[one] * 64], max_decoding_length=2, max_input_length=0)
    with pytest.raises(ValueError, match="max_len=64"):
        tr.model.encode(torch.full((1, 65), 4), torch.tensor([65]))
    with pytest.raises(RuntimeError):
        ex.translator.translate_batch([[one] * 65], max_decoding_length=2, max_input_length=0)


def test_refusals_a_missing_package_and_a_foreign_directory_are_one_line_errors(trained, tmp_path, monkeypatch) -> None:
    ckpt = trained[0].path
    with pytest.raises(ConfigError, match="already exists"):
        export_checkpoint(ckpt, trained[1].model_dir, "ctranslate2")
    with pytest.raises(ConfigError, match="format 'onnx' unknown"):
        export_checkpoint(ckpt, tmp_path / "x", "onnx")
    word = _train(tmp_path / "word", {}, steps=1, data={"src_tokenizer": "word", "tgt_tokenizer": "word"})
    with pytest.raises(ConfigError, match="data.src_tokenizer is 'word'") as err:
        export_checkpoint(word, tmp_path / "w", "ctranslate2")
    assert "\n" not in str(err.value) and not (tmp_path / "w").exists()
    with pytest.raises(CheckpointError, match="not a complete attnlab CTranslate2 export"):
        ExportedTranslator(tmp_path)
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'attnlab\[export\]'"):
        export_checkpoint(ckpt, tmp_path / "y", "ctranslate2")
    assert not list(tmp_path.glob(".y*")) and not (tmp_path / "y").exists()
