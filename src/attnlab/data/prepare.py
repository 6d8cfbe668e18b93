"""From a :class:`DataConfig` to tokenizers, vocabularies and encoded examples.

Tokenizers and vocabularies are fitted on the training split only. When a run resumes or a checkpoint is
used for translation they are restored from the checkpoint instead (:func:`restore_text_pipeline`), so ids
never change under a trained model.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.core.run_config import DataConfig
from attnlab.data.chinese import ChineseCharTokenizer
from attnlab.data.dataset import Example, encode_pairs
from attnlab.data.synthetic import get_task, make_pairs, split_pairs
from attnlab.data.tokenize import CharTokenizer, Tokenizer, WordTokenizer, tokenizer_from_dict
from attnlab.data.vocab import Vocab

log = logging.getLogger(__name__)

Pairs = list[tuple[str, str]]

__all__ = ["PreparedData", "TextPipeline", "load_pairs", "prepare_data", "restore_text_pipeline"]


@dataclass
class TextPipeline:
    """How text becomes ids on each side (saved in every checkpoint's ``extra.json``)."""

    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    src_vocab: Vocab
    tgt_vocab: Vocab

    @property
    def shared_vocab(self) -> bool:
        return self.src_vocab == self.tgt_vocab

    def to_dict(self) -> dict[str, Any]:
        return {"src_tokenizer": self.src_tokenizer.to_dict(), "tgt_tokenizer": self.tgt_tokenizer.to_dict(),
                "src_vocab": self.src_vocab.to_dict(), "tgt_vocab": self.tgt_vocab.to_dict()}


def restore_text_pipeline(extra: dict[str, Any], where: str = "checkpoint") -> TextPipeline:
    """Rebuild the tokenizers and vocabularies saved by :meth:`TextPipeline.to_dict`."""
    missing = [k for k in ("src_tokenizer", "tgt_tokenizer", "src_vocab", "tgt_vocab") if k not in extra]
    if missing:
        raise CheckpointError(f"{where}: holds no {', '.join(missing)}; it was not written by `attnlab train`")
    return TextPipeline(tokenizer_from_dict(extra["src_tokenizer"]), tokenizer_from_dict(extra["tgt_tokenizer"]),
                        Vocab.from_dict(extra["src_vocab"]), Vocab.from_dict(extra["tgt_vocab"]))


@dataclass
class PreparedData:
    """Everything training needs from the data side.

    Attributes:
        train, valid, test: raw ``(source, target)`` text pairs of each split (test may be empty).
        text: tokenizers and vocabularies.
        train_examples, valid_examples: encoded pairs (targets end in ``<eos>``).
        stats: counts for the log (pairs per split, pairs skipped as too long or empty).
    """

    train: Pairs
    valid: Pairs
    test: Pairs
    text: TextPipeline
    train_examples: list[Example]
    valid_examples: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint keeps to map text to ids again: the tokenizers and vocabularies."""
        return self.text.to_dict()


def load_pairs(cfg: DataConfig) -> tuple[Pairs, Pairs, Pairs]:
    """The raw train/valid/test pairs named by ``cfg``."""
    if cfg.source == "task":
        total = cfg.num_train + cfg.num_valid + cfg.num_test
        pairs = make_pairs(cfg.task, total, cfg.seed)
        train, valid, test = split_pairs(pairs, valid_frac=cfg.num_valid / total, test_frac=cfg.num_test / total,
                                         seed=cfg.seed)
    elif cfg.source == "multi30k":
        from attnlab.data.corpus import read_multi30k

        train, valid, test = (read_multi30k(split, cfg.src_lang, cfg.tgt_lang, cfg.data_dir).pairs
                              for split in ("train", "val", "test_2016_flickr"))
    elif cfg.source == "tatoeba-cmn":
        train, valid, test = _tatoeba(cfg)
    elif cfg.source == "debian-descriptions":
        from attnlab.data.debian import load_debian_split, read_debian_descriptions

        train, valid, test = load_debian_split(read_debian_descriptions(cfg.data_dir), seed=cfg.seed,
                                               split_file=cfg.split_file)
    elif cfg.source == "files":
        from attnlab.data.corpus import read_parallel

        train = read_parallel(cfg.train_src, cfg.train_tgt).pairs
        valid = read_parallel(cfg.valid_src, cfg.valid_tgt).pairs
        test = read_parallel(cfg.test_src, cfg.test_tgt).pairs if cfg.test_src and cfg.test_tgt else []
    else:
        raise ConfigError(f"data.source {cfg.source!r} holds no text pairs (it is a classification corpus)")
    if cfg.max_train is not None:
        train = train[:cfg.max_train]
    return list(train), list(valid), list(test)


def _tatoeba(cfg: DataConfig) -> tuple[Pairs, Pairs, Pairs]:
    from attnlab.data.corpus import read_tatoeba
    from attnlab.data.splits import load_or_make_split, split_path

    langs = {cfg.src_lang, cfg.tgt_lang}
    if langs != {"en", "zh"}:
        raise ConfigError(f"tatoeba-cmn pairs English with Chinese: use --src en --tgt zh (or the reverse), "
                          f"got {cfg.src_lang}->{cfg.tgt_lang}")
    corpus = read_tatoeba("cmn", cfg.data_dir)
    path = split_path(cfg.split_file, f"tatoeba-cmn-seed{cfg.seed}")  # default: the project's, whatever the CWD
    split = load_or_make_split(path, corpus, valid=1000, test=1000, seed=cfg.seed)
    held_out = set(split.valid) | set(split.test)
    train_lines = [n for n in corpus.line_numbers if n not in held_out]
    parts = [corpus.select(train_lines), corpus.select(list(split.valid)), corpus.select(list(split.test))]
    if cfg.src_lang == "zh":
        parts = [p.swapped() for p in parts]
    return parts[0].pairs, parts[1].pairs, parts[2].pairs


def _resolve_kind(kind: str, cfg: DataConfig) -> str:
    if kind != "auto":
        return kind
    return get_task(cfg.task).tokenizer if cfg.source == "task" else "bpe"


def _simple_tokenizer(kind: str, cfg: DataConfig) -> Tokenizer:
    if kind == "char":
        return CharTokenizer()
    if kind == "word":
        return WordTokenizer(lower=cfg.lowercase)
    return ChineseCharTokenizer()


def build_tokenizers(cfg: DataConfig, train: Pairs) -> tuple[Tokenizer, Tokenizer]:
    """Fit (subword) or construct (char/word/zh-char) the two tokenizers on the training pairs."""
    src_kind, tgt_kind = _resolve_kind(cfg.src_tokenizer, cfg), _resolve_kind(cfg.tgt_tokenizer, cfg)
    subword = ("bpe", "unigram")
    if src_kind in subword or tgt_kind in subword:
        from attnlab.data.subword import train_sentencepiece

    if src_kind in subword and src_kind == tgt_kind and cfg.joint_vocab:
        log.info("training a joint %s model (%d pieces) on %d sentence pairs", src_kind, cfg.vocab_size, len(train))
        joint = train_sentencepiece([s for s, _ in train] + [t for _, t in train], cfg.vocab_size,
                                    model_type=src_kind)
        return joint, joint
    tokenizers = []
    for kind, side in ((src_kind, 0), (tgt_kind, 1)):
        if kind in subword:
            log.info("training a %s model (%d pieces) on the %s side", kind, cfg.vocab_size, ("source", "target")[side])
            tokenizers.append(train_sentencepiece([p[side] for p in train], cfg.vocab_size, model_type=kind))
        else:
            tokenizers.append(_simple_tokenizer(kind, cfg))
    return tokenizers[0], tokenizers[1]


def _all_pieces(tokenizer: Tokenizer) -> list[list[str]]:
    """A SentencePiece model's pieces as one extra "sentence" for the vocabulary count; nothing for others."""
    from attnlab.data.subword import SentencePieceTokenizer

    return [tokenizer.vocab_pieces()] if isinstance(tokenizer, SentencePieceTokenizer) else []


def build_text_pipeline(cfg: DataConfig, train: Pairs) -> TextPipeline:
    src_tok, tgt_tok = build_tokenizers(cfg, train)
    # The vocabularies count tokens a sentence at a time: a list of every tokenized sentence (Multi30k: a million
    # short strings) left Python's small-object arenas holding ~54 MiB for the rest of the process.
    src_sents: Iterable[list[str]] = (src_tok.tokenize(s) for s, _ in train)
    tgt_sents: Iterable[list[str]] = (tgt_tok.tokenize(t) for _, t in train)
    if cfg.bpe_dropout:
        # A BPE-dropout segmentation may use any piece of the model, also those the deterministic one never outputs
        # on the training text (intermediate merges): each is counted once more so none becomes <unk>.
        src_sents = itertools.chain(src_sents, _all_pieces(src_tok))
        tgt_sents = itertools.chain(tgt_sents, _all_pieces(tgt_tok))
    if cfg.joint_vocab and src_tok.to_dict() == tgt_tok.to_dict():
        vocab = Vocab.build(itertools.chain(src_sents, tgt_sents), min_freq=cfg.min_freq)
        return TextPipeline(src_tok, tgt_tok, vocab, vocab)
    return TextPipeline(src_tok, tgt_tok, Vocab.build(src_sents, min_freq=cfg.min_freq),
                        Vocab.build(tgt_sents, min_freq=cfg.min_freq))


def prepare_data(cfg: DataConfig, text: TextPipeline | None = None, *, truncate: bool = False) -> PreparedData:
    """Read or generate the pairs, fit the text pipeline on training pairs (unless given) and encode.

    Pairs with a side longer than ``cfg.max_len`` tokens are skipped, or with ``truncate`` cut to it (a long
    document to summarize keeps its lead); both are counted and logged."""
    train, valid, test = load_pairs(cfg)
    if not train:
        raise ConfigError("the training split is empty; check the data options")
    if text is None:
        text = build_text_pipeline(cfg, train)
    args = (text.src_tokenizer, text.tgt_tokenizer, text.src_vocab, text.tgt_vocab)
    train_examples, train_stats = encode_pairs(train, *args, max_len=cfg.max_len, truncate=truncate)
    valid_examples, valid_stats = encode_pairs(valid, *args, max_len=cfg.max_len, truncate=truncate)
    stats = {"train_pairs": len(train), "valid_pairs": len(valid), "test_pairs": len(test),
             "train": train_stats, "valid": valid_stats,
             "src_vocab": len(text.src_vocab), "tgt_vocab": len(text.tgt_vocab)}
    log.info("data: %d train / %d valid / %d test pairs; vocab %d -> %d%s", len(train), len(valid), len(test),
             len(text.src_vocab), len(text.tgt_vocab), " (shared)" if text.shared_vocab else "")
    return PreparedData(train, valid, test, text, train_examples, valid_examples, stats)
