"""One source for each list of choices: the core registry, its implementations, the config types and ``--help``."""

from __future__ import annotations

import typing

import pytest

from attnlab.cli import build_parser
from attnlab.core.errors import ConfigError
from attnlab.core.model_config import MODEL_CONFIGS
from attnlab.core.registry import CORPORA, SOURCES, SYNTHETIC, TASKS, TOKENIZERS
from attnlab.core.run_config import DataConfig, RunConfig, SourceKind, SyntheticName, TaskKind, TokenizerKind
from attnlab.data import synthetic
from attnlab.data.download import CORPORA as DOWNLOADS
from attnlab.models.build import build_model
from attnlab.tasks import TASK_TYPES, get_task


def _help(*argv: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    return sub.choices[argv[0]].format_help()


def test_every_task_has_one_implementation_and_fitting_model_kinds() -> None:
    assert set(TASK_TYPES) == set(TASKS)
    for name, info in TASKS.items():
        assert get_task(name).name == name
        assert info.model_kinds and set(info.model_kinds) <= set(MODEL_CONFIGS)


def test_synthetic_datasets_agree_with_their_generators() -> None:
    text = {name: task for name, task in SYNTHETIC.items() if task != "image_classification"}
    assert set(text) == set(synthetic.TASKS)
    assert [name for name in SYNTHETIC if name not in text] == ["squares"]  # attnlab.data.images.make_squares
    for name, task in text.items():
        assert task in TASKS
        # a classification generator yields labels from its own label set; text-to-text ones yield texts
        labels = getattr(synthetic.TASKS[name], "labels", None)
        assert (labels is not None) == (task == "classification")


def test_every_corpus_can_be_fetched_and_serves_known_tasks() -> None:
    assert set(CORPORA) - {"files"} == set(DOWNLOADS)
    for info in CORPORA.values():
        assert info.tasks and set(info.tasks) <= set(TASKS)
    assert ("task", *CORPORA) == SOURCES


def test_config_literals_are_the_registry_lists() -> None:
    assert typing.get_args(SourceKind) == SOURCES
    assert typing.get_args(SyntheticName) == tuple(SYNTHETIC)
    assert typing.get_args(TaskKind) == tuple(TASKS)
    assert typing.get_args(TokenizerKind) == TOKENIZERS
    hints = typing.get_type_hints(DataConfig)
    assert hints["source"] == SourceKind and hints["src_tokenizer"] == TokenizerKind


def test_every_tokenizer_kind_is_built_by_the_data_layer() -> None:
    from attnlab.data.prepare import _simple_tokenizer

    for kind in TOKENIZERS:
        if kind in ("auto", "bpe", "unigram"):  # auto resolves to another kind; subword ones are trained
            continue
        assert _simple_tokenizer(kind, DataConfig()).kind == kind


def test_every_model_kind_builds() -> None:
    for kind, cls in MODEL_CONFIGS.items():
        model = build_model(cls(), 10, 10)
        assert sum(p.numel() for p in model.parameters()) > 0, kind


def test_train_help_lists_every_task_source_and_model_kind() -> None:
    text = _help("train")
    for name in (*TASKS, *SYNTHETIC, *CORPORA):
        assert name in text, name
    for info in TASKS.values():
        for kind in info.model_kinds:
            assert kind in text


@pytest.mark.parametrize(("config", "needle"), [
    ({"data": {"source": "rotten-tomatoes"}, "model": {"kind": "transformer"}}, "does not fit the classification"),
    ({"data": {"source": "multi30k"}, "model": {"kind": "transformer_classifier"}}, "does not fit the translation"),
    ({"task": "summarization", "data": {"source": "multi30k"}}, "does not fit the corpus 'multi30k'"),
    ({"task": "dance"}, "expected one of translation, classification, summarization"),
    ({"task": [1, 2], "data": {"source": "rotten-tomatoes"}}, "expected one of translation"),
    ({"model": 5}, "config.model: expected a mapping"),
    ({"train": [1, 2]}, "config.train: expected a mapping"),
    ({"data": {"max_len": 300}, "model": {"kind": "transformer", "positional": "learned", "max_len": 256}},
     "exceed model.max_len=256"),
])
def test_config_refuses_what_does_not_fit(config: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_dict(config)


def test_task_defaults_follow_the_source() -> None:
    assert RunConfig.from_dict({"data": {"source": "debian-descriptions"}}).task_name == "summarization"
    assert RunConfig.from_dict({"data": {"source": "debian-descriptions"}}).model.kind == "transformer"
    assert RunConfig.from_dict({"data": {"source": "task", "task": "keywords"}}).model.kind == "rnn_classifier"
    files = {"source": "files", "train_src": "a", "train_tgt": "b", "valid_src": "c", "valid_tgt": "d"}
    assert RunConfig.from_dict({"task": "summarization", "data": files}).task_name == "summarization"
    assert RunConfig.from_dict({"data": files}).task_name == "translation"
