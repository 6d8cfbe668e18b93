"""Validation during training and scoring after it (kept here for the API; the code lives with the tasks)."""

from attnlab.tasks.text_to_text import exact_match, make_evaluator, score_pairs, spread_sample

__all__ = ["exact_match", "make_evaluator", "score_pairs", "spread_sample"]
