"""The validation sample decoded during training: spread over the whole validation set, not its head."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from attnlab.core.run_config import RunConfig
from attnlab.tasks import text_to_text as validate
from attnlab.tasks.text_to_text import spread_sample


@given(n=st.integers(0, 300), count=st.integers(0, 320))
def test_spread_sample_is_an_ordered_distinct_evenly_spaced_subset(n: int, count: int) -> None:
    items = list(range(n))
    sample = spread_sample(items, count)
    assert len(sample) == min(n, count)
    assert sample == sorted(set(sample))
    if 2 <= count < n:
        assert sample[0] == 0 and sample[-1] == n - 1
        gaps = [b - a for a, b in zip(sample, sample[1:], strict=False)]
        assert max(gaps) - min(gaps) <= 1


def test_spread_sample_covers_a_length_sorted_corpus() -> None:
    # Tatoeba's file is sorted by length; its first 200 validation pairs would all be short.
    pairs = [("w " * n, "x") for n in range(1, 1001)]
    sample = spread_sample(pairs, 200)
    lengths = [len(s.split()) for s, _ in sample]
    assert min(lengths) == 1 and max(lengths) == 1000
    assert abs(sum(lengths) / len(lengths) - 500.5) < 5


def test_evaluator_decodes_the_spread_sample(monkeypatch) -> None:
    seen: list[list[tuple[str, str]]] = []

    def fake_score_pairs(model, text, pairs, cfg, *, beam_size=None, bleu=None):
        seen.append(list(pairs))
        return {"exact_match": 0.5, "bleu": 10.0, "chrf": 20.0}, []

    monkeypatch.setattr(validate, "score_pairs", fake_score_pairs)
    monkeypatch.setattr(validate, "BucketedBatches", lambda *args, **kwargs: None)
    monkeypatch.setattr(validate, "loss_evaluator", lambda batches: lambda model: {"val_loss": 1.0})
    valid = [(f"s{i}", f"t{i}") for i in range(10)]
    cfg = RunConfig.from_dict({"decode": {"eval_sentences": 4}})
    prepared = SimpleNamespace(valid=valid, valid_examples=[], text=None)
    metrics = validate.make_evaluator(prepared, cfg)(model=None)
    assert seen == [[valid[0], valid[3], valid[6], valid[9]]]
    assert metrics == {"val_loss": 1.0, "val_exact_match": 0.5, "val_bleu": 10.0, "val_chrf": 20.0}


def test_decode_early_stopping_reaches_beam_search(monkeypatch) -> None:
    seen: list[dict] = []

    def fake_translate_sentences(*args, **kwargs):
        seen.append(kwargs)
        return []

    monkeypatch.setattr(validate, "translate_sentences", fake_translate_sentences)
    monkeypatch.setattr(validate, "text_metrics", lambda hyps, refs, cfg, corpus_metrics=None: {})
    for flag in (False, True):
        cfg = RunConfig.from_dict({"decode": {"beam_size": 4, "early_stopping": flag}})
        validate.score_pairs(None, SimpleNamespace(src_tokenizer=None, src_vocab=None, tgt_tokenizer=None,
                                                   tgt_vocab=None), [("a", "b")], cfg)
        assert seen[-1]["early_stopping"] is flag and seen[-1]["beam_size"] == 4
