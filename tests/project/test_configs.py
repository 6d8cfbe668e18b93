"""The ready-made recipes in ``configs/``: each loads through ``attnlab train``'s own loader, validates, points
at the right corpus and languages, and builds its model.

Vocabulary sizes come from the data at training time; here a dummy size stands in, so these tests need
neither the corpora nor a trained tokenizer and run in about a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import attnlab.cli as cli
from attnlab.cli._run_options import run_config_from_args
from attnlab.core.model_config import Seq2SeqConfig, TransformerConfig
from attnlab.core.run_config import RunConfig
from attnlab.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DUMMY_VOCAB = 97

# translation file -> (corpus, source language, target language, model kind)
RECIPES = {
    "multi30k-en-de-transformer.yaml": ("multi30k", "en", "de", "transformer"),
    "multi30k-de-en-transformer.yaml": ("multi30k", "de", "en", "transformer"),
    "multi30k-en-fr-transformer.yaml": ("multi30k", "en", "fr", "transformer"),
    "multi30k-en-de-gru.yaml": ("multi30k", "en", "de", "seq2seq"),
    "multi30k-de-en-gru.yaml": ("multi30k", "de", "en", "seq2seq"),
    "multi30k-en-fr-gru.yaml": ("multi30k", "en", "fr", "seq2seq"),
    "tatoeba-en-zh-transformer.yaml": ("tatoeba-cmn", "en", "zh", "transformer"),
}
# the other tasks' recipes: file -> (task, corpus, model kind, best metric, budget in minutes)
TASK_RECIPES = {
    "debian-summarization.yaml": ("summarization", "debian-descriptions", "transformer", "val_rougeL", 60),
    "rotten-tomatoes-sentiment.yaml": ("classification", "rotten-tomatoes", "rnn_classifier", "val_accuracy", 10),
    "chinese-reviews-sentiment.yaml": ("classification", "chinese-reviews", "transformer_classifier", "val_accuracy",
                                       10),
    "fashion-mnist-vit.yaml": ("image_classification", "fashion-mnist", "vit", "val_accuracy", 15),
    "fashion-mnist-items.yaml": ("image_classification", "fashion-mnist", "vit", "val_accuracy", 12),
    "scenes-captioning.yaml": ("captioning", "fashion-mnist", "captioner", "val_exact_match", 58),
}


def load(name: str, *extra: str) -> RunConfig:
    """The RunConfig ``attnlab train --config configs/NAME --out DIR [extra]`` would train."""
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--config", str(CONFIGS / name), "--out", "unused", *extra])
    return run_config_from_args(args)


@pytest.fixture(autouse=True)
def only_train_command(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", ("train",))


def test_every_recipe_is_listed_and_documented():
    on_disk = {p.name for p in CONFIGS.glob("*.yaml")}
    assert on_disk == set(RECIPES) | set(TASK_RECIPES)
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    for name in on_disk:
        assert f"attnlab train --config configs/{name}" in readme, name


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_and_names_its_corpus(name):
    corpus, src, tgt, kind = RECIPES[name]
    cfg = load(name)
    assert (cfg.data.source, cfg.data.src_lang, cfg.data.tgt_lang) == (corpus, src, tgt)
    assert cfg.model.kind == kind
    # Corpus runs select the best checkpoint by validation BLEU and decode validation sentences for it.
    assert (cfg.train.best_metric, cfg.train.best_mode) == ("val_bleu", "max")
    assert 0 < cfg.decode.eval_sentences <= 1014  # at most the whole of Multi30k's validation set
    assert cfg.train.max_steps > cfg.train.warmup_steps > 0
    # The recipes are sized for 60 minutes on 2 CPU cores (one process of 2 threads, or 2 of one; a recipe that
    # chooses decoding settings on validation after training leaves minutes of the hour for it), and their
    # schedule follows the time used, so a slower machine still ends annealed.
    assert cfg.train.num_threads * cfg.train.processes == 2 and cfg.train.schedule_by == "time"
    assert cfg.train.max_minutes == (58 if cfg.decode.tune_length_penalty else 60)
    # The saved form round-trips (it is written to config.json and every checkpoint).
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_model_builds_and_runs(name):
    cfg = load(name)
    model = build_model(cfg.model, DUMMY_VOCAB, DUMMY_VOCAB)
    src = torch.randint(4, DUMMY_VOCAB, (2, 5))
    tgt_in = torch.randint(4, DUMMY_VOCAB, (2, 4))
    logits = model(src, torch.tensor([5, 3]), tgt_in).logits
    assert logits.shape == (2, 4, DUMMY_VOCAB)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(n for n, r in RECIPES.items() if r[3] == "transformer"))
def test_shared_embeddings_only_with_a_joint_vocabulary(name):
    """share_embeddings needs one vocabulary for both sides: the same subword model, trained jointly."""
    cfg = load(name)
    assert isinstance(cfg.model, TransformerConfig)
    joint = cfg.data.joint_vocab and cfg.data.src_tokenizer == cfg.data.tgt_tokenizer and \
        cfg.data.src_tokenizer in ("bpe", "unigram")
    assert cfg.model.share_embeddings == joint
    if cfg.model.share_embeddings:
        model = build_model(cfg.model, DUMMY_VOCAB, DUMMY_VOCAB)
        assert model.src_embedding is model.tgt_embedding
        assert model.output.weight is model.tgt_embedding.weight
        with pytest.raises(Exception, match="share_embeddings"):
            build_model(cfg.model, DUMMY_VOCAB, DUMMY_VOCAB + 1)


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_multi30k_recipes_differ_only_in_direction(kind: str):
    """One recipe per model, three directions: everything but the language pair is the same."""
    base = load(f"multi30k-en-de-{kind}.yaml").to_dict()
    for name in (f"multi30k-de-en-{kind}.yaml", f"multi30k-en-fr-{kind}.yaml"):
        other = load(name).to_dict()
        for section in ("model", "train", "decode"):
            assert other[section] == base[section], (name, section)
        langs = {"src_lang", "tgt_lang"}
        assert {k: v for k, v in other["data"].items() if k not in langs} == \
            {k: v for k, v in base["data"].items() if k not in langs}


def test_tatoeba_recipe_tokenizes_chinese_by_character():
    cfg = load("tatoeba-en-zh-transformer.yaml")
    assert (cfg.data.src_tokenizer, cfg.data.tgt_tokenizer) == ("bpe", "zh-char")


def test_gru_recipe_is_bahdanau():
    cfg = load("multi30k-en-de-gru.yaml")
    assert isinstance(cfg.model, Seq2SeqConfig)
    assert (cfg.model.rnn, cfg.model.attention) == ("gru", "additive")


@pytest.mark.parametrize("name", sorted(TASK_RECIPES))
def test_task_recipe_loads_builds_and_runs(name):
    task, corpus, kind, metric, minutes = TASK_RECIPES[name]
    cfg = load(name)
    assert (cfg.task_name, cfg.data.source, cfg.model.kind) == (task, corpus, kind)
    assert (cfg.train.best_metric, cfg.train.best_mode) == (metric, "max")
    assert cfg.train.max_minutes == minutes and cfg.train.max_steps > cfg.train.warmup_steps > 0
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    tokens = torch.randint(4, DUMMY_VOCAB, (2, 5))
    if task == "classification":
        logits = build_model(cfg.model, DUMMY_VOCAB)(tokens, torch.tensor([5, 3])).logits
        assert logits.shape == (2, 2)
    elif task == "image_classification":
        logits = build_model(cfg.model)(torch.rand(2, 1, 28, 28)).logits
        assert logits.shape == (2, 10)
    elif task == "captioning":
        model = build_model(cfg.model, tgt_vocab_size=DUMMY_VOCAB)
        patches = (cfg.model.image_size // cfg.model.patch_size) ** 2
        logits = model(torch.rand(2, 1, 64, 64), torch.tensor([patches, patches]), tokens[:, :4]).logits
        assert logits.shape == (2, 4, DUMMY_VOCAB)
    else:
        logits = build_model(cfg.model, DUMMY_VOCAB, DUMMY_VOCAB)(tokens, torch.tensor([5, 3]), tokens[:, :4]).logits
        assert logits.shape == (2, 4, DUMMY_VOCAB)
    assert torch.isfinite(logits).all()


def test_command_line_overrides_a_recipe():
    cfg = load("multi30k-en-de-transformer.yaml", "--max-steps", "7", "--set", "train.num_threads=1")
    assert (cfg.train.max_steps, cfg.train.num_threads) == (7, 1)
